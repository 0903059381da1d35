"""Which server does what: app servers serve the site, the server that holds the database takes
its backups, backup servers keep the copies. A single server is a fleet of one with every role
but the backup server's."""

from __future__ import annotations

from .settings import Settings

APP_SERVERS = "app_servers"  # the groups inventory.py defines
BACKUP_SERVERS = "backup_servers"


def is_app_server(host) -> bool:
    # A host of no group (an inventory that is a bare list) is an app server.
    return APP_SERVERS in host.groups or BACKUP_SERVERS not in host.groups


def is_backup_server(host) -> bool:
    return BACKUP_SERVERS in host.groups


def holds_database(host, s: Settings) -> bool:
    """Whether this server's disk holds the site's database: today every app server with SQLite
    or a local PostgreSQL (`database: url` lives elsewhere)."""
    return is_app_server(host) and s.database in ("sqlite", "postgresql")


def takes_backups(host, s: Settings) -> bool:
    """Whether this server runs the backup timer: the one holding the database, and an app
    server with `database: url` for its media."""
    return s.backups and is_app_server(host)


def app_servers(inventory) -> list:
    """The app servers of the inventory (active in this run or not)."""
    return [h for h in inventory if is_app_server(h)]


def database_port(s: Settings) -> int | None:
    """The TCP port of the database this server holds, if it holds one that listens."""
    return 5432 if s.database == "postgresql" else None


def database_clients(s: Settings) -> list[str]:
    """Addresses allowed to the database port besides loopback: the other app servers of a
    fleet (`database_clients`); a single server needs none."""
    return list(s.database_clients)
