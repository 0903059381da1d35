"""The application: its account, release layout, environment, source, `.venv` and database schema."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import FactBase, FileUploadCommand, OperationError, operation

from .common import (FILES, TOOLS, WEB_GROUP, JsonState, PathStates, Stop, config_file,
                     env_prefix, render, sh)
from .python_env import SYSTEM_CA_BUNDLE, tool_env
from .project import Project, ProjectError, check_python, inspect, resolved
from .settings import SECRET_ENV_VALUES, Settings

COMPLETE = ".djdeploy-complete"
MIGRATIONS = ".djdeploy-migrations"  # digest of a release's migration files
PATHS = ".djdeploy-paths.json"
DERIVED_ENV = "names.env"  # the secret values under the names the project reads
POETRY_CACHE = "/var/cache/djdeploy/poetry"
STATIC_MANIFEST = "staticfiles.json"  # Django's ManifestStaticFilesStorage
DEPLOY_DIR = ".djdeploy"  # the deploy's own files in a release, outside the project's packages
PROJECT_GUNICORN_CONF = "project.gunicorn.conf.py"  # the project's own, kept in DEPLOY_DIR
NPM_CACHE = "/var/cache/djdeploy/npm"  # one folder per app: <NPM_CACHE>-<app>

# The commit a run deploys, per host: fixed for the rest of the run once known, so that the
# run executes what its preview showed even if the branch moves meanwhile.
_targets: dict[str, str] = {}
_pinned: set[str] = set()  # hosts given their target by pin_target (their mirror may be missing)


def pin_target(host_name: str, commit: str) -> None:
    """Make `commit` the target of a host (a fleet deploys one commit everywhere)."""
    _targets[host_name] = commit
    _pinned.add(host_name)


@dataclass(frozen=True)
class Layout:
    """Where things live on the server (Capistrano's layout: releases side by side)."""

    s: Settings

    @property
    def base(self) -> str:
        return self.s.base_dir

    @property
    def releases(self) -> str:
        return f"{self.base}/releases"

    @property
    def shared(self) -> str:
        return f"{self.base}/shared"

    @property
    def current(self) -> str:
        return f"{self.base}/current"

    @property
    def mirror(self) -> str:
        return f"{self.base}/repo.git"

    @property
    def npm_cache(self) -> str:
        return f"{NPM_CACHE}-{self.s.app_name}"

    def release(self, commit: str) -> str:
        return f"{self.releases}/{commit[:12]}"

    def project(self, release: str) -> str:
        return f"{release}/{self.s.project_subdir}".rstrip("/")

    def env_files(self) -> list[str]:
        """The environment files of the app, in order; `-` marks optional ones (systemd)."""
        c = self.s.config_dir
        return [f"{c}/app.env", f"{c}/secret_key.env", f"-{c}/database.env", f"-{c}/secrets.env",
                f"-{c}/{DERIVED_ENV}"]

    @property
    def dirs(self) -> dict[str, tuple[str, str, int]]:
        """Each folder with its owner, group and mode. The app may write data and media only."""
        app = self.s.app_name
        return {
            self.base: ("root", "root", 0o755),
            self.releases: ("root", "root", 0o755),
            self.shared: ("root", "root", 0o755),
            f"{self.shared}/data": (app, app, 0o750),
            f"{self.shared}/media": (app, app, 0o755),
            f"{self.shared}/static": (app, app, 0o755),
            f"{self.shared}/backups": ("root", "root", 0o700),
            self.s.config_dir: ("root", app, 0o750),
            POETRY_CACHE: ("root", "root", 0o700),
            # npm's cache and home for front-end builds, which run as the app user
            self.npm_cache: (app, app, 0o750),
            f"{self.npm_cache}/home": (app, app, 0o750),
        }


def run_as_app(s: Settings, project: str, command: str) -> str:
    """`command` in `project`, as the app user, with exactly the service's environment."""
    props = [f"WorkingDirectory={project}"] + [f"EnvironmentFile={f}" for f in Layout(s).env_files()]
    return (
        "systemd-run --quiet --pipe --wait --collect --service-type=exec "
        + sh(f"--uid={s.app_name}", f"--gid={s.app_name}")
        + " " + " ".join("-p " + shlex.quote(p) for p in props) + " " + command
    )


def manage_command(s: Settings, project: str, args: str) -> str:
    """`manage.py <args>` of the release in `project` (runbook B5, U4)."""
    return run_as_app(s, project, sh(f"{project}/.venv/bin/python", "manage.py") + " " + args)


# -- which commit ---------------------------------------------------------------------------


class MirrorCommit(FactBase):
    """
    The commit `revision` names in the server's mirror of the repository, after fetching it
    from `url`; empty when there is no mirror yet, `MISSING` when the revision does not exist.
    """

    def command(self, mirror: str, url: str, revision: str) -> str:
        m = sh(mirror)
        # Runs that start together fetch one after the other (flock); the deploy lock is only
        # taken later, when the run executes.
        fetch = (f"[ \"$(git -C {m} remote get-url origin)\" = {sh(url)} ] || "
                 f"git -C {m} remote set-url origin {sh(url)}; "
                 f"git -C {m} fetch -q --prune --tags origin '+refs/heads/*:refs/heads/*'")
        return (
            f"[ -d {m} ] || exit 0; flock -w 120 {m}/djdeploy-fetch.lock sh -c {sh(fetch)} && "
            f"{{ git -C {m} rev-parse --verify -q {sh(revision + '^{commit}')} || echo MISSING; }}"
        )

    def process(self, output):
        return output[0].strip() if output else ""


def local_commit(repo: str, revision: str) -> str:
    """The commit `revision` names in a git repository on the controller (`upload` mode)."""
    result = subprocess.run(["git", "-C", repo, "rev-parse", "--verify", "-q", f"{revision}^{{commit}}"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise OperationError(f"revision: {revision!r} does not exist in {repo}")
    return result.stdout.strip()


def target_commit(s: Settings) -> str | None:
    """The commit this run deploys; None while it cannot be known yet (no mirror on the server)."""
    if host.name in _targets:
        return _targets[host.name]
    if s.source_mode == "upload":
        commit = local_commit(s.repo_url, s.revision)
    else:
        commit = host.get_fact(MirrorCommit, mirror=Layout(s).mirror, url=s.repo_url,
                               revision=s.revision)
        if commit == "MISSING":
            raise OperationError(f"revision: {s.revision!r} does not exist in {s.repo_url}")
        if not commit:
            return None
    _targets[host.name] = commit
    return commit


def planned_commit(s: Settings) -> str | None:
    """The target commit, for a deploy file to read before adding steps: a revision that does
    not exist stops the run here, with one message, before anything changes."""
    try:
        return target_commit(s)
    except OperationError as error:
        raise Stop(f"{host.name}: {error}") from None


def found_project(s: Settings, commit: str | None = None) -> Project | None:
    """The Django project of the target commit (or `commit`), as its source shows it; None
    while the commit is not known yet (no mirror on the server)."""
    try:
        return inspect(s, commit or target_commit(s), Layout(s).mirror)
    except ProjectError as error:
        raise OperationError(str(error)) from None


def effective(s: Settings, commit: str | None = None) -> Settings:
    """The settings with what the project says filled in where they leave it to the deploy."""
    return resolved(s, found_project(s, commit))


def planned_project(s: Settings) -> Project | None:
    """The project the run deploys, shown in the preview; a project that cannot be found or
    does not accept `python_version` stops the run here, before anything changes."""
    try:
        project = found_project(s)
        if project is not None:
            check_python(project, s.python_version)
    except (OperationError, ProjectError) as error:
        raise Stop(f"{host.name}: {error}") from None
    if project is None:
        logger.info(f"{host.name}: project: found once the repository is fetched")
    else:
        announce(project)
    return project


_announced: set[str] = set()


def announce(project: Project) -> None:
    """Say once per host what the deploy found in the project."""
    if host.name not in _announced:
        _announced.add(host.name)
        logger.info(f"{host.name}: project: {project.describe()}")


# -- operations -----------------------------------------------------------------------------


class Account(FactBase):
    """
    The passwd entry of a user and the group of the same name (`getent`), if they exist.
    """

    def command(self, user: str) -> str:
        return f"getent passwd {sh(user)} || echo -; getent group {sh(user)} || echo -"

    def process(self, output):
        passwd, group = (output + ["-", "-"])[:2]
        fields = passwd.split(":")
        return {"user": fields if len(fields) == 7 else None, "group": group != "-"}


@operation()
def account(s: Settings):
    """
    A system user and group for the app, without a login shell or a home of its own.

    + s: settings
    """
    name, home, shell = s.app_name, Layout(s).base, "/usr/sbin/nologin"
    have = host.get_fact(Account, user=name)
    if not have["group"]:
        yield sh("groupadd", "--system", name)
    if have["user"] is None:
        yield sh("useradd", "--system", "--gid", name, "--home-dir", home, "--no-create-home",
                 "--shell", shell, name)
    elif (have["user"][5], have["user"][6]) != (home, shell):
        yield sh("usermod", "--home", home, "--shell", shell, name)
    elif have["group"]:
        host.noop(f"user {name} exists")


@operation()
def layout(s: Settings):
    """
    The release layout (`releases/`, `shared/`), the config folder and caches, owned so that
    the app can write its data and media but not its code.

    + s: settings
    """
    dirs = Layout(s).dirs
    current = host.get_fact(PathStates, paths=list(dirs))
    changed = False
    for path, (user, group, mode) in dirs.items():
        have = current.get(path)
        if have is None:
            yield sh("install", "-d", "-o", user, "-g", group, "-m", f"{mode:o}", path)
        elif (have["user"], have["group"], have["mode"]) != (user, group, mode):
            yield sh("chown", f"{user}:{group}", path) + " && " + sh("chmod", f"{mode:o}", path)
        else:
            continue
        changed = True
    if not changed:
        host.noop("release layout is in place")


class SecretEnvironment(FactBase):
    """
    Whether the secret environment files made on the server (files/djdeploy_env.py) are as
    their spec asks: `same`, or `differs` (also before the server has the script or Python).
    """

    def command(self, python: str, spec: str) -> str:
        script = TOOLS["env"]
        return (f"if [ -x {sh(python)} ] && [ -f {sh(script)} ] && [ -f {sh(spec)} ]; then "
                f"{sh(python, script, 'check', spec)}; else echo differs; fi")

    def process(self, output):
        return output[-1].strip() if output else "differs"


def app_values(s: Settings) -> dict[str, str]:
    """The deploy's values the app reads from its environment that are not secret."""
    lay = Layout(s)
    names = s.server_names or [host.name]
    https = s.tls != "off"
    values = {
        "debug": "false",
        "allowed_hosts": ",".join([*names, "localhost", "127.0.0.1"]),
        "csrf_trusted_origins": ",".join(f"{'https' if https else 'http'}://{n}"
                                         for n in names if "*" not in n),
        "data_dir": f"{lay.shared}/data",
        "static_root": f"{lay.shared}/static",
        "media_root": f"{lay.shared}/media",
        "https": "true" if https else "false",
    }
    if s.database == "sqlite":
        values["database_url"] = f"sqlite:///{lay.shared}/data/db.sqlite3"
    return values


@operation()
def environment(s: Settings):
    """
    The app's environment files (runbook B3), outside the code, readable by root and the app
    group only: settings in `app.env`, secrets in their own files, never printed. Each value
    goes under the names the project reads (`env_names`); the secret ones are put under their
    names on the server itself, and so is the `.env` file when the project wants one.

    + s: settings
    """
    s = effective(s)
    variables = {"DJANGO_SETTINGS_MODULE": s.settings_module}
    for key, value in app_values(s).items():
        variables.update({name: value for name in s.env_names_of(key)})
    if s.database_server:
        # libpq's own settings, for every way a project connects (a URL or its parts): the
        # fleet's database only over TLS, and a dead one noticed within seconds.
        variables["PGSSLMODE"] = "verify-full" if s.database_tls_ca else "require"
        if s.database_tls_ca:
            variables["PGSSLROOTCERT"] = f"{s.config_dir}/database-ca.crt"
        variables["PGCONNECT_TIMEOUT"] = "5"
    variables.update({k: str(v) for k, v in s.env.items()})
    yield from config_file._inner(
        path=f"{s.config_dir}/app.env", content=render("app.env.j2", app_name=s.app_name,
                                                       variables=variables),
        group=s.app_name, mode=0o640)
    secrets = dict(s.secret_env)
    if s.database == "url":
        secrets["DATABASE_URL"] = s.database_url
    secrets_path = f"{s.config_dir}/secrets.env"
    if secrets:
        yield from config_file._inner(
            path=secrets_path, content=render("app.env.j2", app_name=s.app_name, variables=secrets),
            group=s.app_name, mode=0o640, secret=True)
    key_file = f"{s.config_dir}/secret_key.env"
    present = host.get_fact(PathStates, paths=[key_file, secrets_path])
    if secrets_path in present and not secrets:
        yield sh("rm", "-f", secrets_path)
    if key_file not in present:
        # Made on the server, once: the key never travels and survives every later deploy.
        yield (f"umask 077 && printf 'SECRET_KEY=%s\\n' \"$(head -c 48 /dev/urandom | base64 -w0 | tr '+/' '-_')\""
               f" > {sh(key_file)} && " + sh("chgrp", s.app_name, key_file) + " && "
               + sh("chmod", "640", key_file))
    lay = Layout(s)
    spec_path = f"{s.config_dir}/environment.json"
    dotenv = f"{s.config_dir}/dotenv"
    spec = {
        "sources": [f.lstrip("-") for f in lay.env_files() if not f.endswith(DERIVED_ENV)],
        "names": {key: s.env_names_of(key) for key in SECRET_ENV_VALUES},
        "out": f"{s.config_dir}/{DERIVED_ENV}",
        "dotenv": dotenv if s.dotenv else "",
        "remove": [] if s.dotenv else [dotenv],
        "group": s.app_name,
    }
    yield from config_file._inner(path=spec_path, content=json.dumps(spec, indent=1) + "\n",
                                  group=s.app_name, mode=0o640)
    if host.get_fact(SecretEnvironment, python=s.python_bin, spec=spec_path) != "same":
        yield sh(s.python_bin, TOOLS["env"], "write", spec_path)


class ReleaseState(JsonState):
    """
    Whether a release folder exists and is complete, and where its Django project keeps
    static and media files.
    """

    def command(self, release: str, project: str) -> str:
        r, p = sh(release), sh(f"{project}/{PATHS}")
        return (
            f"if [ -f {r}/{COMPLETE} ]; then printf '{{\"state\":\"complete\",\"paths\":%s}}\\n' "
            f"\"$(cat {p} 2>/dev/null || echo null)\"; "
            f"elif [ -e {r} ]; then echo '{{\"state\":\"partial\"}}'; fi"
        )


def source_commands(s: Settings, commit: str | None, release: str):
    """Commands that put the code of `commit` into `release` (a fresh folder)."""
    lay = Layout(s)
    if s.source_mode == "git":
        yield f"git -C {sh(lay.mirror)} archive --format=tar {sh(commit or s.revision)} | tar -x -C {sh(release)}"
        return
    archive = Path(tempfile.gettempdir()) / f"djdeploy-{os.getpid()}-{commit}.tar"
    if not archive.exists():
        subprocess.run(["git", "-C", s.repo_url, "archive", "--format=tar", "-o", str(archive), commit],
                       check=True)
        atexit.register(archive.unlink, missing_ok=True)
    remote = f"/tmp/djdeploy-{commit[:12]}.tar"
    yield FileUploadCommand(str(archive), remote, remote_temp_filename=host.get_temp_filename(remote))
    yield f"tar -x -C {sh(release)} -f {sh(remote)} && rm -f {sh(remote)}"


@operation()
def source(s: Settings):
    """
    A mirror of the repository on the server (`git` mode), fetched fresh every run, so the
    revision to deploy is known before anything is built.

    + s: settings
    """
    if s.source_mode != "git":
        host.noop("source is uploaded from the controller")
        return
    lay = Layout(s)
    ssh = {}
    if s.deploy_key:
        key = Path(s.deploy_key)
        if not key.is_file():
            raise OperationError(f"deploy_key: {key} is not a file on the controller")
        yield from config_file._inner(path=f"{s.config_dir}/deploy_key", content=key.read_text(),
                                      mode=0o600, secret=True)
        ssh["GIT_SSH_COMMAND"] = f"ssh -i {s.config_dir}/deploy_key -o StrictHostKeyChecking=accept-new"
    pinned_without_mirror = (host.name in _pinned
                             and not host.get_fact(PathStates, paths=[lay.mirror]))
    if target_commit(s) is not None and not pinned_without_mirror:
        host.noop(f"{s.revision} is commit {target_commit(s)[:12]}")
        return
    yield env_prefix(ssh) + sh("git", "clone", "-q", "--mirror", s.repo_url, lay.mirror)
    if ssh:
        yield sh("git", "-C", lay.mirror, "config", "core.sshCommand", ssh["GIT_SSH_COMMAND"])


@operation()
def project_checked(s: Settings):
    """
    The project found in the fetched source, and the Python it accepts compared with
    `python_version`, before anything is built (a mismatch names both).

    + s: settings
    """
    project = found_project(s)
    if project is None:
        host.noop("the project is checked once the repository is fetched")
    else:
        announce(project)  # a first deploy finds it only now
        try:
            check_python(project, s.python_version)
        except ProjectError as error:
            raise OperationError(str(error)) from None
        host.noop(f"project: {project.describe()}")
    yield from ()  # checks only: nothing to change


def build_spec(s: Settings, project: Project, commit: str, rel: str) -> dict:
    """What files/djdeploy_release.py needs to build a release (nothing secret)."""
    lay = Layout(s)
    only = ",".join(["main", *s.poetry_groups])
    extras = [w for e in s.poetry_extras for w in ("--extras", e)]
    build_env = {"HOME": f"{lay.npm_cache}/home", "npm_config_cache": lay.npm_cache,
                 "NODE_EXTRA_CA_CERTS": SYSTEM_CA_BUNDLE, "npm_config_update_notifier": "false",
                 "npm_config_fund": "false", "npm_config_audit": "false"}
    if s.npm_registry_url:
        build_env["npm_config_registry"] = s.npm_registry_url
    return {
        "release": rel,
        "project": lay.project(rel),
        "poetry_dir": f"{rel}/{project.poetry_dir}".rstrip("/"),
        "revision": commit,
        "app": s.app_name,
        "python": s.python_bin,
        "env_files": lay.env_files(),
        "poetry_args": ["sync", "--no-interaction", "--no-ansi", "--no-root", "--only", only, *extras],
        "poetry_env": {**tool_env(s.package_index_url), "POETRY_CACHE_DIR": POETRY_CACHE,
                       "POETRY_CONFIG_DIR": "/opt/poetry/config"},
        "pip_env": tool_env(s.package_index_url),
        "gunicorn": s.gunicorn_version,
        "build_constraints": s.poetry_build_constraints,
        "build_commands": s.build_commands,
        "build_env": build_env,
        "collect": TOOLS["build"],
        "incoming": f".incoming-{commit[:12]}",
        "shared": lay.shared,
        "web_group": WEB_GROUP,
        "dotenv": f"{s.config_dir}/dotenv" if s.dotenv else "",
    }


def release_files(s: Settings, commit: str, rel: str, found: Project | None):
    """The deploy's own files in a release: `gunicorn.conf.py` in the project root (runbook B8)
    and, outside the project's packages, the wrapper that answers /_djdeploy/ (health, version)."""
    lay = Layout(s)
    project = lay.project(rel)
    info = {"revision": commit, "wsgi_app": s.wsgi_app, "settings_module": s.settings_module}
    yield from config_file._inner(path=f"{rel}/{DEPLOY_DIR}/release.json",
                                  content=json.dumps(info, indent=1) + "\n")
    yield from config_file._inner(path=f"{rel}/{DEPLOY_DIR}/djdeploy_wsgi.py",
                                  content=(FILES / "djdeploy_wsgi.py").read_text())
    own = f"{rel}/{DEPLOY_DIR}/{PROJECT_GUNICORN_CONF}" if found and found.gunicorn_conf else ""
    yield from config_file._inner(path=f"{project}/gunicorn.conf.py",
                                  content=gunicorn_conf(s, commit, rel, own))


@operation()
def release(s: Settings):
    """
    The release folder for the target commit, built completely or not at all: the code, the
    runbook's `.venv` in the Django project root (R6, R7) made by pyenv's Python with
    `-m venv` and filled by Poetry from the lock (B4), `gunicorn.conf.py` (B8), the project's
    build commands, the static files (B7), and the pre-flight checks that must pass before it
    may serve (files/djdeploy_release.py).

    + s: settings
    """
    commit = target_commit(s)
    project = found_project(s)
    s = resolved(s, project)
    lay = Layout(s)
    rel = lay.release(commit) if commit else f"{lay.releases}/<{s.revision}>"
    have = host.get_fact(ReleaseState, release=rel, project=lay.project(rel)) if commit else {}
    if have.get("state") == "complete":
        host.noop(f"release {commit[:12]} is built")
        return
    if have.get("state") == "partial":
        # A build whose run was killed can leave its last command running in the folder (a
        # Poetry install goes on without its SSH session) and make `rm -rf` fail. This run holds
        # the deploy lock, so whatever still works in the unfinished release is left over: stop it.
        yield (f"for p in /proc/[0-9]*; do case \"$(readlink $p/cwd 2>/dev/null)\" in "
               f"{sh(rel)}|{sh(rel)}/*) kill -9 \"${{p#/proc/}}\" 2>/dev/null;; esac; done; "
               f"rm -rf {sh(rel)} 2>/dev/null || {{ sleep 1; rm -rf {sh(rel)}; }}")
    yield sh("rm", "-rf", rel) + " && " + sh("mkdir", "-p", rel)
    yield from source_commands(s, commit, rel)
    if project is not None and project.gunicorn_conf:
        # The runbook's gunicorn.conf.py is the deploy's; the project's own is kept beside it
        # and read first.
        yield (sh("mkdir", "-p", f"{rel}/{DEPLOY_DIR}") + " && "
               + sh("mv", f"{lay.project(rel)}/gunicorn.conf.py",
                    f"{rel}/{DEPLOY_DIR}/{PROJECT_GUNICORN_CONF}"))
    if project is None:  # the preview of a first deploy: the source is not fetched yet
        yield sh(s.python_bin, TOOLS["release"], "build", f"{rel}/{DEPLOY_DIR}/build.json")
        return
    yield from release_files(s, commit, rel, project)
    spec = f"{rel}/{DEPLOY_DIR}/build.json"
    yield from config_file._inner(path=spec, content=json.dumps(build_spec(s, project, commit, rel),
                                                                indent=1) + "\n")
    yield sh(s.python_bin, TOOLS["release"], "build", spec)


def gunicorn_conf(s: Settings, revision: str, rel: str, project_conf: str = "") -> str:
    """The release's `gunicorn.conf.py` (runbook B8): it belongs to the release it serves."""
    return render("gunicorn.conf.py.j2", app_name=s.app_name, revision=revision,
                  wsgi_app=s.wsgi_app, project=Layout(s).project(rel), workers=s.gunicorn_workers,
                  timeout=s.gunicorn_timeout, wrapper=f"{rel}/{DEPLOY_DIR}/djdeploy_wsgi.py",
                  project_conf=project_conf)


class MigrationState(FactBase):
    """
    Digest of the release's migration files, and of those the database was last migrated with
    (followed by the database's id).
    """

    def command(self, release: str, shared: str) -> str:
        return (f"cat {sh(release + '/' + MIGRATIONS)} 2>/dev/null || echo none; "
                f"cat {sh(shared + '/' + MIGRATIONS)} 2>/dev/null || echo none")

    def process(self, output):
        return {"release": output[0].strip(), "applied": output[1].strip()}


def database_id(s: Settings) -> str:
    """Names the database the app uses (a URL only by its digest: it holds a password)."""
    if s.database == "url":
        return "url-" + hashlib.sha256(s.database_url.encode()).hexdigest()[:16]
    return s.database


def needs_migrate(s: Settings) -> bool:
    """Whether the target release brings migration files this database was not migrated with
    (another database, after a change of the `database` settings, starts empty)."""
    commit = target_commit(s)
    if not commit:
        return True
    lay = Layout(s)
    state = host.get_fact(MigrationState, release=lay.release(commit), shared=lay.shared)
    return state["release"] == "none" or state["applied"].split() != [state["release"], database_id(s)]


@operation()
def migrate(s: Settings):
    """
    The database schema of the target release (`manage.py migrate`, B5/U4), then the extra
    management commands from the settings; skipped when its migration files are the ones the
    database was last migrated with.

    + s: settings
    """
    s = effective(s)
    lay = Layout(s)
    commit = target_commit(s)
    if not needs_migrate(s):
        host.noop(f"the database has the migrations of {commit[:12]}")
        return
    rel = lay.release(commit) if commit else f"{lay.releases}/<{s.revision}>"
    project = lay.project(rel)
    yield manage_command(s, project, "migrate --noinput")
    for command in s.manage_commands:
        yield manage_command(s, project, command)
    # Releases built before migration digests existed have none: they simply migrate each time.
    yield (f"if [ -f {sh(rel + '/' + MIGRATIONS)} ]; then printf '%s %s\\n' \"$(cat {sh(rel + '/' + MIGRATIONS)})\" "
           f"{sh(database_id(s))} > {sh(lay.shared + '/' + MIGRATIONS)}; fi")


@operation()
def manage_wrapper(s: Settings):
    """
    `/usr/local/bin/<app>-manage`: the current release's manage.py for operators, run as the
    app user with the service's environment (for example `bizsite-manage createsuperuser`).

    + s: settings
    """
    lay = Layout(effective(s))
    content = render("manage.sh.j2", app_name=s.app_name,
                     project=lay.project(lay.current), env_files=lay.env_files())
    yield from config_file._inner(path=f"/usr/local/bin/{s.app_name}-manage", content=content,
                                  mode=0o755)


def release_info(s: Settings) -> dict:
    """State of the target release (for other steps that read its static/media paths)."""
    commit = target_commit(s)
    if not commit:
        return {}
    lay = Layout(effective(s))
    rel = lay.release(commit)
    return host.get_fact(ReleaseState, release=rel, project=lay.project(rel))

