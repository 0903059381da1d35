"""A fleet's update and rollback, all or nothing.

One run moves every app server of the site from the release it serves to one target release,
in phases that each finish on every server before the next begins (pyinfra runs each step on
all its servers before the next step):

1. the fleet's lock, taken on one server (the first app server);
2. prepare: fetch and build the release beside the running one, pre-flight checks (update);
3. back up and migrate, once, for the fleet's database;
4. start the release in the idle slot of every app server, health-checked there, not live;
5. switch the canary, check it through the load balancer's path to it and HAProxy's view of
   it, then switch the others in batches;
6. stop the old slots, once every server switched.

A failure anywhere stops the whole run (a failed server is never dropped while the others go
on): every server this run switched goes back to the slot that still runs its old release,
the slots it started are stopped, the lock is released, and the run exits non-zero naming the
servers and the step. A run that was killed leaves each server in a state the next run
finishes from: every step is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gevent.lock
from pyinfra import host, logger
from pyinfra.api import BaseStateCallback
from pyinfra.context import ctx_host

from . import app, gunicorn, haproxy, release, roles, system
from .common import Stop, sh
from .settings import Settings, from_host

# One plan per site and run, made by whichever server's deploy code gets there first (the
# servers' deploy code runs in parallel greenlets).
_plans: dict[str, "Plan"] = {}
_planning = gevent.lock.RLock()


@dataclass
class Server:
    """An app server as the run found it."""

    name: str
    s: Settings
    revision: str  # the commit `current` runs; empty when nothing is deployed
    serving: dict  # gunicorn.Serving
    previous: str  # where `previous` points

    @property
    def live(self) -> str:
        return self.serving.get("live") or "a"

    @property
    def current(self) -> str:
        return self.serving.get("current", "")


@dataclass
class Plan:
    action: str  # update, rollback
    target: str  # the commit the fleet moves to
    servers: list[Server]
    lock_host: object
    lb: object | None
    canary: str
    batches: list[list[str]]
    kept_migrations: str = ""
    refusal: str | None = None
    failed: dict = field(default_factory=dict)  # server -> the step that failed there
    compensated: bool = False

    def server(self, name: str) -> Server | None:
        return next((x for x in self.servers if x.name == name), None)

    @property
    def moving(self) -> list[Server]:
        """The app servers not yet serving the target (all of them, usually)."""
        return [x for x in self.servers if not serves(x, self.target)]


def serves(server: Server, commit: str) -> bool:
    """Whether the server's live slot runs `commit` and `current` is it."""
    rel = app.Layout(server.s).release(commit)
    now = server.serving
    return (now.get(server.live) == rel and now.get("current") == rel
            and now.get("running", {}).get(server.live) == "active")


def server_settings(h, fleet) -> Settings:
    return fleet.settings_for(h, from_host(h))


def batches_of(names: list[str], canary: str, size: int) -> list[list[str]]:
    """The app servers after the canary, `size` at a time (0: all at once)."""
    rest = [n for n in names if n != canary]
    size = size or len(rest) or 1
    return [rest[i:i + size] for i in range(0, len(rest), size)]


def describe(plan: Plan) -> None:
    """The preview: each app server's release now and after, then the phases and which servers
    each one touches."""
    verb = "update" if plan.action == "update" else "rollback"
    lines = [f"fleet {verb} to {plan.target[:12]}:", f"  {'server':<16} {'now':<14} after"]
    for x in plan.servers:
        lines.append(f"  {x.name:<16} {x.revision[:12] or '(none)':<14} "
                     f"{plan.target[:12]}{'' if x in plan.moving else ' (already)'}")
    if not plan.moving:
        lines.append("  every app server already serves it: nothing to do")
        logger.info("\n".join(lines))
        return
    if plan.action == "rollback":
        lines.append(f"  migrations are not undone; still applied: {plan.kept_migrations}"
                     + ("; the database backup taken before the update will be restored, once"
                        if plan.servers[0].s.restore_backup else ""))
    everyone = ", ".join(x.name for x in plan.servers)
    steps = [f"lock the fleet on {plan.lock_host.name}"]
    if plan.action == "update":
        steps += [f"fetch and build {plan.target[:12]} beside the running release: {everyone}",
                  f"back up and migrate the database, once: {plan.servers[0].name}"]
    steps += [f"start it in the idle slot, health-checked, not live: {everyone}",
              f"switch the canary: {plan.canary}"
              + (f", then check it through the load balancer {plan.lb.name}" if plan.lb else "")]
    steps += [f"switch batch {i + 1}: {', '.join(b)}" for i, b in enumerate(plan.batches) if b]
    steps += [f"stop the old slots: {everyone}", f"release the lock on {plan.lock_host.name}"]
    lines.append("  phases (each done on every server named before the next begins):")
    lines += [f"    {i + 1}. {step}" for i, step in enumerate(steps)]
    lines.append("  on any failure: the servers that switched go back to their old slot, "
                 "the run exits non-zero")
    logger.info("\n".join(lines))


def make_plan(state, s: Settings, fleet, action: str) -> Plan:
    with _planning:
        if s.app_name in _plans:
            return _plans[s.app_name]
        servers = []
        for h in fleet.apps:
            hs = server_settings(h, fleet)
            lay = app.Layout(hs)
            servers.append(Server(
                name=h.name, s=hs,
                revision=h.get_fact(release.CurrentRevision, base=hs.base_dir),
                serving=h.get_fact(gunicorn.Serving, base=lay.base, app=hs.app_name,
                                   upstream=gunicorn.upstream_path(hs)),
                previous=h.get_fact(release.Releases, base=lay.base).get("previous", "")))
        missing = [x.name for x in servers if not x.revision]
        if missing:
            raise Stop(f"{', '.join(missing)}: nothing is deployed yet; run deploy.py first "
                       "(it gives a new app server the fleet's release)")
        first = fleet.apps[0]
        names = [h.name for h in fleet.apps]
        if s.canary and s.canary not in names:
            raise Stop(f"Settings error, nothing was changed. canary: {s.canary!r} is not an app "
                       f"server of this run; allowed: {', '.join(names)}")
        canary = s.canary or names[0]
        if action == "update":
            for h, x in zip(fleet.apps, servers):  # each server's mirror fetched
                with ctx_host.use(h):
                    resolved = app.planned_commit(x.s)
                    if h is first:
                        target = resolved
                        if target:
                            app.planned_project(x.s)
            if not target:
                raise Stop(f"{first.name}: {s.revision} cannot be resolved before its "
                           "repository is fetched; run deploy.py first")
            kept = ""
        else:
            target, kept = rollback_target(s, fleet, servers)
        plan = Plan(action=action, target=target, servers=servers, lock_host=first, lb=fleet.lb,
                    canary=canary, batches=batches_of(names, canary, s.batch_size),
                    kept_migrations=kept)
        # Every app server builds and serves the same commit: the one the first app server
        # resolved.
        for h in fleet.apps:
            app.pin_target(h.name, target)
        holder = first.get_fact(release.DeployLock, path=release.lock_path(servers[0].s))
        with ctx_host.use(first):
            refusal = release.lock_refusal(servers[0].s, holder)
        if refusal:
            plan.refusal = f"The fleet's lock on {refusal}"
        _plans[s.app_name] = plan
        if action == "update" and plan.moving:
            with ctx_host.use(first):  # the commits, lock file and migrations it brings
                release.describe(servers[0].s, plan.moving[0].revision, target)
        describe(plan)
        if plan.moving and not plan.refusal:
            install_guard(state, plan)
        return plan


def rollback_target(s: Settings, fleet, servers: list[Server]) -> tuple[str, str]:
    """The release to go back to: `rollback_to`, or the newest complete release the fleet
    served before (the first app server's `previous` first) that every app server still has;
    and the migrations that stay applied."""
    lists = {}
    for h, x in zip(fleet.apps, servers):
        info = h.get_fact(release.Releases, base=app.Layout(x.s).base)
        lists[x.name] = [r["name"] for r in info.get("releases", []) if r["complete"]]
    first = servers[0]
    current = first.current.rsplit("/", 1)[-1]
    order = [first.previous.rsplit("/", 1)[-1]] if first.previous else []
    order += [n for n in lists[first.name] if n not in order]
    if s.rollback_to:
        order = [n for n in lists[first.name] if n.startswith(s.rollback_to[:12])]
        lacking = [x.name for x in servers if not any(n.startswith(s.rollback_to[:12])
                                                      for n in lists[x.name])]
        if not order or lacking:
            raise Stop(f"rollback_to: {s.rollback_to} is not a complete release on "
                       f"{', '.join(lacking or [first.name])}; nothing was changed")
    for name in order:
        if name and name != current and all(name in lists[x.name] for x in servers):
            with ctx_host.use(fleet.apps[0]):
                subdir = app.effective(first.s, first.revision).project_subdir
            target = fleet.apps[0].get_fact(release.RollbackTarget, base=app.Layout(first.s).base,
                                            subdir=subdir, commit=name)
            if target:
                kept = ", ".join(m.rsplit("/", 1)[-1] for m in target["kept_migrations"]) or "none"
                return target["commit"], kept
    wanted = s.rollback_to or "a release before the current one"
    raise Stop(f"no complete release that every app server has to roll back to ({wanted}); "
               "nothing was changed")


# -- when a server fails -------------------------------------------------------------------


class Guard:
    """Installed as pyinfra's `should_raise_failed_hosts`: called once a step has finished on
    every server and at least one failed (FAIL_PERCENT 0: any failed server stops the run).
    Once (a plan with `compensated`), and only when this run holds the fleet's lock, it undoes
    what this run did (`undo`), then lets the run stop."""

    action = ""

    def __init__(self, plan):
        self.plan = plan

    def __call__(self, state) -> bool:
        plan = self.plan
        if plan.compensated:
            return True
        plan.compensated = True
        failed = sorted(h.name for h in state.failed_hosts)
        lock, s = self.lock_holder(state)
        ok, out = lock.run_shell_command(f"cat {sh(release.lock_path(s))} 2>/dev/null || true",
                                         _sudo=True)
        if f'"pid": {release.RUN["pid"]},' not in "\n".join(out.stdout_lines if ok else []):
            logger.error(f"fleet {self.action or plan.action} stopped on {', '.join(failed)} before "
                         "it held the fleet's lock: nothing was changed by it")
            return True
        self.undo(state, failed)
        return True

    def lock_holder(self, state):
        """The server that holds the fleet's lock, and its settings."""
        return self.plan.lock_host, self.plan.servers[0].s

    def undo(self, state, failed: list[str]) -> None:
        plan = self.plan
        lock = plan.lock_host
        report = []
        for x in plan.moving:
            h = state.inventory.get_host(x.name)
            command = gunicorn.switch_back_command(
                x.s, app.Layout(x.s).release(plan.target), x.live, x.current, x.previous)
            done, output = h.run_shell_command(command, _sudo=True)
            said = "; ".join(output.stdout_lines + output.stderr_lines) if output else ""
            report.append(f"{x.name}: {'ok' if done else 'FAILED'} ({said})")
        s = plan.servers[0].s
        what = f"{plan.action} {plan.servers[0].revision[:12]} -> {plan.target[:12]}"
        for x in plan.servers:
            h = state.inventory.get_host(x.name)
            h.run_shell_command(release.audit_entry(x.s, what, "failed, switched back") + "; "
                                + release.unlock_command(x.s), _sudo=True)
        steps = "; ".join(f"{name}: {step}" for name, step in sorted(plan.failed.items()))
        logger.error(
            f"fleet {plan.action} to {plan.target[:12]} failed on {', '.join(failed)}"
            + (f" ({steps})" if steps else "") + ". Every app server is back on the release it "
            f"served (switched back where it had switched): {'; '.join(report)}. "
            f"The lock on {lock.name} is released ({s.app_name}).")


class FailedStep(BaseStateCallback):
    """Makes any failed server stop the run, and remembers which step failed on which server,
    for the run's last message."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def operation_start(self, state, op_hash):
        # pyinfra resets the config a deploy file changed once the file is loaded, so the fail
        # percent is set here, as the steps run (`-y` leaves it unset: failed servers dropped).
        state.config.FAIL_PERCENT = 0

    def operation_host_error(self, state, host_, op_hash, retry_count=0, max_retries=0):
        names = state.get_op_meta(op_hash).names
        self.plan.failed[host_.name] = ", ".join(sorted(names))


def install_guard(state, plan: Plan) -> None:
    state.should_raise_failed_hosts = Guard(plan)
    state.add_callback_handler(FailedStep(plan))


# -- the run's steps -------------------------------------------------------------------------


def run(state, s: Settings, fleet, action: str) -> None:
    """Add this server's steps of the fleet's update or rollback. Every server of the fleet
    calls it, from the same line of update.py or rollback.py: the phase marks (`roles.phase`,
    on every server) are what orders the steps of different servers, since pyinfra orders
    each server's own steps only."""
    plan = make_plan(state, s, fleet, action)
    me = plan.server(host.name)
    if not plan.moving:
        if me is not None:  # what a stopped run may have left running
            gunicorn.retired(name="The old slot stopped", s=me.s)
        return
    if plan.refusal:
        raise Stop(plan.refusal)
    target = plan.target
    if me is not None:
        s = me.s
        if host.name == plan.lock_host.name:
            release.locked(name="Take the fleet's lock", s=s,
                           action=f"fleet {action} to {target[:12]}", break_lock=s.break_lock)
    roles.phase(name="The fleet is locked", title="locked")
    if me is not None:
        if action == "update":
            system.tools(name="The deploy's scripts: health gate, release build, environment")
            app.source(name=f"Fetch {s.revision} (U2)", s=s)
            app.project_checked(name="The Django project and the Python it accepts", s=s)
            app.release(name="Build the release beside the running one: .venv, Poetry, static "
                             "files, pre-flight checks (U2, U3)", s=s)
            gunicorn.config(name="gunicorn.conf.py of the release", s=s, commit=target)
            gunicorn.units(name="Gunicorn systemd units: what the release writes into", s=s)
            if fleet.runs_once(host, s):
                release.backup(name="Back up the fleet's database", s=s)
                app.migrate(name="Migrate the fleet's database, once (U4)", s=s)
        else:
            if s.restore_backup and fleet.runs_once(host, s):
                release.restored(name=f"Restore the database backup taken before "
                                      f"{me.revision[:12]}", s=s, undoing=me.revision)
            gunicorn.config(name="gunicorn.conf.py of the release", s=s, commit=target)
        gunicorn.started(name=f"Start {target[:12]} in the idle slot, health-checked, not live",
                         s=s, commit=target)
        if host.name == plan.canary:
            gunicorn.switched(name=f"Switch the canary {host.name}", s=s, commit=target)
    roles.phase(name="The canary serves the new release", title=f"{plan.canary} switched")
    if plan.lb is not None and host.name == plan.lb.name:
        haproxy.sees(name=f"The load balancer sees the canary {plan.canary} healthy on "
                          f"{target[:12]}", s=s, server=plan.canary,
                     address=roles.address_of(state.inventory.get_host(plan.canary)),
                     revision=target, timeout=plan.server(plan.canary).s.health_timeout)
    roles.phase(name="The canary passed its checks", title=f"{plan.canary} checked")
    for i, batch in host.loop(enumerate(plan.batches)):
        if me is not None and host.name in batch:
            gunicorn.switched(name=f"Switch batch {i + 1}: {', '.join(batch)}", s=me.s,
                              commit=target)
        roles.phase(name=f"Batch {i + 1} switched", title=f"batch {i + 1} switched")
    if me is not None:
        gunicorn.retired(name="Stop the old slot, drained", s=me.s)
        if action == "update":
            release.pruned(name=f"Keep the last {me.s.keep_releases} releases", s=me.s)
        release.unlocked(name="Release the fleet's lock, write the audit log", s=me.s,
                         action=f"fleet {action}", from_rev=me.revision, to_rev=target)


# -- deploy.py on a fleet ----------------------------------------------------------------------

_kept: dict[str, str] = {}


def keep_fleet_release(fleet, s: Settings) -> None:
    """deploy.py on several app servers keeps the release the fleet serves (moving the fleet
    to another revision is update.py's job): a server added to the fleet gets that release,
    not the branch's head. A first deploy (nothing deployed anywhere) takes `revision`."""
    if len(fleet.apps) < 2:
        return
    with _planning:
        if s.app_name in _kept:
            return
        revisions = {}
        for h in fleet.apps:
            hs = server_settings(h, fleet)
            revisions[h.name] = h.get_fact(release.CurrentRevision, base=hs.base_dir)
        found = {r for r in revisions.values() if r}
        _kept[s.app_name] = ""
        if len(found) > 1:
            listing = ", ".join(f"{n} {r[:12] or '(none)'}" for n, r in revisions.items())
            raise Stop(f"the app servers serve different releases ({listing}); run update.py or "
                       "rollback.py to put them on one, then deploy.py; nothing was changed")
        if found:
            commit = found.pop()
            _kept[s.app_name] = commit
            for h in fleet.apps:
                app.pin_target(h.name, commit)
            new = [n for n, r in revisions.items() if not r]
            logger.info(f"fleet: every app server keeps {commit[:12]}, the release the fleet "
                        "serves" + (f"; {', '.join(new)} get it too" if new else "")
                        + " (update.py moves the fleet to another revision)")
