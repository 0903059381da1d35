"""Around a release switch: the server lock, the update preview, database backups and their
restore, pruning old releases, rollback targets, the audit log and the status report."""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import time

from pyinfra import host, logger
from pyinfra.api import BaseStateCallback, FactBase, OperationError, operation

from .app import MIGRATIONS, Layout, found_project, needs_migrate, target_commit
from .common import TOOLS, JsonState, sh
from .settings import Settings

CONTROLLER = f"{getpass.getuser()}@{socket.gethostname()}"
RUN = {"by": CONTROLLER, "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def lock_path(s: Settings) -> str:
    return f"{s.base_dir}/deploy.lock"


def audit_path(s: Settings) -> str:
    return f"{s.base_dir}/shared/audit.log"


def backup_path(s: Settings, commit: str) -> str:
    suffix = "dump" if s.database == "postgresql" else "sqlite3"
    return f"{s.base_dir}/shared/backups/before-{commit[:12]}.{suffix}"


class DeployLock(JsonState):
    """
    Who holds the deploy lock of the app, since when, doing what; empty when free.
    """

    def command(self, path: str) -> str:
        return f"cat {sh(path)} 2>/dev/null || true"


def _stale(holder: dict) -> bool:
    """A lock taken by a process of this controller that no longer runs can be broken."""
    if holder.get("by") != CONTROLLER or holder.get("pid") == RUN["pid"]:
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return True
    except PermissionError:
        return False
    return False


def lock_refusal(s: Settings, holder: dict | None = None) -> str | None:
    """Why this run may not take the deploy lock (who holds it, since when, doing what)."""
    if holder is None:
        holder = host.get_fact(DeployLock, path=lock_path(s))
    if not holder or holder.get("pid") == RUN["pid"] or _stale(holder) or s.break_lock:
        return None
    return (f"{host.name}: {s.app_name} is locked by {holder.get('by')} (pid {holder.get('pid')}) "
            f"since {holder.get('since')}, doing: {holder.get('action')}. Wait for it, or set "
            "break_lock: true if that run is gone.")


@operation(is_idempotent=False)
def locked(s: Settings, action: str, break_lock: bool = False):
    """
    The app's deploy lock held by this run, so two updates never run at once. A lock left by a
    process of this controller that died is broken; any other needs `break_lock`.

    + s: settings
    + action: what this run does, for whoever finds the lock
    + break_lock: take the lock even if someone else holds it
    """
    path = lock_path(s)
    holder = host.get_fact(DeployLock, path=path)
    mine = {**RUN, "action": action}
    take = f"( set -C; printf '%s\\n' {sh(json.dumps(mine))} > {sh(path)} ) 2>/dev/null"
    if holder and holder.get("pid") != RUN["pid"] and (break_lock or _stale(holder)):
        take = f"rm -f {sh(path)} && " + take
    # Taking the lock is atomic (noclobber): of two runs that got this far, one fails here.
    refused = f"echo \"{s.app_name} is locked by another run: $(cat {sh(path)})\" >&2; exit 1"
    yield f"mkdir -p {sh(s.base_dir)} && {{ {take} || {{ {refused}; }}; }}"


def unlock_command(s: Settings) -> str:
    """Remove the lock if this run holds it."""
    return (f"grep -q '\"pid\": {RUN['pid']},' {sh(lock_path(s))} 2>/dev/null && "
            f"rm -f {sh(lock_path(s))} || true")


def audit_line(s: Settings, action: str, from_rev: str, to_rev: str, result: str) -> str:
    return audit_entry(s, f"{action} {from_rev[:12] or '-'} -> {to_rev[:12] or '-'}", result)


def audit_entry(s: Settings, what: str, result: str) -> str:
    """The command that appends one line to the audit log: time, who, what, result."""
    entry = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {CONTROLLER} {what} {result}"
    return f"printf '%s\\n' {sh(entry)} >> {sh(audit_path(s))}"


@operation(is_idempotent=False)
def unlocked(s: Settings, action: str, from_rev: str, to_rev: str):
    """
    The lock released and the run written to the audit log.

    + s: settings
    + action, from_rev, to_rev: what the audit log records
    """
    yield audit_line(s, action, from_rev, to_rev, "ok")
    yield unlock_command(s)


@operation(is_idempotent=False)
def audited(s: Settings, what: str):
    """
    The lock released and `what` written to the audit log as done.

    + s: settings
    + what: what the audit log records
    """
    yield audit_entry(s, what, "ok")
    yield unlock_command(s)


class ReleaseOnFailure(BaseStateCallback):
    """When any step fails on a host, release that host's lock and audit the failure."""

    def __init__(self, s: Settings, action: str, from_rev: str, to_rev: str):
        self.host_name = host.name
        self.args = (s, action, from_rev, to_rev)

    def operation_host_error(self, state, host_, op_hash, retry_count=0, max_retries=0):
        s, action, from_rev, to_rev = self.args
        if host_.name != self.host_name:
            return
        host_.run_shell_command(audit_line(s, action, from_rev, to_rev, "failed") + "; "
                                + unlock_command(s), _sudo=True)


class CurrentRevision(FactBase):
    """
    The commit the `current` release was built from; empty before the first deploy.
    """

    def command(self, base: str) -> str:
        return f"cat {sh(base)}/current/REVISION 2>/dev/null || readlink {sh(base)}/current 2>/dev/null || true"

    def process(self, output):
        return output[0].strip().rsplit("/", 1)[-1] if output else ""


@operation()
def backup(s: Settings):
    """
    A backup of the database before the new release migrates it: SQLite through its online
    backup API, PostgreSQL with `pg_dump -Fc`, verified; kept in `shared/backups` with the
    release.

    + s: settings
    """
    lay = Layout(s)
    commit = target_commit(s)
    if not needs_migrate(s):
        host.noop("no migrations to apply")
        return
    dest = backup_path(s, commit or s.revision)
    if s.database == "url":
        host.noop("database_url: back up the external database with its own tools")
        return
    # files/djdeploy_backup.py: the same verified copy the nightly backups take.
    source = f"{lay.shared}/data/db.sqlite3" if s.database == "sqlite" else s.app_name
    if s.database_server:  # the fleet's database server, over TLS (pg_dump here)
        source = f"{s.config_dir}/database.env"
    dump = sh(s.python_bin, TOOLS["backup"], "dump", "--database", s.database, "--source", source,
              "--out", dest)
    yield f"if [ -f {sh(source)} ]; then {dump}; fi" if s.database == "sqlite" else dump


class Releases(JsonState):
    """
    The release folders (newest first, complete or not) and what `current` and `previous`
    point at.
    """

    def command(self, base: str) -> str:
        b = sh(base)
        return (
            f"cd {b}/releases 2>/dev/null || {{ echo '{{}}'; exit 0; }}; "
            "list=$(ls -1t | while read r; do [ -f \"$r/.djdeploy-complete\" ] && c=true || c=false; "
            "printf '{\"name\":\"%s\",\"complete\":%s},' \"$r\" \"$c\"; done); "
            f"printf '{{\"releases\":[%s],\"current\":\"%s\",\"previous\":\"%s\",\"slots\":[\"%s\",\"%s\"]}}\\n' "
            f"\"${{list%,}}\" \"$(readlink {b}/current)\" \"$(readlink {b}/previous)\" "
            f"\"$(readlink {b}/slots/a)\" \"$(readlink {b}/slots/b)\""
        )


@operation()
def pruned(s: Settings):
    """
    Only the last `keep_releases` good releases kept (never `current`, the one before it, or a
    slot's), failed ones removed, and their backups with them.

    + s: settings
    """
    lay = Layout(s)
    info = host.get_fact(Releases, base=lay.base)
    keep = {p.rsplit("/", 1)[-1] for p in (info.get("current"), info.get("previous"), *info.get("slots", [])) if p}
    good = [r["name"] for r in info.get("releases", []) if r["complete"]]
    keep |= set(good[: s.keep_releases])
    doomed = [r["name"] for r in info.get("releases", []) if r["name"] not in keep]
    if not doomed:
        host.noop("no old releases to remove")
        return
    for name in doomed:
        yield sh("rm", "-rf", f"{lay.releases}/{name}", f"{lay.shared}/backups/before-{name}.sqlite3",
                 f"{lay.shared}/backups/before-{name}.dump")


class UpdatePlan(JsonState):
    """
    What an update from one commit to another brings: subjects, commit count, whether
    poetry.lock changes, and the migration files it adds.
    """

    def command(self, mirror: str, old: str, new: str, subdir: str, poetry_dir: str) -> str:
        g = f"git -C {sh(mirror)}"
        prefix = f"{subdir}/" if subdir else ""
        lock = f"{poetry_dir}/poetry.lock" if poetry_dir else "poetry.lock"
        return (
            f"[ -d {sh(mirror)} ] || {{ echo '{{}}'; exit 0; }}; "
            f"subj() {{ {g} log -1 --format=%s \"$1\" 2>/dev/null | sed 's/\\\\/\\\\\\\\/g; s/\"/\\\\\"/g'; }}; "
            f"n=$({g} rev-list --count {sh(old)}..{sh(new)} 2>/dev/null || echo '?'); "
            f"{g} diff --quiet {sh(old)} {sh(new)} -- {sh(lock)} 2>/dev/null && lock=false || lock=true; "
            f"mig=$({g} diff --name-only --diff-filter=A {sh(old)} {sh(new)} -- "
            f"{sh(prefix + '*/migrations/0*.py')} 2>/dev/null | sed 's/.*/\"&\"/' | paste -sd, -); "
            "printf '{\"old\":\"%s\",\"new\":\"%s\",\"commits\":\"%s\",\"lock_changes\":%s,\"migrations\":[%s]}\\n' "
            f"\"$(subj {sh(old)})\" \"$(subj {sh(new)})\" \"$n\" \"$lock\" \"$mig\""
        )


def update_plan(s: Settings, old: str, new: str) -> dict:
    """The UpdatePlan of the repository the run deploys from: the server's mirror (`git`
    mode) or the controller's checkout (`upload` mode), by the same command."""
    try:
        project = found_project(s, new)
    except OperationError:  # said by the project check that follows
        project = None
    args = {"old": old, "new": new, "subdir": project.subdir if project else "",
            "poetry_dir": project.poetry_dir if project else ""}
    if s.source_mode == "git":
        return host.get_fact(UpdatePlan, mirror=Layout(s).mirror, **args)
    fact = UpdatePlan()
    out = subprocess.run(fact.command(mirror=s.repo_url, **args), shell=True, capture_output=True,
                         text=True)
    return fact.process(out.stdout.splitlines())


def describe(s: Settings, old: str, new: str | None) -> None:
    """Print what the update would do: the preview an operator reads before saying yes."""
    if not new:
        logger.info(f"{host.name}: update to {s.revision} (commit known once fetched)")
        return
    if old == new:
        logger.info(f"{host.name}: {s.revision} = {new[:12]} already serves; nothing to update")
        return
    plan = update_plan(s, old or new, new)
    migrations = ", ".join(m.rsplit("/", 1)[-1] for m in plan.get("migrations", [])) or "none"
    logger.info(
        f"{host.name}: update {old[:12] or '(nothing deployed)'} {plan.get('old', '')!r} -> "
        f"{new[:12]} {plan.get('new', '')!r}; {plan.get('commits', '?')} commits; "
        f"poetry.lock {'changes' if plan.get('lock_changes') else 'unchanged'}; "
        f"new migrations: {migrations}"
    )


class RollbackTarget(JsonState):
    """
    The release a rollback returns to (`previous`, or the complete release whose commit starts
    with `commit`), its full commit, and the migration files the current release has that it
    lacks (they stay applied).
    """

    def command(self, base: str, subdir: str, commit: str) -> str:
        b = sh(base)
        project = f"/{subdir}" if subdir else ""
        if commit:
            pick = f"r=$(ls -d {b}/releases/{commit[:12]}* 2>/dev/null | head -1)"
        else:
            pick = f"r=$(readlink {b}/previous)"
        return (
            f"{pick}; [ -n \"$r\" ] && [ -f \"$r/.djdeploy-complete\" ] || {{ echo '{{}}'; exit 0; }}; "
            f"c=$(readlink {b}/current); "
            f"mig=$(cd \"$c{project}\" && ls */migrations/0*.py 2>/dev/null | while read m; do "
            f"[ -e \"$r{project}/$m\" ] || printf '\"%s\",' \"$m\"; done); "
            f"printf '{{\"release\":\"%s\",\"commit\":\"%s\",\"kept_migrations\":[%s]}}\\n' "
            f"\"$r\" \"$(cat \"$r{project}/REVISION\")\" \"${{mig%,}}\""
        )


@operation()
def restored(s: Settings, undoing: str):
    """
    The database as it was before the update being undone, from its backup.

    + s: settings
    + undoing: commit of the release whose update is undone
    """
    path = backup_path(s, undoing)
    if s.database == "sqlite":
        db = f"{s.base_dir}/shared/data/db.sqlite3"
        yield (f"test -f {sh(path)} || {{ echo 'no backup {path}' >&2; exit 1; }}; "
               f"sqlite3 {sh(db)} {sh(f'.restore {path}')}")
    elif s.database == "postgresql" and s.database_server:  # the fleet's, over TLS, once
        yield (f"test -f {sh(path)} || {{ echo 'no backup {path}' >&2; exit 1; }}; "
               + sh(s.python_bin, TOOLS["backup"], "load", "--source",
                    f"{s.config_dir}/database.env", "--dump", path))
    elif s.database == "postgresql":
        yield (f"test -f {sh(path)} || {{ echo 'no backup {path}' >&2; exit 1; }}; "
               + sh(s.python_bin, TOOLS["backup"], "load", "--local", s.app_name, "--dump", path))
    else:
        raise OperationError("restore_backup: not available with database 'url'; restore it with the database server's tools")
    # The database no longer has the migrations it was last migrated with: the next update must
    # back up and migrate again, even to the release whose update was undone.
    yield sh("rm", "-f", f"{Layout(s).shared}/{MIGRATIONS}")


class Status(JsonState):
    """
    A server's deploy state at a glance: releases, slots and services, health, pending
    migrations, the audit log's tail, and the runbook's checks (R3-R8).
    """

    def command(self, base: str, app: str, subdir: str, pyenv_root: str, version: str,
                health: str, python: str) -> str:
        b, project = sh(base), f"{base}/current/{subdir}".rstrip("/")
        p = sh(project)
        q = "sed 's/\\\\/\\\\\\\\/g; s/\"/\\\\\"/g'"
        return (
            f"j() {{ printf '%s' \"$1\" | {q}; }}; "
            f"cur=$(readlink {b}/current); rev=$(cat {p}/REVISION 2>/dev/null); "
            f"live=$(sed -n 's|.*/run/{app}/\\([ab]\\)\\.sock.*|\\1|p' /etc/nginx/{app}-upstream.conf 2>/dev/null); "
            f"sa=$(systemctl is-active {app}@a.service); sb=$(systemctl is-active {app}@b.service); "
            "ng=$(systemctl is-active nginx); "
            f"h=$({sh(python)} /usr/local/lib/djdeploy/health.py --socket /run/{app}/$live.sock --path {sh(health)} --timeout 3 2>&1 && echo ok); "
            f"pend=$({app}-manage showmigrations --plan 2>/dev/null | grep -c '^\\[ \\]'); "
            f"log=$(tail -n 5 {b}/shared/audit.log 2>/dev/null); "
            f"pyv=$({p}/.venv/bin/python --version 2>&1); "
            f"venv=$(grep -s '^home' {p}/.venv/pyvenv.cfg); "
            f"poetry=$(poetry --version 2>/dev/null); "
            f"conf=$(ps -eo args | grep -m1 '[g]unicorn.*-c gunicorn.conf.py'); "
            "nt=$(nginx -t 2>&1 && echo ok); "
            "printf '{\"current\":\"%s\",\"revision\":\"%s\",\"live\":\"%s\",\"slots\":{\"a\":\"%s\",\"b\":\"%s\"},"
            "\"nginx\":\"%s\",\"health\":\"%s\",\"pending\":\"%s\",\"audit\":\"%s\",\"python\":\"%s\","
            "\"venv\":\"%s\",\"poetry\":\"%s\",\"gunicorn\":\"%s\",\"nginx_t\":\"%s\"}\\n' "
            "\"$cur\" \"$rev\" \"$live\" \"$sa\" \"$sb\" \"$ng\" \"$(j \"$h\")\" \"$pend\" \"$(j \"$log\" | sed ':a;N;$!ba;s/\\n/\\\\n/g')\" "
            "\"$(j \"$pyv\")\" \"$(j \"$venv\")\" \"$(j \"$poetry\")\" \"$(j \"$conf\")\" \"$(j \"$nt\" | tr '\\n' ' ')\""
        )
