"""The database (runbook B3, B5): SQLite in `shared/`, an existing server by URL, or PostgreSQL
installed on this server with its role and password made here."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from pyinfra import host
from pyinfra.api import FactBase, operation

from .common import JsonState, config_file, render, sh
from .settings import Settings


class PostgresReady(FactBase):
    """
    Whether the app's PostgreSQL role and database exist and its DATABASE_URL file is written.
    """

    def command(self, database: str, env_file: str) -> str:
        query = f"SELECT 1 FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = '{database}' AND r.rolname = '{database}'"
        return (f"[ -f {sh(env_file)} ] && command -v psql >/dev/null && "
                f"runuser -u postgres -- psql -tAc {sh(query)} 2>/dev/null || true")

    def process(self, output):
        return bool(output and output[0].strip() == "1")


@operation()
def postgresql(s: Settings):
    """
    A role and database named after the app in the local PostgreSQL (listening on localhost
    only, Debian's default), with a password generated on the server and kept in a root-only
    environment file; the password never reaches the controller or the output.

    + s: settings
    """
    env_file = f"{s.config_dir}/database.env"
    if s.database != "postgresql":
        host.noop(f"database is {s.database}")
        return
    if host.get_fact(PostgresReady, database=s.app_name, env_file=env_file):
        host.noop(f"PostgreSQL database {s.app_name} exists")
        return
    name = s.app_name
    yield "systemctl enable -q --now postgresql"
    # The password exists only on the server: made here, given to psql on stdin, kept in a file.
    yield (
        "umask 077 && pw=$(head -c 24 /dev/urandom | base64 -w0 | tr '+/' '-_') && "
        + role_and_database(name) + " && "
        f"printf 'DATABASE_URL=postgres://{name}:%s@localhost:5432/{name}\\n' \"$pw\" > {sh(env_file)} && "
        + sh("chgrp", name, env_file) + " && " + sh("chmod", "640", env_file)
    )


# -- the database server of a fleet -------------------------------------------------------------

SERVER_SECRETS = "/etc/djdeploy"  # on the db server: one root-only file per site
HBA_BEGIN = "# djdeploy: begin (written by the deploy)"
HBA_END = "# djdeploy: end"


def password_file(s: Settings) -> str:
    return f"{SERVER_SECRETS}/{s.app_name}-database.env"


class PostgresServer(FactBase):
    """
    The cluster's configuration folder (Debian's `/etc/postgresql/<version>/main`) and the text
    of its pg_hba.conf; empty before PostgreSQL is installed.
    """

    default = dict

    def command(self) -> str:
        return ("d=$(ls -d /etc/postgresql/*/main 2>/dev/null | sort -V | tail -1); "
                "[ -n \"$d\" ] || exit 0; echo \"$d\"; cat \"$d/pg_hba.conf\"")

    def process(self, output):
        return {"dir": output[0], "hba": "\n".join(output[1:]) + "\n"} if output else {}


def hba_text(current: str, database: str, role: str, clients: list[str]) -> str:
    """pg_hba.conf with the deploy's block: the site's role may log in to its database from the
    app servers only, over TLS, with a SCRAM password. Other remote connections match no line
    and are refused (plain text included)."""
    kept, inside = [], False
    for line in current.rstrip("\n").split("\n"):
        if line == HBA_BEGIN:
            inside = True
        elif line == HBA_END:
            inside = False
        elif not inside:
            kept.append(line)
    block = [HBA_BEGIN] + [f"hostssl {database} {role} {address}/32 scram-sha-256"
                           for address in clients] + [HBA_END]
    return "\n".join(kept + block) + "\n"


@operation()
def server(s: Settings, address: str, clients: list[str]):
    """
    PostgreSQL as the fleet's database server: listening on its private address (and
    localhost), TLS on (Debian's self-signed certificate unless one is given), SCRAM passwords;
    the site's role and database, with a password made here and kept root-only.

    + s: settings
    + address: this server's private address
    + clients: the app servers' private addresses
    """
    cluster = host.get_fact(PostgresServer)
    folder = cluster.get("dir", "/etc/postgresql/<version>/main")
    conf = render("postgresql.conf.j2", address=address, folder=folder,
                  certificate=bool(s.database_tls_certificate))
    changed_conf = False
    if s.database_tls_certificate:
        for local, remote, mode in ((s.database_tls_certificate, f"{folder}/djdeploy.crt", 0o644),
                                    (s.database_tls_key, f"{folder}/djdeploy.key", 0o600)):
            for command in config_file._inner(path=remote, content=Path(local).read_text(),
                                              user="postgres", group="postgres", mode=mode,
                                              secret=remote.endswith(".key")):
                changed_conf = True
                yield command
    for command in config_file._inner(path=f"{folder}/conf.d/djdeploy.conf", content=conf):
        changed_conf = True
        yield command
    hba = hba_text(cluster.get("hba", ""), s.app_name, s.app_name, clients)
    changed_hba = False
    for command in config_file._inner(path=f"{folder}/pg_hba.conf", content=hba,
                                      user="postgres", group="postgres", mode=0o640):
        changed_hba = True
        yield command
    if changed_conf:
        yield "systemctl enable -q postgresql && systemctl restart postgresql"
    elif changed_hba:
        yield "systemctl reload postgresql"
    name = s.app_name
    if host.get_fact(PostgresReady, database=name, env_file=password_file(s)):
        if not (changed_conf or changed_hba):
            host.noop(f"PostgreSQL serves database {name} to {len(clients)} app server(s)")
        return
    yield "systemctl enable -q --now postgresql"
    # The password exists only on the servers: made here, given to psql on stdin, kept in a
    # root-only file; the app servers get it through the deploy's memory, never its output.
    yield (
        f"mkdir -p -m 700 {SERVER_SECRETS} && umask 077 && "
        "pw=$(head -c 24 /dev/urandom | base64 -w0 | tr '+/' '-_') && "
        + role_and_database(name) + " && "
        f"printf 'PASSWORD=%s\\n' \"$pw\" > {sh(password_file(s))}"
    )


class ServerPassword(FactBase):
    """
    The site's database password as the db server keeps it (read into the deploy's memory
    only, to write the app servers' environment; never printed).
    """

    def command(self, path: str) -> str:
        return f"sed -n 's/^PASSWORD=//p' {sh(path)} 2>/dev/null || true"

    def process(self, output):
        return output[0].strip() if output else ""


def remote_url(s: Settings, address: str, password: str) -> str:
    mode = "verify-full" if s.database_tls_ca else "require"
    extra = f"&sslrootcert={s.config_dir}/database-ca.crt" if s.database_tls_ca else ""
    return (f"postgres://{s.app_name}:{quote(password, safe='')}@{address}:5432/{s.app_name}"
            f"?sslmode={mode}{extra}")


def role_and_database(name: str) -> str:
    """Shell: the PostgreSQL role `name` with the password in `$pw` (made or reset), and its
    database `name` (made when missing)."""
    return (
        f"if runuser -u postgres -- psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='{name}'\" | grep -q 1; "
        f"then printf \"ALTER ROLE {name} LOGIN PASSWORD '%s';\" \"$pw\"; "
        f"else printf \"CREATE ROLE {name} LOGIN PASSWORD '%s';\" \"$pw\"; fi "
        "| runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 && "
        f"{{ runuser -u postgres -- psql -tAc \"SELECT 1 FROM pg_database WHERE datname='{name}'\" | grep -q 1 || "
        f"runuser -u postgres -- createdb -O {name} {name}; }}"
    )


@operation()
def connection(s: Settings, db_host, address: str):
    """
    The app server's `database.env` pointing at the fleet's database server over TLS, with the
    password the db server made (root:app 0640, never printed or diffed).

    + s: settings
    + db_host: the db server (pyinfra host)
    + address: the db server's private address, as the app servers reach it
    """
    if s.database_tls_ca:
        yield from config_file._inner(path=f"{s.config_dir}/database-ca.crt",
                                      content=Path(s.database_tls_ca).read_text(),
                                      group=s.app_name, mode=0o640)
    password = db_host.get_fact(ServerPassword, path=password_file(s))
    if not password:
        host.noop("the database server makes the password first")
        return
    yield from config_file._inner(path=f"{s.config_dir}/database.env",
                                  content=f"DATABASE_URL={remote_url(s, address, password)}\n",
                                  group=s.app_name, mode=0o640, secret=True)


class Reachable(JsonState):
    """
    Whether the fleet's PostgreSQL accepts connections from this server (`pg_isready`):
    "ok" or "FAIL".
    """

    def command(self, address: str) -> str:
        return (f"if pg_isready -q -t 5 -h {sh(address)} -p 5432; then echo '\"ok\"'; "
                "else echo '\"FAIL\"'; fi")
