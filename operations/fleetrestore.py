"""A fleet's restore: one backup (taken by the first app server: the db server's database and
the shared uploads) put back for the whole fleet, in phases that each finish on every server
before the next begins:

1. the fleet's lock, on the first app server;
2. the backup fetched and verified on the first app server (a damaged one stops here; nothing
   else has changed);
3. every app server shows the maintenance page (nginx: 503 with Retry-After; the load balancer
   serves the same page once it finds no server up) and its Gunicorn stops;
4. on the first app server: the fleet's database kept aside as a dump, replaced by the backup in
   one transaction, migrated to the release the fleet serves;
5. every app server starts again, health-gated, and the page goes; the load balancer sees each
   one healthy;
6. the uploads made equal to the backup's, the lock released, the audit log written.

A failure at any step stops the whole run: the previous database goes back if it was replaced,
every app server starts again without the page, the lock is released, and the run exits
non-zero naming the servers and the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyinfra import host, logger
from pyinfra.api import operation
from pyinfra.context import ctx_host

from . import backup, fleetrun, gunicorn, haproxy, maintenance, release, roles, system
from .app import MIGRATIONS, Layout, manage_command
from .common import TOOLS, Stop, sh
from .fleetrun import FailedStep, _planning, server_settings
from .settings import Settings, from_host

BEFORE = "backups/db-before-restore.dump"  # in `shared` (files/djdeploy_backup.py: BEFORE)
REPLACED = "backups/restore-replaced"      # in `shared`: the database holds the backup


@dataclass
class App:
    name: str
    s: Settings
    revision: str
    live: str


@dataclass
class RestorePlan:
    apps: list[App]
    lb: object | None
    backup: str
    where: str
    refusal: str | None = None
    failed: dict = field(default_factory=dict)  # server -> the step that failed there
    compensated: bool = False

    @property
    def first(self) -> App:
        return self.apps[0]

    @property
    def commit(self) -> str:
        return self.first.revision

    def app(self, name: str) -> App | None:
        return next((a for a in self.apps if a.name == name), None)


_plans: dict[str, RestorePlan] = {}


def units(s: Settings) -> str:
    return " ".join(f"{s.app_name}@{slot}.{kind}" for slot in gunicorn.SLOTS
                    for kind in ("service", "socket"))


def down_command(s: Settings) -> str:
    """The maintenance page on (nginx answers every request itself), then Gunicorn stopped
    once the requests let through just before have reached it."""
    return (f"touch {sh(maintenance.flag(s))} && sleep 1 && systemctl stop {units(s)} && "
            "echo 'maintenance page on, the app stopped'")


def start_command(s: Settings, live: str) -> str:
    return f"systemctl start {s.app_name}@{live}.socket {s.app_name}@{live}.service"


def up_command(s: Settings, commit: str, live: str) -> str:
    """The live slot started and healthy on its socket, the page off, then healthy through
    nginx. The page goes even when the app fails its check (the step fails, and says so)."""
    return (f"{start_command(s, live)} && {gunicorn.health_command(s, commit, live)}; ok=$?; "
            f"rm -f {sh(maintenance.flag(s))}; [ $ok = 0 ] && {gunicorn.health_command(s, commit)}")


def script(s: Settings, *args: str) -> str:
    return sh(s.python_bin, TOOLS["backup"], "--config", backup.Paths(s).config, *args)


def put_back_command(s: Settings) -> str:
    """The database as it was before the restore, when the restore had replaced it."""
    marker = f"{Layout(s).shared}/{REPLACED}"
    return (f"if [ -f {sh(marker)} ]; then {script(s, 'put-back')}; "
            "else echo 'the database was not replaced'; fi")


@operation(is_idempotent=False)
def down(s: Settings):
    """
    The maintenance page on and Gunicorn stopped (a restore is about to replace the data).

    + s: settings
    """
    yield down_command(s)


@operation(is_idempotent=False)
def replaced(s: Settings):
    """
    The fleet's database (on the db server) kept aside as a dump and replaced by the fetched
    backup in one transaction, then migrated to the release the fleet serves; a failure loads
    the kept dump back.

    + s: settings
    """
    lay = Layout(s)
    migrate = manage_command(s, lay.project(lay.current), "migrate --noinput")
    yield script(s, "replace", "--migrate", migrate)
    # The database no longer has the migrations the marker names: the next update checks again.
    yield sh("rm", "-f", f"{lay.shared}/{MIGRATIONS}")


@operation(is_idempotent=False)
def up(s: Settings, commit: str, live: str):
    """
    The app started again in its live slot, health-gated; the maintenance page off.

    + s: settings
    + commit, live: the release it serves and its slot
    """
    yield up_command(s, commit, live)


@operation(is_idempotent=False)
def finished(s: Settings):
    """
    The shared uploads made equal to the backup's (the files it replaces kept aside), the
    staging folder removed.

    + s: settings
    """
    yield script(s, "finish")


def make_plan(state, s: Settings, fleet) -> RestorePlan:
    with _planning:
        key = f"restore {s.app_name}"
        if key in _plans:
            return _plans[key]
        apps = []
        for h in fleet.apps:
            hs = server_settings(h, fleet)
            serving = h.get_fact(gunicorn.Serving, base=hs.base_dir, app=hs.app_name,
                                 upstream=gunicorn.upstream_path(hs))
            apps.append(App(h.name, hs, h.get_fact(release.CurrentRevision, base=hs.base_dir),
                            serving.get("live") or "a"))
        missing = [a.name for a in apps if not a.revision]
        if missing:
            raise Stop(f"{', '.join(missing)}: nothing is deployed yet; run deploy.py first")
        if len({a.revision for a in apps}) > 1:
            listing = ", ".join(f"{a.name} {a.revision[:12]}" for a in apps)
            raise Stop(f"the app servers serve different releases ({listing}); put them on one "
                       "with update.py or rollback.py, then restore; nothing was changed")
        first, fs = fleet.apps[0], apps[0].s
        name, where = backup.chosen(first, fs, s.restore_name, s.restore_from)
        plan = RestorePlan(apps=apps, lb=fleet.lb, backup=name, where=where)
        holder = first.get_fact(release.DeployLock, path=release.lock_path(fs))
        with ctx_host.use(first):
            refusal = release.lock_refusal(fs, holder)
        if refusal:
            plan.refusal = f"The fleet's lock on {refusal}"
        _plans[key] = plan
        describe(plan)
        if not plan.refusal:
            state.should_raise_failed_hosts = Guard(plan)
            state.add_callback_handler(FailedStep(plan))
        return plan


def describe(plan: RestorePlan) -> None:
    everyone = ", ".join(a.name for a in plan.apps)
    first = plan.first.name
    steps = [f"lock the fleet on {first}",
             f"fetch {plan.backup} from {backup.where_name(plan.where)} and verify it: {first}",
             f"maintenance page on, the app stopped: {everyone}",
             f"keep the database aside ({plan.first.s.base_dir}/shared/{BEFORE}), load the "
             f"backup in one transaction, migrate to {plan.commit[:12]}: {first}",
             f"start the app, health-gated, page off: {everyone}"]
    if plan.lb is not None:
        steps.append(f"the load balancer {plan.lb.name} sees each app server healthy")
    steps += [f"make the shared uploads equal to the backup's, release the lock: {first}"]
    lines = [f"fleet restore of {plan.backup} ({backup.where_name(plan.where)}) onto "
             f"{plan.commit[:12]}; the data written since is replaced (and kept aside):",
             "  phases (each done on every server named before the next begins):"]
    lines += [f"    {i + 1}. {step}" for i, step in enumerate(steps)]
    lines.append("  on any failure: the previous database goes back if it was replaced, every "
                 "app server serves again, the run exits non-zero")
    logger.info("\n".join(lines))


class Guard(fleetrun.Guard):
    """pyinfra's `should_raise_failed_hosts` for a fleet's restore (see fleetrun.Guard): puts the
    previous database back if it was replaced, starts every app server again without the page,
    waits for the load balancer, releases the lock, then lets the run stop."""

    action = "restore"

    def lock_holder(self, state):
        return state.inventory.get_host(self.plan.first.name), self.plan.first.s

    def undo(self, state, failed: list[str]) -> None:
        plan = self.plan
        first, fs = self.lock_holder(state)
        report = []
        marker = f"{Layout(fs).shared}/{REPLACED}"
        replaced_now, _ = first.run_shell_command(f"test -f {sh(marker)}", _sudo=True)
        if replaced_now:  # nobody may write to the database while it goes back
            for a in plan.apps:
                state.inventory.get_host(a.name).run_shell_command(down_command(a.s), _sudo=True)
            done, output = first.run_shell_command(put_back_command(fs), _sudo=True)
            report.append(f"database: {'put back' if done else 'FAILED to put back'}"
                          + ("" if done else f" ({said(output)})"))
        for a in plan.apps:
            h = state.inventory.get_host(a.name)
            with ctx_host.use(h):
                command = up_command(a.s, plan.commit, a.live)
            done, output = h.run_shell_command(command, _sudo=True)
            report.append(f"{a.name}: {'serving' if done else 'NOT healthy'}"
                          + ("" if done else f" ({said(output)})"))
        if plan.lb is not None:  # done when the load balancer sends requests to them again
            ls = from_host(plan.lb)
            servers = [(a.name, roles.address_of(state.inventory.get_host(a.name)))
                       for a in plan.apps]
            done, output = plan.lb.run_shell_command(
                haproxy.serving_command(ls, servers, haproxy.check_host(ls, plan.lb.name), 60),
                _sudo=True)
            report.append(f"{plan.lb.name}: {said(output)}")
        what = f"restore {plan.backup} from {plan.where} onto {plan.commit[:12]}"
        for a in plan.apps:
            state.inventory.get_host(a.name).run_shell_command(
                release.audit_entry(a.s, what, "failed") + "; " + release.unlock_command(a.s),
                _sudo=True)
        steps = "; ".join(f"{name}: {step}" for name, step in sorted(plan.failed.items()))
        logger.error(f"fleet restore of {plan.backup} failed on {', '.join(failed)}"
                     + (f" ({steps})" if steps else "") + f". {'; '.join(report)}. "
                     f"The lock on {first.name} is released ({fs.app_name}).")


def said(output) -> str:
    lines = (output.stdout_lines + output.stderr_lines) if output else []
    return "; ".join(lines[-3:])


def run(state, s: Settings, fleet) -> None:
    """Add this server's steps of the fleet's restore. Every server of the fleet calls it from
    the same line of restore.py: the phase marks order the steps of different servers."""
    plan = make_plan(state, s, fleet)
    if plan.refusal:
        raise Stop(plan.refusal)
    me = plan.app(host.name)
    is_first = me is not None and me.name == plan.first.name
    if me is not None:
        system.tools(name="The deploy's scripts: health gate, release build, backup")
    if is_first:
        release.locked(name="Take the fleet's lock", s=me.s, action=f"restore {plan.backup}",
                       break_lock=me.s.break_lock)
        backup.fetched(name=f"Fetch {plan.backup} and verify it (the site is untouched)",
                       s=me.s, backup=plan.backup, where=plan.where)
    roles.phase(name="The backup is fetched and verified", title="fetched")
    if me is not None:
        down(name="Maintenance page on, the app stopped", s=me.s)
    roles.phase(name="Every app server shows the maintenance page", title="down")
    if is_first:
        replaced(name="The fleet's database replaced by the backup and migrated, once", s=me.s)
    roles.phase(name="The database holds the backup", title="replaced")
    if me is not None:
        up(name="The app started, health-gated; the maintenance page off", s=me.s,
           commit=plan.commit, live=me.live)
    roles.phase(name="Every app server serves again", title="up")
    if plan.lb is not None and host.name == plan.lb.name:
        for a in host.loop(plan.apps):
            haproxy.sees(name=f"The load balancer sees {a.name} healthy", s=s, server=a.name,
                         address=roles.address_of(state.inventory.get_host(a.name)),
                         revision=plan.commit, timeout=a.s.health_timeout + 10)
    roles.phase(name="The load balancer sees every app server", title="seen")
    if is_first:
        finished(name="The shared uploads made equal to the backup's", s=me.s)
        release.audited(name="Release the fleet's lock, write the audit log", s=me.s,
                        what=f"restore {plan.backup} from {plan.where} onto {plan.commit[:12]}")
