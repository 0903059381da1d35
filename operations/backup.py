"""Backups off the server (borg): the nightly timer on the server that holds the database, the
backup server that keeps the copies, backup.py's backup now, and restore.py's fetch and swap.
The work on the server is files/djdeploy_backup.py; these operations set it up and call it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, OperationError, operation

from . import maintenance
from .app import MIGRATIONS, Account, Layout, manage_command
from .common import TOOLS, JsonState, PathStates, Stop, config_file, render, sh
from .gunicorn import Serving, health_command
from .nginx import upstream_path
from .roles import holds_database, takes_backups
from .settings import Settings

SCRIPT = TOOLS["backup"]
BACKUP_USER = "djbackup"  # the backup server's account, unless backup_server names another
BACKUP_ROOT = "/srv/djdeploy-backups"  # on the backup server: one borg repository per site
LOG_DIR = "/var/log/djdeploy"
STATE_DIR = "/var/lib/djdeploy"


@dataclass(frozen=True)
class Paths:
    """Where the backups of a site live on its server."""

    s: Settings

    @property
    def config(self) -> str:
        return f"{self.s.config_dir}/backup.json"

    @property
    def ssh_key(self) -> str:
        return f"{self.s.config_dir}/backup_ssh_key"

    @property
    def passphrase(self) -> str:
        return f"{self.s.config_dir}/backup_passphrase"

    @property
    def borg_base(self) -> str:
        return f"{STATE_DIR}/borg/{self.s.app_name}"

    @property
    def log(self) -> str:
        return f"{LOG_DIR}/{self.s.app_name}-backup.log"

    @property
    def repository(self) -> str:
        return f"{Layout(self.s).shared}/backups/borg"

    @property
    def staging(self) -> str:
        return f"{Layout(self.s).shared}/backups/restore"

    def unit(self, kind: str) -> str:
        return f"/etc/systemd/system/{self.s.app_name}-backup.{kind}"


def backup_server(s: Settings) -> tuple[str, str, int]:
    """user, host and port of `backup_server`."""
    user, _, rest = s.backup_server.rpartition("@")
    name, _, port = rest.partition(":")
    return user or BACKUP_USER, name, int(port or 22)


def remote_repository(s: Settings) -> str | None:
    if not s.backup_server:
        return None
    user, name, port = backup_server(s)
    return f"ssh://{user}@{name}:{port}{BACKUP_ROOT}/{s.app_name}"


def config(s: Settings, server: str) -> dict:
    """The settings files/djdeploy_backup.py reads on the server (no secret in it)."""
    lay, p = Layout(s), Paths(s)
    source = {"sqlite": f"{lay.shared}/data/db.sqlite3", "postgresql": s.app_name}.get(s.database)
    if s.database_server:  # the fleet's database, reached as the app reaches it
        source = f"{s.config_dir}/database.env"
    return {
        "app": s.app_name, "server": server, "base": lay.base, "shared": lay.shared,
        "subdir": s.project_subdir, "database": s.database if holds_database(host, s) else "url",
        "source": source, "staging": p.staging, "borg_base": p.borg_base, "log": p.log,
        "lock": f"/run/lock/{s.app_name}-backup.lock", "maintenance_flag": maintenance.flag(s),
        "repositories": {"server": p.repository, "backup_server": remote_repository(s)},
        "ssh": {"key": p.ssh_key, "known_hosts": f"{p.borg_base}/known_hosts"} if s.backup_server else {},
        "passphrase_file": p.passphrase if s.backup_passphrase else None,
        "keep": {"daily": s.backup_keep_daily, "weekly": s.backup_keep_weekly,
                 "monthly": s.backup_keep_monthly},
    }


def script(s: Settings, *args: str) -> str:
    return sh(s.python_bin, SCRIPT, "--config", Paths(s).config, *args)


class TimerState(JsonState):
    """
    Whether the backup timer of the app is enabled and active.
    """

    def command(self, app: str) -> str:
        return (f"printf '{{\"enabled\":\"%s\",\"active\":\"%s\"}}\\n' "
                f"\"$(systemctl is-enabled {app}-backup.timer 2>/dev/null)\" "
                f"\"$(systemctl is-active {app}-backup.timer 2>/dev/null)\"")


@operation()
def schedule(s: Settings, takes: bool = True):
    """
    The backup timer on the server that takes the backups (`backup_schedule`), its settings
    file, and the SSH key and passphrase for the backup server (root only, never printed);
    the timer removed when `backups` is off.

    + s: settings
    + takes: whether this server takes the site's backups (one app server of a fleet)
    """
    p, app = Paths(s), s.app_name
    timer = host.get_fact(TimerState, app=app)
    if not (takes and takes_backups(host, s)):
        if timer.get("enabled") in ("enabled", "disabled"):
            yield f"systemctl disable -q --now {app}-backup.timer"
            yield sh("rm", "-f", p.unit("timer"), p.unit("service")) + " && systemctl daemon-reload"
        else:
            host.noop("backups are off")
        return
    yield from config_file._inner(path=p.config, mode=0o600,
                                  content=json.dumps(config(s, host.name), indent=1, sort_keys=True) + "\n")
    secrets = {p.ssh_key: s.backup_ssh_key and Path(s.backup_ssh_key),
               p.passphrase: s.backup_passphrase}
    present = host.get_fact(PathStates, paths=[*secrets, p.borg_base, LOG_DIR])
    for path, value in secrets.items():
        if isinstance(value, Path):
            if not value.is_file():
                raise OperationError(f"backup_ssh_key: {value} is not a file on the controller")
            value = value.read_text()
        if value:
            yield from config_file._inner(path=path, content=value.rstrip("\n") + "\n", mode=0o600,
                                          secret=True)
        elif path in present:
            yield sh("rm", "-f", path)
    for folder in (p.borg_base, LOG_DIR):
        if folder not in present:
            yield sh("install", "-d", "-m", "700", folder)
    context = dict(app_name=app, python=s.python_bin, script=SCRIPT, config=p.config,
                   remote=bool(s.backup_server), postgresql=s.database == "postgresql",
                   shared=Layout(s).shared, state_dir=STATE_DIR, log_dir=LOG_DIR,
                   schedule=s.backup_schedule)
    changed = False
    for kind in ("service", "timer"):
        for command in config_file._inner(path=p.unit(kind), content=render(f"backup.{kind}.j2", **context)):
            changed = True
            yield command
    if changed:
        yield "systemctl daemon-reload"
    if changed or timer.get("enabled") != "enabled" or timer.get("active") != "active":
        yield f"systemctl enable -q {app}-backup.timer && systemctl restart {app}-backup.timer"


class AuthorizedKeys(JsonState):
    """
    The lines of a user's `~/.ssh/authorized_keys` (none when it does not exist).
    """

    def command(self, path: str) -> str:
        return (f"if [ -f {sh(path)} ]; then sed 's/\\\\/\\\\\\\\/g; s/\"/\\\\\"/g; s/.*/\"&\",/' {sh(path)} "
                "| tr -d '\\n' | sed 's/^/{\"lines\":[/; s/,$//; s/$/]}/'; echo; else echo '{\"lines\":[]}'; fi")


def client_keys(inventory) -> list[str]:
    """The public keys (`<backup_ssh_key>.pub` on the controller) the app servers of the
    inventory push backups with."""
    from .roles import app_servers
    from .settings import validate

    keys = []
    for other in app_servers(inventory):
        data = validate(other.data.dict(), where=other.name)
        if data.backup_server and data.backup_ssh_key:
            public = Path(data.backup_ssh_key + ".pub")
            if not public.is_file():
                raise OperationError(f"backup_ssh_key: {public} (the public key) is not a file on the controller")
            key = " ".join(public.read_text().split()[:2])
            if key not in keys:
                keys.append(key)
    return keys


def authorized_line(s: Settings, key: str) -> str:
    """The line that lets a site's key reach its own repository and nothing else."""
    return (f'restrict,command="borg serve --restrict-to-repository {BACKUP_ROOT}/{s.app_name}" '
            f"{key} djdeploy-backup:{s.app_name}")


@operation()
def receiver(s: Settings, keys: list[str]):
    """
    This server keeps the site's backups: borg, a user that logs in only with the app servers'
    backup keys, each of which runs `borg serve` restricted to the site's repository.

    + s: settings
    + keys: public keys of the app servers (`ssh-ed25519 AAAA...`)
    """
    user = backup_server(s)[0] if s.backup_server else BACKUP_USER
    have = host.get_fact(Account, user=user)
    if have["user"] is None:
        yield sh("useradd", "--system", "--user-group", "--home-dir", BACKUP_ROOT, "--shell",
                 "/bin/sh", user)
    folders = host.get_fact(PathStates, paths=[BACKUP_ROOT, f"{BACKUP_ROOT}/.ssh"])
    for folder in (BACKUP_ROOT, f"{BACKUP_ROOT}/.ssh"):
        state = folders.get(folder)
        if not state or (state["user"], state["mode"]) != (user, 0o700):
            yield sh("install", "-d", "-o", user, "-g", user, "-m", "700", folder)
    path = f"{BACKUP_ROOT}/.ssh/authorized_keys"
    mark = f" djdeploy-backup:{s.app_name}"
    others = [line for line in host.get_fact(AuthorizedKeys, path=path).get("lines", [])
              if not line.endswith(mark)]
    lines = others + [authorized_line(s, key) for key in keys]
    yield from config_file._inner(path=path, content="".join(f"{line}\n" for line in lines),
                                  user=user, group=user, mode=0o600)


# -- backup.py ----------------------------------------------------------------------------------


def _report(state, host, s: Settings):
    """Print the backup's own summary (the last lines of its log) after it ran."""
    out = host.run_shell_command(f"tail -n 4 {sh(Paths(s).log)}", _sudo=True)
    lines = [line for line in (out[1].stdout_lines if out[0] else []) if " backup " in line]
    for line in lines:
        logger.info(f"{host.name}: {line.split(' ', 1)[1]}")
    return True


@operation(is_idempotent=False)
def now(s: Settings):
    """
    A backup taken now, the same way the timer takes it (`<app>-backup.service`): database and
    media, verified, on the server and the backup server, retention applied.

    + s: settings
    """
    unit = f"{s.app_name}-backup.service"
    yield (f"systemctl start {unit} || {{ echo 'the backup failed:' >&2; "
           f"tail -n 5 {sh(Paths(s).log)} >&2; exit 1; }}")
    yield FunctionCommand(_report, (s,), {})


# -- restore.py ---------------------------------------------------------------------------------


class Backups(JsonState):
    """
    The backups in the repositories of the site (on the server and on the backup server).
    """

    def command(self, python: str, config: str) -> str:
        return (f"if [ -f {sh(config)} ] && [ -f {sh(SCRIPT)} ]; then "
                f"{sh(python, SCRIPT, '--config', config, 'list')}; else echo '{{}}'; fi")


def choose(listing: dict, server: str, name: str, source: str) -> tuple[str, str]:
    """Which backup a restore takes and from where: `name` (or the newest of `server`) from
    `source` (`auto`: the server's copy when it has it, else the backup server's).
    A ValueError says why none fits."""
    wheres = ["server", "backup_server"] if source == "auto" else [source]
    found = {w: listing.get(w, {}).get("backups", []) for w in wheres}
    problems = [f"{w}: {listing[w]['error']}" for w in wheres if listing.get(w, {}).get("error")]
    if not name:
        mine = sorted({n for names in found.values() for n in names
                       if n.startswith(f"{server}-") and len(n) == len(server) + 17})
        if not mine:
            raise ValueError(f"no backup of {server} found in "
                             + " or ".join(where_name(w) for w in wheres)
                             + (f" ({'; '.join(problems)})" if problems else ""))
        name = mine[-1]
    for where in wheres:
        if name in found[where]:
            return name, where
    raise ValueError(f"no backup named {name} in " + " or ".join(where_name(w) for w in wheres)
                     + (f" ({'; '.join(problems)})" if problems else ""))


def chosen(h, hs: Settings, name: str, source: str) -> tuple[str, str]:
    """The backup a restore takes from the server `h` (its settings `hs`), as `choose` finds
    it in the server's listing; a Stop names the server and why none fits."""
    listing = h.get_fact(Backups, python=hs.python_bin, config=Paths(hs).config)
    if not listing:
        raise Stop(f"{h.name}: backups are not set up here; run deploy.py first")
    try:
        return choose(listing, h.name, name, source)
    except ValueError as error:
        raise Stop(f"{h.name}: {error}") from None


def where_name(where: str) -> str:
    return {"server": "the server's copy", "backup_server": "the backup server's copy"}[where]


@operation()
def fetched(s: Settings, backup: str, where: str):
    """
    The backup extracted into the staging folder and verified (borg checks every chunk; the
    database file must match its recorded checksum and pass its check; PostgreSQL's is restored
    into a database of its own). A damaged backup stops here: the site is untouched.

    + s: settings
    + backup: its name
    + where: `server` or `backup_server`
    """
    yield script(s, "fetch", backup, "--where", where)


@operation()
def restored(s: Settings, commit: str):
    """
    The fetched backup swapped in while nginx shows the maintenance page: the app stopped, the
    database and media replaced, migrated to the current release, started again and
    health-gated, the page removed. Any failure puts the previous data back.

    + s: settings
    + commit: the current release, which must answer healthy
    """
    lay = Layout(s)
    live = host.get_fact(Serving, base=lay.base, app=s.app_name, upstream=upstream_path(s)).get("live") or "a"
    project = lay.project(lay.current)
    migrate = manage_command(s, project, "migrate --noinput")
    yield script(s, "apply", "--slot", live, "--migrate", migrate,
                 "--health", health_command(s, commit, live))
    # The database no longer has the migrations the marker names: the next update checks again.
    yield sh("rm", "-f", f"{lay.shared}/{MIGRATIONS}")
    yield health_command(s, commit)
