"""The database (runbook B3, B5): SQLite in `shared/`, an existing server by URL, or PostgreSQL
installed on this server with its role and password made here."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase, operation

from .common import sh
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
        f"if runuser -u postgres -- psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='{name}'\" | grep -q 1; "
        f"then printf \"ALTER ROLE {name} LOGIN PASSWORD '%s';\" \"$pw\"; "
        f"else printf \"CREATE ROLE {name} LOGIN PASSWORD '%s';\" \"$pw\"; fi "
        "| runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 && "
        f"{{ runuser -u postgres -- psql -tAc \"SELECT 1 FROM pg_database WHERE datname='{name}'\" | grep -q 1 || "
        f"runuser -u postgres -- createdb -O {name} {name}; }} && "
        f"printf 'DATABASE_URL=postgres://{name}:%s@localhost:5432/{name}\\n' \"$pw\" > {sh(env_file)} && "
        + sh("chgrp", name, env_file) + " && " + sh("chmod", "640", env_file)
    )
