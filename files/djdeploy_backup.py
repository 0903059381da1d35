"""Backups of the site's database and media, kept with borg on the server and on the backup
server, and their restore. Standard library only: it runs as root on the server, with pyenv's
Python, reading its settings from the JSON file the deploy writes (--config).

    dump --database sqlite|postgresql --source DB --out FILE
                    a copy of the database (SQLite's online backup API, `pg_dump -Fc`), verified
    create [--at 2026-01-31T02:30:00]
                    dump, archive in every repository, verify each copy, apply the retention
    list            the backups of every repository, as JSON
    fetch NAME --where server|backup_server
                    extract a backup into the staging folder and verify it; the site is untouched
    apply --slot a --migrate CMD --health CMD
                    swap the fetched backup in under the maintenance page, migrate, start the app
                    health-gated (a failure puts the previous database back), then the media
    replace --migrate CMD | put-back | finish
                    a fleet's restore, its app servers stopped by the deploy: the db server's
                    database kept aside and replaced, migrated (put-back undoes it); then the media
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from datetime import datetime, timezone

STAMP = "%Y%m%dT%H%M%SZ"
DUMP = "backups/dump"  # inside `shared`: the database copy and its description
ABOUT = "BACKUP.json"


class Failure(Exception):
    """A step failed; the message says which and why, for the operator."""


# -- small helpers ----------------------------------------------------------------------------

_log_file = None


def log(message: str) -> None:
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {message}"
    print(line, flush=True)
    if _log_file:
        with open(_log_file, "a") as handle:
            handle.write(line + "\n")


def run(argv: list[str], *, env: dict | None = None, cwd: str | None = None, stdin=None,
        stdout=None, what: str = "") -> str:
    """Run a command; its output, or a Failure naming what failed with the tool's own words."""
    result = subprocess.run(argv, env=env, cwd=cwd, stdin=stdin,
                            stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE)
    if result.returncode != 0:
        raise Failure(f"{what or argv[0]} failed: {tool_message(result.stderr.decode(errors='replace'))}")
    return result.stdout.decode(errors="replace") if stdout is None else ""


def tool_message(stderr: str) -> str:
    """The line of a tool's error output that says what went wrong (borg adds a traceback)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if re.match(r"^(Data integrity error|Repository .* does not exist|Remote: |"
                    r"Connection closed|.*[Pp]ermission denied|Archive .* does not exist)", line):
            return line
    plain = [line for line in lines if not line.startswith(("Traceback", "File ", "^"))
             and not line.startswith(("Platform:", "Linux:", "Borg:", "PID:", "sys.argv", "SSH_ORIG"))]
    return (plain[-1] if plain else "no message")[:300]


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def as_postgres(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


# -- the database copy ------------------------------------------------------------------------


def remote_database(env_file: str) -> dict:
    """libpq's environment for the DATABASE_URL in `env_file` (the password never in argv)."""
    values = dict(line.split("=", 1) for line in open(env_file).read().splitlines() if "=" in line)
    url = urllib.parse.urlsplit(values["DATABASE_URL"])
    query = dict(urllib.parse.parse_qsl(url.query))
    env = {**os.environ, "PGHOST": url.hostname or "", "PGPORT": str(url.port or 5432),
           "PGUSER": urllib.parse.unquote(url.username or ""),
           "PGPASSWORD": urllib.parse.unquote(url.password or ""),
           "PGDATABASE": url.path.lstrip("/"), "PGCONNECT_TIMEOUT": "10",
           "PGSSLMODE": query.get("sslmode", "require")}
    if "sslrootcert" in query:
        env["PGSSLROOTCERT"] = query["sslrootcert"]
    return env


def dump_database(kind: str, source: str, out: str) -> None:
    """A consistent copy of the live database at `out` (written beside, then renamed), verified."""
    temp = out + ".tmp"
    if kind == "sqlite":
        if not os.path.exists(source):
            raise Failure(f"no SQLite database at {source}")
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as live, sqlite3.connect(temp) as copy:
            live.backup(copy)
        live.close()
        copy.close()
    elif source.startswith("/"):  # another server's database: its URL in an environment file
        with open(temp, "wb") as handle:
            run(["pg_dump", "-Fc"], env=remote_database(source), stdout=handle, what="pg_dump")
    else:
        with open(temp, "wb") as handle:
            run(as_postgres("pg_dump", "-Fc", source), stdout=handle, what="pg_dump")
    os.chmod(temp, 0o600)
    verify_database(kind, temp)
    os.replace(temp, out)


def load_exact(dump: str, local: str = "", env_file: str = "") -> None:
    """A dump of `dump_database` put back, in one transaction: the database becomes exactly what
    the dump holds. Every object the app's role owns is dropped first, so a table made after the
    dump (by a later migration) goes too, and migrating again finds what the dump's migrations
    say. `local`: this server's database (and role) of that name, reached as postgres;
    `env_file`: another server's, from the DATABASE_URL in that environment file."""
    script = dump + ".sql"
    try:
        with open(script, "w") as handle:
            os.chmod(script, 0o600)
            if local:  # the objects made as the app's role, as its migrations made them
                handle.write(f'SET ROLE "{local}";\n')
            handle.write("DROP OWNED BY CURRENT_USER;\n")
            handle.flush()
            run(["pg_restore", "--no-owner", "--no-privileges", "-f", "-", dump], stdout=handle,
                what="pg_restore")
        psql = ["psql", "-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1", "-f", "-"]
        argv, env = ((as_postgres(*psql, "-d", local), None) if local
                     else (psql, remote_database(env_file)))
        with open(script, "rb") as handle:
            run(argv, env=env, stdin=handle, what="psql (the dump loaded in one transaction)")
    finally:
        if os.path.exists(script):
            os.unlink(script)


def verify_database(kind: str, path: str) -> None:
    """SQLite: `PRAGMA integrity_check` says ok. PostgreSQL: `pg_restore -l` lists the dump."""
    if kind == "sqlite":
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                rows = db.execute("PRAGMA integrity_check").fetchall()
            db.close()
        except sqlite3.DatabaseError as error:
            raise Failure(f"{path} is not a sound SQLite database: {error}") from None
        if rows != [("ok",)]:
            raise Failure(f"{path} fails PRAGMA integrity_check: {rows[:3]}")
    else:
        with open(path, "rb") as handle:
            # Reads the file only: no server, no postgres account needed (a fleet's app server).
            listing = run(["pg_restore", "-l"], stdin=handle, what="pg_restore -l")
        if "TABLE DATA" not in listing and "TABLE " not in listing:
            raise Failure(f"{path}: pg_restore -l lists no table")


def db_file(kind: str) -> str:
    return "db.sqlite3" if kind == "sqlite" else "db.dump"


# -- retention --------------------------------------------------------------------------------


def backup_time(name: str, server: str) -> datetime | None:
    """When a backup of `server` was taken, from its name `<server>-<stamp>`; None if the name
    is not one of this server's backups."""
    prefix = f"{server}-"
    if not name.startswith(prefix):
        return None
    try:
        return datetime.strptime(name[len(prefix):], STAMP).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def to_keep(times: dict[str, datetime], daily: int, weekly: int, monthly: int) -> set[str]:
    """The backups the retention keeps (borg's rules): the newest backup of each of the last
    `daily` days that have one; besides those, the newest of each of `weekly` more weeks and
    of `monthly` more months (a period whose newest backup another rule already keeps counts
    for no rule). The newest backup is always kept."""
    newest_first = sorted(times, key=lambda n: times[n], reverse=True)
    kept = set(newest_first[:1])
    periods = ((daily, lambda t: t.date()),
               (weekly, lambda t: t.isocalendar()[:2]),
               (monthly, lambda t: (t.year, t.month)))
    counted: set[str] = set()
    for count, period_of in periods:
        found, last = 0, None
        for name in newest_first:
            if found >= count:
                break
            period = period_of(times[name])
            if period == last:
                continue
            last = period
            if name not in counted:
                counted.add(name)
                found += 1
    return kept | counted


# -- borg -------------------------------------------------------------------------------------


class Borg:
    """The borg repositories of one site: `server` (on this server) and `backup_server`."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        repos = cfg["repositories"]
        self.repos = {k: repos[k] for k in ("server", "backup_server") if repos.get(k)}
        ssh = cfg.get("ssh") or {}
        rsh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
               "-o", "StrictHostKeyChecking=accept-new", "-o", "ServerAliveInterval=15"]
        if ssh.get("key"):
            rsh += ["-i", ssh["key"], "-o", f"UserKnownHostsFile={ssh['known_hosts']}"]
        self.env = {
            **os.environ,
            "BORG_BASE_DIR": cfg["borg_base"],
            "BORG_RSH": " ".join(rsh),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_HOSTNAME_IS_UNIQUE": "yes",
        }
        if cfg.get("passphrase_file"):
            self.env["BORG_PASSCOMMAND"] = f"cat {cfg['passphrase_file']}"
        else:
            self.env["BORG_PASSPHRASE"] = ""

    def __call__(self, *argv: str, where: str = "", **kw) -> str:
        what = f"borg {argv[0]}" + (f" ({where_text(where)})" if where else "")
        return run(["borg", *argv], env=self.env, what=what, **kw)

    def ensure(self, where: str) -> None:
        """The repository exists (made on first use)."""
        repo = self.repos[where]
        mode = "repokey-blake2" if self.cfg.get("passphrase_file") else "authenticated-blake2"
        result = subprocess.run(["borg", "init", "-e", mode, repo], env=self.env,
                                capture_output=True, text=True)
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise Failure(f"borg init ({where_text(where)}) failed: {tool_message(result.stderr)}")

    def names(self, where: str) -> list[str]:
        listing = json.loads(self("list", "--json", self.repos[where], where=where))
        return [a["name"] for a in listing["archives"]]


def where_text(where: str) -> str:
    return {"server": "the server's copy", "backup_server": "the backup server's copy"}.get(where, where)


# -- subcommands ------------------------------------------------------------------------------


def lock(cfg: dict):
    """Backups and restores of a site run one at a time."""
    handle = open(cfg["lock"], "w")
    deadline = time.monotonic() + 600
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise Failure("another backup or restore of this site still runs") from None
            time.sleep(1)


def describe(cfg: dict, name: str, at: datetime, out: str | None) -> dict:
    revision = ""
    try:
        with open(os.path.join(cfg["base"], "current", cfg.get("subdir") or "", "REVISION")) as f:
            revision = f.read().strip()
    except OSError:
        pass
    about = {"name": name, "app": cfg["app"], "server": cfg["server"],
             "created": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "revision": revision,
             "database": cfg["database"], "file": None, "sha256": None, "size": 0}
    if out:
        about.update(file=os.path.basename(out), sha256=sha256(out), size=os.path.getsize(out))
    return about


def create(cfg: dict, at: datetime) -> int:
    borg = Borg(cfg)
    name = f"{cfg['server']}-{at.strftime(STAMP)}"
    shared = cfg["shared"]
    work = os.path.join(shared, DUMP)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work, mode=0o700)
    started = time.monotonic()
    out = None
    if cfg["database"] in ("sqlite", "postgresql"):
        out = os.path.join(work, db_file(cfg["database"]))
        dump_database(cfg["database"], cfg["source"], out)
    about = describe(cfg, name, at, out)
    with open(os.path.join(work, ABOUT), "w") as handle:
        json.dump(about, handle, indent=1)
    media = [p for p in ("media",) if os.path.isdir(os.path.join(shared, p))]
    log(f"backup {name}: database {cfg['database']} "
        + (f"{about['size'] / 1e6:.1f} MB, verified" if out else "(not on this server: not included)")
        + f"; media {'included' if media else 'none'}; dump {time.monotonic() - started:.1f}s")
    problems = []
    for where in borg.repos:
        began = time.monotonic()
        try:
            borg.ensure(where)
            borg("create", "--compression", "zstd,3", "--timestamp", at.strftime("%Y-%m-%dT%H:%M:%S"),
                 f"{borg.repos[where]}::{name}", DUMP, *media, cwd=shared, where=where)
            check_copy(cfg, borg, where, name, about)
            removed = prune(cfg, borg, where)
            log(f"backup {name}: {where_text(where)} written and verified"
                + (f"; retention removed {', '.join(removed)}" if removed else "")
                + f" ({time.monotonic() - began:.1f}s)")
        except Failure as error:
            problems.append(f"{where_text(where)}: {error}")
            log(f"backup {name}: {where_text(where)} FAILED: {error}")
    shutil.rmtree(work, ignore_errors=True)
    if problems:
        raise Failure("; ".join(problems))
    log(f"backup {name} done in {time.monotonic() - started:.1f}s")
    return 0


def check_copy(cfg: dict, borg: Borg, where: str, name: str, about: dict) -> None:
    """Read the database back from the archive: the same bytes, and a sound database."""
    if not about["file"]:
        return
    probe = os.path.join(cfg["shared"], DUMP, "verify-" + about["file"])
    with open(probe, "wb") as handle:
        borg("extract", "--stdout", f"{borg.repos[where]}::{name}", f"{DUMP}/{about['file']}",
             stdout=handle, where=where)
    if sha256(probe) != about["sha256"]:
        raise Failure(f"the database read back from {name} differs from the one written")
    verify_database(cfg["database"], probe)
    os.unlink(probe)


def prune(cfg: dict, borg: Borg, where: str) -> list[str]:
    keep = cfg["keep"]
    times = {n: t for n in borg.names(where) if (t := backup_time(n, cfg["server"]))}
    kept = to_keep(times, keep["daily"], keep["weekly"], keep["monthly"])
    doomed = sorted(set(times) - kept)
    if doomed:
        borg("delete", borg.repos[where], *doomed, where=where)
        borg("compact", borg.repos[where], where=where)
    return doomed


def list_backups(cfg: dict) -> int:
    borg = Borg(cfg)
    result = {}
    for where in ("server", "backup_server"):
        if where not in borg.repos:
            continue
        try:
            names = borg.names(where) if where != "server" or os.path.exists(
                os.path.join(borg.repos[where], "config")) else []
            result[where] = {"backups": names}
        except Failure as error:
            result[where] = {"backups": [], "error": str(error)}
    print(json.dumps(result))
    return 0


def fetch(cfg: dict, name: str, where: str) -> int:
    """Extract backup `name` into the staging folder and check it; the live site is untouched."""
    borg = Borg(cfg)
    if where not in borg.repos:
        raise Failure(f"no {where_text(where)} is configured")
    staging = cfg["staging"]
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging, mode=0o700)
    started = time.monotonic()
    try:
        borg("extract", f"{borg.repos[where]}::{name}", cwd=staging, where=where)
    except Failure as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise Failure(f"backup {name} ({where_text(where)}) is damaged or unreadable, nothing was "
                      f"restored: {error}") from None
    try:
        with open(os.path.join(staging, DUMP, ABOUT)) as handle:
            about = json.load(handle)
        if about["file"]:
            path = os.path.join(staging, DUMP, about["file"])
            if sha256(path) != about["sha256"]:
                raise Failure(f"{about['file']} does not match the checksum recorded when it was taken")
            if about["database"] != cfg["database"]:
                raise Failure(f"it holds a {about['database']} database; this site uses {cfg['database']}")
            verify_database(about["database"], path)
            # A fleet's database is on its db server: loaded there once the app servers stop.
            if about["database"] == "postgresql" and not cfg["source"].startswith("/"):
                stage_postgresql(cfg, path)
    except (Failure, OSError, ValueError, KeyError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise Failure(f"backup {name} ({where_text(where)}) is damaged, nothing was restored: "
                      f"{error}") from None
    log(f"restore: fetched and verified {name} from {where_text(where)} "
        f"({time.monotonic() - started:.1f}s)")
    print(json.dumps(about))
    return 0


def stage_postgresql(cfg: dict, dump: str) -> None:
    """The dump restored into a database of its own beside the live one: the swap is a rename."""
    db, staged = cfg["source"], cfg["source"] + "_restore"
    run(as_postgres("dropdb", "--if-exists", staged), what="dropdb")
    run(as_postgres("createdb", "-O", db, staged), what="createdb")
    with open(dump, "rb") as handle:
        run(as_postgres("pg_restore", "--no-owner", f"--role={db}", "--exit-on-error", "-d", staged),
            stdin=handle, what="pg_restore")


def psql(sql: str) -> None:
    run(as_postgres("psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c", sql), what="psql")


class Swap:
    """The live database moved aside and the fetched one moved in by renames in the same
    folder (`back()` undoes them); the media synced last, replaced files kept aside."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.staging = cfg["staging"]
        with open(os.path.join(self.staging, DUMP, ABOUT)) as handle:
            self.about = json.load(handle)
        self.kind = self.about["database"] if self.about["file"] else None
        self.moves: list[tuple[str, str]] = []

    def prepare(self) -> None:
        """Before the site goes down: the fetched SQLite file copied beside the live one."""
        if self.kind == "sqlite":
            live = self.cfg["source"]
            incoming = os.path.join(os.path.dirname(live), ".restore-" + os.path.basename(live))
            shutil.copyfile(os.path.join(self.staging, DUMP, self.about["file"]), incoming)
            shutil.chown(incoming, self.cfg["app"], self.cfg["app"])
            os.chmod(incoming, 0o640)

    def forward(self) -> None:
        if self.kind == "sqlite":
            live = self.cfg["source"]
            folder, base = os.path.split(live)
            for suffix in ("-wal", "-shm", "-journal", ""):
                if os.path.exists(live + suffix):
                    self.move(live + suffix, f"{live}{suffix}.before-restore")
            self.move(os.path.join(folder, ".restore-" + base), live)
        elif self.kind == "postgresql":
            db = self.cfg["source"]
            terminate(db)
            psql(f'DROP DATABASE IF EXISTS "{db}_before_restore"')
            psql(f'ALTER DATABASE "{db}" RENAME TO "{db}_before_restore"')
            self.moves.append(("pg", db))
            psql(f'ALTER DATABASE "{db}_restore" RENAME TO "{db}"')
            self.moves.append(("pg", db + "_restore"))

    def move(self, src: str, dst: str) -> None:
        os.replace(src, dst)
        self.moves.append((src, dst))

    def back(self) -> None:
        db = self.cfg["source"]
        for src, dst in reversed(self.moves):
            if src == "pg":
                terminate(db)
                if dst == db + "_restore":
                    psql(f'ALTER DATABASE "{db}" RENAME TO "{db}_restore"')
                else:
                    psql(f'ALTER DATABASE "{db}_before_restore" RENAME TO "{db}"')
            else:
                os.replace(dst, src)
        self.moves.clear()

    def media(self) -> str | None:
        """The media folder made equal to the backup's; files it replaces or removes are kept
        in `backups/media-before-restore`. Where they were kept, or None without media."""
        staged = os.path.join(self.staging, "media")
        if not os.path.isdir(staged):
            return None
        aside = os.path.join(self.cfg["shared"], "backups", "media-before-restore")
        shutil.rmtree(aside, ignore_errors=True)
        run(["rsync", "-a", "--delete", "--backup", f"--backup-dir={aside}", staged + "/",
             os.path.join(self.cfg["shared"], "media") + "/"], what="rsync of the media")
        return aside


def terminate(db: str) -> None:
    psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")


def apply(cfg: dict, slot: str, migrate: str, health: str) -> int:
    """Swap the fetched backup in while nginx shows the maintenance page; if the database
    swap, the migration or the health check fails, the previous database goes back and the
    site serves as before."""
    app, flag = cfg["app"], cfg["maintenance_flag"]
    units = [f"{app}@{s}.{kind}" for s in ("a", "b") for kind in ("service", "socket")]
    start = ["systemctl", "start", f"{app}@{slot}.socket", f"{app}@{slot}.service"]
    swap = Swap(cfg)
    swap.prepare()
    began = time.monotonic()
    open(flag, "w").close()
    # Requests nginx let through just before the flag reach Gunicorn before it stops.
    time.sleep(1)
    step = "stop the app"
    try:
        run(["systemctl", "stop", *units], what="systemctl stop")
        step = "swap the database"
        swap.forward()
        step = "migrate"
        subprocess.run(migrate, shell=True, check=True)
        step = "start the app"
        run(start, what="systemctl start")
        step = "health check"
        subprocess.run(health, shell=True, check=True)
    except (Failure, OSError, subprocess.CalledProcessError) as error:
        log(f"restore: {step} failed ({error}); putting the previous database back")
        try:
            run(["systemctl", "stop", *units], what="systemctl stop")
            swap.back()
            run(start, what="systemctl start")
            subprocess.run(health, shell=True, check=True)
        finally:
            os.unlink(flag)
        raise Failure(f"restore failed at '{step}': {error}; the site serves the data it had "
                      "before") from None
    try:
        aside = swap.media()
    finally:
        os.unlink(flag)
    shutil.rmtree(cfg["staging"], ignore_errors=True)
    kept = {"sqlite": f"{cfg['source']}.before-restore",
            "postgresql": f"the database {cfg['source']}_before_restore"}.get(swap.kind)
    log(f"restore: {swap.about['name']} applied, maintenance page shown for "
        f"{time.monotonic() - began:.1f}s" + (f"; the replaced database is kept: {kept}" if kept else "")
        + (f", the media files it replaced in {aside}" if aside and os.path.isdir(aside) else ""))
    return 0


# -- a fleet's restore: the database on the db server, the app servers stopped by the deploy ---

BEFORE = "backups/db-before-restore.dump"  # inside `shared`: the fleet's data the restore replaced
REPLACED = "backups/restore-replaced"      # inside `shared`: the database holds the backup now


def replace(cfg: dict, migrate: str) -> int:
    """With every app server stopped: the fleet's database (on its db server) kept aside as a
    dump, replaced by the fetched backup in one transaction, and migrated to the current
    release. If the load or the migration fails, the kept dump goes back."""
    swap = Swap(cfg)
    if swap.kind != "postgresql" or not cfg["source"].startswith("/"):
        raise Failure("replace is for a fleet's PostgreSQL on its db server; use apply")
    shared, env_file = cfg["shared"], cfg["source"]
    before, marker = os.path.join(shared, BEFORE), os.path.join(shared, REPLACED)
    began = time.monotonic()
    dump_database("postgresql", env_file, before)
    step = "load the backup"
    try:
        load_exact(os.path.join(swap.staging, DUMP, swap.about["file"]), env_file=env_file)
        with open(marker, "w") as handle:
            handle.write(swap.about["name"] + "\n")
        step = "migrate"
        subprocess.run(migrate, shell=True, check=True)
    except (Failure, OSError, subprocess.CalledProcessError) as error:
        log(f"restore: {step} failed ({error}); putting the fleet's previous database back")
        load_exact(before, env_file=env_file)
        if os.path.exists(marker):
            os.unlink(marker)
        raise Failure(f"restore failed at '{step}': {error}; the fleet's database is as it "
                      "was before") from None
    log(f"restore: {swap.about['name']} loaded into the fleet's database and migrated "
        f"({time.monotonic() - began:.1f}s); the replaced data is kept: {before}")
    return 0


def put_back(cfg: dict) -> int:
    """Undo `replace` (the app servers stopped again first): the kept dump loaded back."""
    marker = os.path.join(cfg["shared"], REPLACED)
    if not os.path.exists(marker):
        log("restore: the fleet's database was not replaced; nothing to put back")
        return 0
    load_exact(os.path.join(cfg["shared"], BEFORE), env_file=cfg["source"])
    os.unlink(marker)
    log("restore: the fleet's previous database is back")
    return 0


def finish(cfg: dict) -> int:
    """Once every app server serves the restored database: the media made equal to the
    backup's (the shared uploads), the staging folder removed."""
    swap = Swap(cfg)
    aside = swap.media()
    shutil.rmtree(cfg["staging"], ignore_errors=True)
    marker = os.path.join(cfg["shared"], REPLACED)
    if os.path.exists(marker):
        os.unlink(marker)
    log(f"restore: {swap.about['name']} applied to the fleet"
        + (f"; the media files it replaced are in {aside}" if aside and os.path.isdir(aside) else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    global _log_file
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="the site's backup settings (JSON)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("dump")
    p.add_argument("--database", choices=("sqlite", "postgresql"), required=True)
    p.add_argument("--source", required=True, help="SQLite file or PostgreSQL database name")
    p.add_argument("--out", required=True)
    p = sub.add_parser("load")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--source", help="the environment file with DATABASE_URL")
    where.add_argument("--local", help="this server's PostgreSQL database (and role) of that name")
    p.add_argument("--dump", required=True)
    p = sub.add_parser("create")
    p.add_argument("--at", help="take the backup as of this UTC time (tests of the retention)")
    sub.add_parser("list")
    p = sub.add_parser("fetch")
    p.add_argument("name")
    p.add_argument("--where", choices=("server", "backup_server"), required=True)
    p = sub.add_parser("apply")
    p.add_argument("--slot", choices=("a", "b"), required=True)
    p.add_argument("--migrate", required=True, help="shell command: migrate the restored database")
    p.add_argument("--health", required=True, help="shell command: the app answers healthy")
    p = sub.add_parser("replace")
    p.add_argument("--migrate", required=True, help="shell command: migrate the restored database")
    sub.add_parser("put-back")
    sub.add_parser("finish")
    args = parser.parse_args(argv)
    try:
        if args.command == "dump":
            dump_database(args.database, args.source, args.out)
            return 0
        if args.command == "load":
            load_exact(args.dump, local=args.local or "", env_file=args.source or "")
            return 0
        with open(args.config) as handle:
            cfg = json.load(handle)
        _log_file = cfg.get("log")
        if args.command == "list":
            return list_backups(cfg)
        held = lock(cfg)
        try:
            if args.command == "create":
                at = (datetime.fromisoformat(args.at).replace(tzinfo=timezone.utc) if args.at
                      else datetime.now(timezone.utc))
                return create(cfg, at.replace(microsecond=0))
            if args.command == "fetch":
                return fetch(cfg, args.name, args.where)
            if args.command == "replace":
                return replace(cfg, args.migrate)
            if args.command == "put-back":
                return put_back(cfg)
            if args.command == "finish":
                return finish(cfg)
            return apply(cfg, args.slot, args.migrate, args.health)
        finally:
            held.close()
    except Failure as error:
        log(f"error: {error}")
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
