"""Which server does what. A server's `roles` (host data) say it: `app` servers serve the site,
the `db` server holds its PostgreSQL and the shared media, the `lb` server is the load balancer
in front, `backup` servers keep the backup copies. A single server is a fleet of one with every
role but the backup server's: it serves the site with its own database, and nginx faces the
clients itself.

The fleet of a run is the servers of the same site (`app_name`) among the hosts the run targets
(`--limit`); its layout is checked before any server is changed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pyinfra import host
from pyinfra.api import operation

from .common import Stop
from .settings import BY_NAME, Settings

ROLES = ("app", "db", "lb", "backup")
GROUPS = {role: f"{role}_servers" for role in ROLES}  # the pyinfra groups of inventory.py


def roles_of(host) -> set[str]:
    """The roles of a host: its `roles` data, else its inventory groups, else `app`."""
    roles = set(host.data.get("roles") or [])
    roles |= {role for role, group in GROUPS.items() if group in host.groups}
    return roles or {"app"}


def is_app_server(host) -> bool:
    return "app" in roles_of(host)


def is_db_server(host) -> bool:
    return "db" in roles_of(host)


def is_lb_server(host) -> bool:
    return "lb" in roles_of(host)


def is_backup_server(host) -> bool:
    return "backup" in roles_of(host)


def address_of(host) -> str:
    """The address the site's other servers reach this one at."""
    return host.data.get("private_address") or host.name


@dataclass(frozen=True)
class Fleet:
    """The servers of one site in this run, by role (inventory order)."""

    apps: list = field(default_factory=list)
    dbs: list = field(default_factory=list)
    lbs: list = field(default_factory=list)
    backups: list = field(default_factory=list)

    @classmethod
    def of(cls, hosts, app_name: str) -> Fleet:
        default = BY_NAME["app_name"].default
        mine = [h for h in hosts if (h.data.get("app_name") or default) == app_name]
        return cls(apps=[h for h in mine if is_app_server(h)],
                   dbs=[h for h in mine if is_db_server(h)],
                   lbs=[h for h in mine if is_lb_server(h)],
                   backups=[h for h in mine if is_backup_server(h)])

    @property
    def several(self) -> bool:
        """More than one server: the roles' steps must wait for each other."""
        return len({h.name for h in (*self.apps, *self.dbs, *self.lbs, *self.backups)}) > 1

    @property
    def db(self):
        """The fleet's database server, if it has one (else each app server holds its own)."""
        return self.dbs[0] if self.dbs else None

    @property
    def lb(self):
        return self.lbs[0] if self.lbs else None

    @property
    def first_app(self):
        """The app server that runs what runs once for the site (migrate)."""
        return self.apps[0] if self.apps else None

    def runs_once(self, host, s: Settings) -> bool:
        """Whether this app server runs the site's once-only steps (migrate, the backup before
        it): always the same one, the first app server (or each, with `migrate_once` off)."""
        return is_app_server(host) and (not s.migrate_once or host.name == self.first_app.name)

    @property
    def shared_media(self) -> bool:
        """Uploads live on the db server, mounted by every app server (several app servers)."""
        return self.db is not None and len(self.apps) > 1

    def settings_for(self, host, s: Settings) -> Settings:
        """The settings as this server applies them: an app server behind the load balancer
        leaves TLS to it and answers it only."""
        if not is_app_server(host):
            return s
        if self.lb is not None:
            s = replace(s, balancers=tuple(self.lb_addresses()))
        if self.db is not None:
            s = replace(s, database_server=address_of(self.db))
        return s

    def app_addresses(self) -> list[str]:
        return [address_of(h) for h in self.apps]

    def lb_addresses(self) -> list[str]:
        return [address_of(h) for h in self.lbs]

    def problems(self, s: Settings) -> list[str]:
        """What makes this layout unable to serve the site; empty when it can."""
        problems = []
        if not self.apps:
            problems.append("no app server: give at least one server the role 'app'")
        if len(self.dbs) > 1:
            problems.append(f"{len(self.dbs)} db servers ({names(self.dbs)}): at most one")
        if len(self.lbs) > 1:
            problems.append(f"{len(self.lbs)} load balancers ({names(self.lbs)}): at most one")
        both = [h for h in self.lbs if is_app_server(h)]
        if both:
            problems.append(f"{names(both)}: the roles 'lb' and 'app' cannot share a server "
                            "(both answer on the web ports)")
        if self.dbs and s.database != "postgresql":
            problems.append(f"database: {s.database!r} with a db server ({names(self.dbs)}); "
                            "allowed: 'postgresql'")
        if len(self.apps) > 1:
            if s.database == "sqlite":
                problems.append(f"database: 'sqlite' with {len(self.apps)} app servers "
                                f"({names(self.apps)}) would give each its own database; allowed: "
                                "'postgresql' with a db server, or 'url'")
            elif s.database == "postgresql" and not self.dbs:
                problems.append(f"database: 'postgresql' with {len(self.apps)} app servers and no "
                                "db server would give each its own database; add a server with "
                                "the role 'db'")
            if not self.lbs:
                problems.append(f"{len(self.apps)} app servers and no load balancer: add a server "
                                "with the role 'lb'")
        return problems


def names(hosts) -> str:
    return ", ".join(h.name for h in hosts)


def holds_database(host, s: Settings, fleet: Fleet | None = None) -> bool:
    """Whether this server's disk holds the site's database: the fleet's db server, or an app
    server with SQLite or a local PostgreSQL (`database: url` lives elsewhere)."""
    if fleet is not None and fleet.db is not None:
        return host.name == fleet.db.name
    return is_app_server(host) and s.database in ("sqlite", "postgresql")


def takes_backups(host, s: Settings, fleet: Fleet | None = None) -> bool:
    """Whether this server runs the backup timer: the app server holding the database; in a
    fleet with a db server, the first app server (`pg_dump` over TLS, the shared media); without
    one (`database: url`), the app server, for the media."""
    if not s.backups:
        return False
    if fleet is not None and fleet.db is not None:
        # The first app server: it reaches the database over TLS and sees the shared media.
        return host.name == fleet.first_app.name
    return is_app_server(host)


def app_servers(inventory) -> list:
    """The app servers of the inventory (active in this run or not)."""
    return [h for h in inventory if is_app_server(h)]


def database_port(s: Settings) -> int | None:
    """The TCP port of the database this server holds, if it holds one that listens."""
    return 5432 if s.database == "postgresql" else None


def database_clients(s: Settings, fleet: Fleet | None = None) -> list[str]:
    """Addresses allowed to the database port besides loopback: the fleet's app servers, and
    `database_clients`."""
    clients = list(s.database_clients)
    if fleet is not None and fleet.db is not None:
        clients += [a for a in fleet.app_addresses() if a not in clients]
    return clients


def fleet_of(state, s: Settings) -> Fleet:
    """The site's servers this run targets (inventory order; `--limit` applies; a server that
    does not answer still counts), or one message and no change when their layout cannot work."""
    fleet = Fleet.of([h for h in state.inventory if state.is_host_in_limit(h)], s.app_name)
    problems = fleet.problems(s)
    if problems:
        raise Stop(f"Layout error, nothing was changed. {s.app_name}: " + "; ".join(problems))
    return fleet


@operation()
def phase(title: str):
    """
    A point every server of the fleet reaches together: what comes before it is done on every
    server (the database server's role and password, say) before any server goes on. pyinfra
    keeps each server's steps in order; this keeps the roles' in order too.

    + title: what is done by then
    """
    host.noop(title)
    yield from ()
