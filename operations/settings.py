"""The deploy's settings: one typed, documented schema, validated before any host is touched."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Callable

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
WSGI_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(:[A-Za-z_][A-Za-z0-9_]*)?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HOST_NAME_RE = re.compile(r"^(\*\.)?[A-Za-z0-9][A-Za-z0-9.-]*$")
SIZE_RE = re.compile(r"^\d+[kKmMgG]?$")
REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]*$")
# [user@]host[:port] of an SSH server.
SSH_TARGET_RE = re.compile(r"^([a-z_][a-z0-9_-]{0,31}@)?[A-Za-z0-9][A-Za-z0-9.-]*(:\d{1,5})?$")
# A systemd calendar expression (OnCalendar=): checked loosely here, by systemd on the server.
CALENDAR_RE = re.compile(r"^[A-Za-z0-9*:,./~ -]+$")
# An IPv4/IPv6 address or network.
ADDRESS_RE = re.compile(r"^[0-9A-Fa-f.:]+(/\d{1,3})?$")
PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SettingsError(ValueError):
    """A setting has a value that is not allowed. The message names it and says what is."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    kind: type | tuple = str
    allowed: str = ""
    check: Callable[[Any], bool] | None = None
    secret: bool = False


def _regex(pattern: re.Pattern) -> Callable[[Any], bool]:
    return lambda value: bool(pattern.match(value))


def _port(value: int) -> bool:
    return 1 <= value <= 65535


def _choice(*options: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda value: value in options), "one of " + ", ".join(repr(o) for o in options)


def _every(pattern: re.Pattern) -> Callable[[Any], bool]:
    return lambda values: all(isinstance(v, str) and pattern.match(v) for v in values)


def _env_mapping(values: dict) -> bool:
    return all(ENV_NAME_RE.match(k) and isinstance(v, (str, int)) for k, v in values.items())


def _build_constraints(value: dict) -> bool:
    return all(PACKAGE_RE.match(package) and isinstance(tools, dict) and tools
               and all(PACKAGE_RE.match(tool) and isinstance(version, str) and version.strip()
                       for tool, version in tools.items())
               for package, tools in value.items())


def _not_blank(value: str) -> bool:
    return bool(value.strip())


def _names(value) -> bool:
    names = [value] if isinstance(value, str) else value
    return isinstance(names, list) and bool(names) and all(
        isinstance(n, str) and ENV_NAME_RE.match(n) for n in names)


# The deploy's values the app can read from its environment, and the names it gets them under
# unless `env_names` says otherwise (the usual spellings of Django projects).
ENV_VALUES = {
    "secret_key": ["SECRET_KEY", "DJANGO_SECRET_KEY"],
    "debug": ["DEBUG", "DJANGO_DEBUG"],
    "allowed_hosts": ["ALLOWED_HOSTS", "DJANGO_ALLOWED_HOSTS"],
    "csrf_trusted_origins": ["CSRF_TRUSTED_ORIGINS", "DJANGO_CSRF_TRUSTED_ORIGINS"],
    "database_url": ["DATABASE_URL"],
    "db_name": ["DB_NAME"],
    "db_user": ["DB_USER"],
    "db_password": ["DB_PASSWORD"],
    "db_host": ["DB_HOST"],
    "db_port": ["DB_PORT"],
    "static_root": ["STATIC_ROOT"],
    "media_root": ["MEDIA_ROOT"],
    "data_dir": ["DATA_DIR"],
    "https": ["HTTPS"],
}
# Those that exist only on the server (made there, or holding a password).
SECRET_ENV_VALUES = ("secret_key", "database_url", "db_name", "db_user", "db_password", "db_host",
                     "db_port")


SOURCE_MODE = _choice("git", "upload")
DATABASE = _choice("sqlite", "postgresql", "url")
TLS = _choice("off", "self-signed", "files")
RESTORE_FROM = _choice("auto", "server", "backup_server")

SCHEMA: tuple[Setting, ...] = (
    # The application
    Setting("app_name", "bizsite", "Name of the site: system user and group, folder "
            "`/srv/<app_name>`, systemd units and nginx site are named after it.",
            allowed="lower-case letters, digits and _, starting with a letter, at most 31 characters",
            check=_regex(NAME_RE)),
    Setting("repo_url", "", "Git repository of the application (`git` mode: a URL the server "
            "clones; `upload` mode: a git checkout on the controller).",
            allowed="a non-empty git URL or path", check=_not_blank),
    Setting("revision", "main", "Branch, tag or commit to deploy.",
            allowed="a git branch, tag or commit name", check=_regex(REF_RE)),
    Setting("source_mode", "git", "`git`: the server clones `repo_url` itself. `upload`: the controller "
            "packs `revision` from `repo_url` and uploads it (servers without access to the git host).",
            allowed=SOURCE_MODE[1], check=SOURCE_MODE[0]),
    Setting("deploy_key", "", "Path on the controller to an SSH private key the server uses to clone "
            "`repo_url` (`git` mode). Uploaded readable by root only; never printed.", secret=True),
    Setting("project_subdir", "", "Folder of the Django project (where `manage.py` is) inside the "
            "repository. Empty: found (the root's manage.py, or the only one in the tree).",
            allowed="a relative path without `..`",
            check=lambda v: not v.startswith("/") and ".." not in v.split("/")),
    Setting("settings_module", "", "`DJANGO_SETTINGS_MODULE` of the project. Empty: found (the "
            "default the WSGI module sets, else manage.py's).",
            allowed="empty or a dotted Python module path", check=lambda v: v == "" or bool(MODULE_RE.match(v))),
    Setting("wsgi_app", "", "WSGI application Gunicorn serves. Empty: found (`WSGI_APPLICATION` "
            "of the settings, else `<package>/wsgi.py`).",
            allowed="empty or `module.path:callable`", check=lambda v: v == "" or bool(WSGI_RE.match(v))),
    Setting("poetry_groups", [], "Extra Poetry dependency groups to install besides `main`.",
            kind=list, allowed="a list of group names", check=_every(ENV_NAME_RE)),
    Setting("poetry_extras", [], "Poetry extras to install (some projects keep gunicorn in an extra).",
            kind=list, allowed="a list of extra names", check=_every(re.compile(r"^[A-Za-z0-9_.-]+$"))),
    Setting("poetry_build_constraints", {}, "Build tools' versions for dependencies Poetry "
            "builds from source, for an older lock whose packages no longer build with today's "
            "tools: a mapping of package to a mapping of build requirement to version, e.g. "
            "`pyyaml: {cython: \"<3.0\"}`. Put into the release's `pyproject.toml` as "
            "`[tool.poetry.build-constraints]` (not part of the lock's hash; the repository is "
            "untouched).",
            kind=dict, allowed="a mapping of package name to a mapping of build requirement to "
            "version constraint", check=_build_constraints),
    Setting("env_names", {}, "Environment variable names under which the app gets the deploy's "
            "values, for projects that read other names: a mapping of value to a name or list of "
            "names, e.g. `secret_key: DJANGO_SECRET_KEY`. Values: " + ", ".join(f"`{k}`" for k in ENV_VALUES)
            + ". Unlisted values keep their default names (see README).",
            kind=dict, allowed="a mapping of " + ", ".join(ENV_VALUES) + " to a name or a list of names",
            check=lambda v: all(k in ENV_VALUES and _names(n) for k, n in v.items())),
    Setting("dotenv", False, "Also give the project a `.env` file in its folder with the whole "
            "environment (for projects that read one: python-dotenv, django-environ); readable by "
            "root and the app only.", kind=bool),
    Setting("env", {}, "Extra environment variables for the application (not secret).",
            kind=dict, allowed="a mapping of NAME to string", check=_env_mapping),
    Setting("secret_env", {}, "Extra secret environment variables; kept in a root-only file and "
            "never printed.", kind=dict, allowed="a mapping of NAME to string", check=_env_mapping,
            secret=True),
    Setting("build_commands", [], "Shell commands run in the project folder of a new release, as "
            "the app user, before `collectstatic` (front-end builds: `npm ci && npm run build`).",
            kind=list, allowed="a list of command lines",
            check=lambda v: all(isinstance(c, str) and c.strip() for c in v)),
    Setting("nodejs", False, "Install Debian's Node.js and npm (for `build_commands`).", kind=bool),
    Setting("npm_registry_url", "", "npm registry the build uses (internal mirror). Empty: npm's "
            "default.", allowed="empty or an http(s) URL",
            check=lambda v: v == "" or v.startswith(("http://", "https://"))),
    Setting("gunicorn_version", "23.0.0", "Gunicorn installed into the release's `.venv` when the "
            "project's own dependencies have none (the project's own always wins).",
            allowed="a version like 23.0.0", check=_regex(VERSION_RE)),
    Setting("manage_commands", [], "Management commands to run after `migrate` on every deploy, for "
            "example `createcachetable`.", kind=list, allowed="a list of command lines",
            check=lambda v: all(isinstance(c, str) and c.strip() for c in v)),
    # Runtime: Python (runbook R3-R7)
    Setting("python_version", "3.10.6", "CPython version pyenv builds (runbook R3).",
            allowed="a version like 3.10.6", check=_regex(VERSION_RE)),
    Setting("pyenv_git_url", "https://github.com/pyenv/pyenv.git", "Where the server clones pyenv from.",
            allowed="a non-empty git URL", check=_not_blank),
    Setting("pyenv_ref", "v2.6.30", "pyenv tag or commit to check out.",
            allowed="a git tag, branch or commit", check=_regex(REF_RE)),
    Setting("pyenv_root", "/opt/pyenv", "System-wide pyenv root.",
            allowed="an absolute path", check=lambda v: v.startswith("/")),
    Setting("python_build_mirror_url", "", "`PYTHON_BUILD_MIRROR_URL` for pyenv: a mirror serving "
            "CPython tarballs by their sha256 (python.org unreachable)."),
    Setting("python_build_env", {}, "Extra environment for `pyenv install` (for example "
            "`_PYTHON_BUILD_FORCE_SKIP_XZ: \"1\"` when the mirror serves .tgz files).",
            kind=dict, allowed="a mapping of NAME to string", check=_env_mapping),
    Setting("python_source_tarball", "", "Path on the controller to a CPython source tarball "
            "(`Python-X.Y.Z.tgz`); uploaded into pyenv's cache, pyenv still verifies its checksum."),
    Setting("poetry_version", "2.5.1", "Poetry version, installed in its own venv under `/opt/poetry`.",
            allowed="a version like 2.5.1", check=_regex(VERSION_RE)),
    Setting("artifact_cache", ".artifacts", "Folder on the controller (relative to this project's "
            "folder, or absolute) where CPython and Poetry, once built on a server, are kept as "
            "artifacts (`<name>.tar.zst` and its manifest `<name>.json`) for the other servers of "
            "the same Debian release and architecture. Empty: no cache, every server builds its own.",
            allowed="empty or a folder path", check=lambda v: "\n" not in v),
    Setting("artifact_url", "", "An internal HTTP(S) folder the servers download artifacts from "
            "directly (`<artifact_url>/<name>.json` and `.tar.zst`), tried before building. Empty: "
            "none.", allowed="empty or an http(s) URL",
            check=lambda v: v == "" or v.startswith(("http://", "https://"))),
    Setting("package_index_url", "", "A PyPI-compatible *simple* index (internal mirror: Nexus, "
            "Artifactory, devpi). Used by pip and, via `poetry-plugin-pypi-mirror`, by Poetry. "
            "Empty: the public index.", allowed="empty or an http(s) URL",
            check=lambda v: v == "" or v.startswith(("http://", "https://"))),
    Setting("extra_ca_certificates", [], "Paths on the controller of PEM CA certificates the servers "
            "must trust (corporate proxy, internal mirror).", kind=list,
            allowed="a list of file paths", check=lambda v: all(isinstance(p, str) and p for p in v)),
    Setting("apt_packages", [], "Extra Debian packages to install.", kind=list,
            allowed="a list of package names", check=_every(re.compile(r"^[a-z0-9][a-z0-9+.-]+$"))),
    # Database (runbook B3, B5)
    Setting("database", "sqlite", "`sqlite`: a file in `shared/data`. `postgresql`: PostgreSQL "
            "installed on this server (or on the fleet's db server), role and password made there. "
            "`url`: an existing server given by `database_url`.", allowed=DATABASE[1],
            check=DATABASE[0]),
    Setting("database_url", "", "`DATABASE_URL` when `database` is `url`; never printed.", secret=True),
    Setting("migrate_once", True, "Run `migrate` on the first server only (servers share a database).",
            kind=bool),
    Setting("database_tls_certificate", "", "Fleet: path on the controller of the db server's "
            "certificate (PEM). Empty: Debian's self-signed one, and the app servers require TLS "
            "without checking it."),
    Setting("database_tls_key", "", "Fleet: path on the controller of that certificate's key; "
            "uploaded readable by postgres only.", secret=True),
    Setting("database_tls_ca", "", "Fleet: path on the controller of the CA that signed the db "
            "server's certificate: the app servers then check it (`sslmode=verify-full`)."),
    # Several servers (a fleet): per server, in inventory.py's SERVERS
    Setting("roles", ["app"], "Per server: what it does: `app` (serves the site), `db` (the "
            "fleet's PostgreSQL and shared media), `lb` (HAProxy in front), `backup` (keeps the "
            "backup copies). One server with `app` alone is the one-server layout.", kind=list,
            allowed="a list of app, db, lb, backup",
            check=lambda v: bool(v) and all(r in ("app", "db", "lb", "backup") for r in v)),
    Setting("private_address", "", "Per server: the address the site's other servers reach it at "
            "(PostgreSQL, HAProxy, firewall rules). Empty: its name in the inventory.",
            allowed="empty or an IP address or host name",
            check=lambda v: v == "" or bool(HOST_NAME_RE.match(v))),
    Setting("canary", "", "Fleet updates and rollbacks: the app server that switches first, "
            "alone, and is checked through the load balancer before the others switch. Empty: "
            "the first app server.", allowed="empty or the name of an app server",
            check=lambda v: v == "" or bool(HOST_NAME_RE.match(v))),
    Setting("batch_size", 0, "Fleet updates and rollbacks: how many app servers switch together "
            "after the canary; 0: all of them at once.", kind=int,
            allowed="a whole number from 0 to 100", check=lambda v: 0 <= v <= 100),
    # Web: Gunicorn and nginx (runbook B7-B9)
    Setting("server_names", [], "Host names nginx answers for (`server_name`) and Django's "
            "`ALLOWED_HOSTS`; requests for other names are dropped. Empty: the server's inventory name.",
            kind=list, allowed="a list of host names, at least one without a wildcard",
            check=lambda v: _every(HOST_NAME_RE)(v) and (not v or any("*" not in n for n in v))),
    Setting("http_port", 80, "Port nginx listens on for HTTP.", kind=int,
            allowed="a port number from 1 to 65535", check=_port),
    Setting("https_port", 443, "Port nginx listens on for HTTPS (with `tls` on).", kind=int,
            allowed="a port number from 1 to 65535", check=_port),
    Setting("tls", "off", "`off`; `self-signed`: a certificate made on the server; `files`: "
            "`tls_certificate` and `tls_key` from the controller.", allowed=TLS[1], check=TLS[0]),
    Setting("tls_certificate", "", "Path on the controller of the PEM certificate chain (`tls: files`)."),
    Setting("tls_key", "", "Path on the controller of the PEM private key (`tls: files`); uploaded "
            "readable by root only.", secret=True),
    Setting("client_max_body_size", "10m", "Largest request body nginx accepts.",
            allowed="a size like 10m, 512k or 1g", check=_regex(SIZE_RE)),
    Setting("gunicorn_workers", 0, "Gunicorn worker processes; 0 means 2 x cores + 1.", kind=int,
            allowed="a whole number from 0 to 64", check=lambda v: 0 <= v <= 64),
    Setting("gunicorn_timeout", 30, "Seconds before a silent worker is restarted.", kind=int,
            allowed="a whole number from 1 to 3600", check=lambda v: 1 <= v <= 3600),
    Setting("health_check_path", "", "Path that answers 200 when the site works; gates every "
            "switch. Empty: the deploy's own check `/_djdeploy/health` (Django set up, database "
            "reachable and migrated).", allowed="empty or a path starting with /",
            check=lambda v: v == "" or v.startswith("/")),
    Setting("health_timeout", 30, "Seconds a new release has to become healthy.", kind=int,
            allowed="a whole number from 1 to 600", check=lambda v: 1 <= v <= 600),
    # Releases (update, rollback)
    Setting("keep_releases", 5, "Good releases kept on the server.", kind=int,
            allowed="a whole number from 2 to 100", check=lambda v: 2 <= v <= 100),
    Setting("break_lock", False, "Take the deploy lock even though another run holds it (only "
            "when that run is known to be gone).", kind=bool),
    Setting("rollback_to", "", "rollback.py: the revision (commit or its first characters) to go "
            "back to; empty for the release before the current one.",
            allowed="empty or a commit id", check=lambda v: v == "" or bool(re.match(r"^[0-9a-f]{4,40}$", v))),
    Setting("restore_backup", False, "rollback.py: also restore the database backup taken before "
            "the update being undone (data written since is lost).", kind=bool),
    # Backups (backup.py, restore.py, the nightly timer)
    Setting("backups", True, "Scheduled backups of the database and `shared/media` (borg, verified "
            "after writing) by a systemd timer on the server that holds the database.", kind=bool),
    Setting("backup_schedule", "*-*-* 02:30:00", "When the backup timer runs (systemd `OnCalendar=`, "
            "server time).", allowed="a systemd calendar expression such as daily or *-*-* 02:30:00",
            check=_regex(CALENDAR_RE)),
    Setting("backup_keep_daily", 7, "Backups kept: the last one of each of this many days.", kind=int,
            allowed="a whole number from 1 to 1000", check=lambda v: 1 <= v <= 1000),
    Setting("backup_keep_weekly", 4, "Backups kept besides: the last one of each of this many weeks.",
            kind=int, allowed="a whole number from 0 to 1000", check=lambda v: 0 <= v <= 1000),
    Setting("backup_keep_monthly", 6, "Backups kept besides: the last one of each of this many months.",
            kind=int, allowed="a whole number from 0 to 1000", check=lambda v: 0 <= v <= 1000),
    Setting("backup_server", "", "`[user@]host[:port]` of the backup server every backup is copied to "
            "over SSH (user `djbackup` by default); empty: backups stay on the server only. A server "
            "listed in `BACKUP_SERVERS` of inventory.py is set up by deploy.py.",
            allowed="empty or [user@]host[:port]", check=lambda v: v == "" or bool(SSH_TARGET_RE.match(v))),
    Setting("backup_ssh_key", "", "Path on the controller of the SSH private key the servers push "
            "backups with (its `.pub` beside it); the backup server lets this key reach only the "
            "site's repository. Uploaded readable by root only; never printed.", secret=True),
    Setting("backup_passphrase", "", "Encrypts the backups at rest (borg `repokey-blake2`). Keep it "
            "off the servers too (a password safe): without it no backup can be read. Empty: "
            "not encrypted, still tamper-evident (`authenticated-blake2`). Never printed.", secret=True),
    Setting("restore_name", "", "restore.py: the backup to restore (a name that backup.py and "
            "status.py print); empty: the latest backup of this server.",
            allowed="empty or a backup name", check=lambda v: v == "" or bool(re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", v))),
    Setting("restore_from", "auto", "restore.py: `server` (the copy on the server), `backup_server`, "
            "or `auto`: the server's copy when it has the backup, else the backup server's.",
            allowed=RESTORE_FROM[1], check=RESTORE_FROM[0]),
    # Firewall
    Setting("firewall", True, "An nftables firewall on every server: SSH and the web ports open, the "
            "database port only from `database_clients`, everything else closed. Applied so that it "
            "never locks the deploy out (checked, reverted by a timer unless a new SSH connection "
            "gets through).", kind=bool),
    Setting("firewall_open_ports", [], "Extra TCP ports the firewall opens to everyone (monitoring "
            "agents, for example).", kind=list, allowed="a list of port numbers",
            check=lambda v: all(isinstance(p, int) and not isinstance(p, bool) and _port(p) for p in v)),
    Setting("database_clients", [], "Addresses or networks (the app servers of a fleet) allowed to "
            "reach the database port of the server that holds the database; empty: that server "
            "itself only (loopback).", kind=list, allowed="a list of IP addresses or networks",
            check=_every(ADDRESS_RE)),
)

BY_NAME = {s.name: s for s in SCHEMA}

# Keys pyinfra itself reads from host data (connection settings), allowed next to ours.
PYINFRA_KEYS = re.compile(r"^(ssh_|_|sandbox_)")


@dataclass(frozen=True)
class Settings:
    """Validated settings of one host, plus the paths derived from them."""

    values: dict = field(default_factory=dict)
    # The load balancers in front of this app server (a fleet): they end TLS, and nginx here
    # answers them only.
    balancers: tuple[str, ...] = ()
    # The fleet's database server this app server connects to (its private address).
    database_server: str = ""

    def __repr__(self) -> str:
        shown = {k: ("(hidden)" if BY_NAME[k].secret and v else v) for k, v in self.values.items()}
        return f"Settings({shown})"

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def base_dir(self) -> str:
        return f"/srv/{self.app_name}"

    @property
    def config_dir(self) -> str:
        return f"/etc/{self.app_name}"

    @property
    def python_bin(self) -> str:
        return f"{self.pyenv_root}/versions/{self.python_version}/bin/python"

    @property
    def nginx_tls(self) -> bool:
        """Whether this server's nginx ends TLS itself (not behind a load balancer)."""
        return self.tls != "off" and not self.balancers

    @property
    def health_path(self) -> str:
        return self.health_check_path or "/_djdeploy/health"

    def env_names_of(self, value: str) -> list[str]:
        """The environment variable names the app gets one of the deploy's values under."""
        names = self.env_names.get(value, ENV_VALUES[value])
        return [names] if isinstance(names, str) else list(names)


def _type_name(kind) -> str:
    return {str: "a string", int: "a whole number", bool: "true or false", list: "a list",
            dict: "a mapping"}[kind]


def validate(data: dict, where: str = "settings") -> Settings:
    """Check `data` against the schema; return Settings or raise one SettingsError naming the key."""
    problems = []
    for key in data:
        if key not in BY_NAME and not PYINFRA_KEYS.match(key):
            close = difflib.get_close_matches(key, BY_NAME, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{key}: unknown setting{hint}; allowed: the settings in README.md")
    values = {}
    for setting in SCHEMA:
        value = data.get(setting.name, setting.default)
        if isinstance(value, (list, dict)):
            value = type(value)(value)
        ok_type = isinstance(value, setting.kind) and not (setting.kind is int and isinstance(value, bool))
        if not ok_type:
            shown = "(hidden)" if setting.secret else repr(value)
            problems.append(f"{setting.name}: {shown} is not {_type_name(setting.kind)}; "
                            f"allowed: {setting.allowed or _type_name(setting.kind)}")
            continue
        if setting.check and not setting.check(value):
            shown = "(hidden)" if setting.secret else repr(value)
            problems.append(f"{setting.name}: {shown} is not allowed; allowed: {setting.allowed}")
            continue
        values[setting.name] = value
    if not problems:
        problems += _cross_checks(values)
    if problems:
        raise SettingsError(f"{where}: " + "; ".join(problems))
    return Settings(values)


def _cross_checks(values: dict) -> list[str]:
    problems = []
    if values["database"] == "url" and not values["database_url"].strip():
        problems.append("database_url: empty; allowed: a URL such as postgres://user:pass@host/db "
                        "when database is 'url'")
    if values["tls"] == "files" and not (values["tls_certificate"] and values["tls_key"]):
        problems.append("tls_certificate, tls_key: both are needed when tls is 'files'")
    if bool(values["database_tls_certificate"]) != bool(values["database_tls_key"]):
        problems.append("database_tls_certificate, database_tls_key: both or neither")
    if values["tls"] != "off" and values["https_port"] == values["http_port"]:
        problems.append("https_port: must differ from http_port")
    if values["backup_server"] and not values["backup_ssh_key"]:
        problems.append("backup_ssh_key: empty; allowed: the path of an SSH private key on the "
                        "controller when backup_server is set")
    if values["backup_passphrase"] and len(values["backup_passphrase"]) < 12:
        problems.append("backup_passphrase: (hidden) is too short; allowed: empty or at least 12 characters")
    return problems


def markdown_table() -> str:
    """The README's settings table, from the schema itself."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for s in SCHEMA:
        default = f"`{s.default!r}`" if s.default not in ("", [], {}) else "(empty)"
        rows.append(f"| `{s.name}` | {default} | {s.help} |")
    return "\n".join(rows)


def from_host(host) -> Settings:
    """The validated settings of a pyinfra host (its host and group data, `--data` included)."""
    try:
        return validate(host.data.dict(), where=host.name)
    except SettingsError as error:
        from .common import Stop

        raise Stop(f"Settings error, nothing was changed. {error}") from None


if __name__ == "__main__":
    print(markdown_table())
