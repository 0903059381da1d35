"""The application: its account, release layout, environment, source, `.venv` and database schema."""

from __future__ import annotations

import atexit
import hashlib
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, OperationError, operation

from .common import TOOLS, JsonState, PathStates, config_file, env_prefix, render, sh
from .python_env import tool_env
from .settings import Settings

COMPLETE = ".djdeploy-complete"
MIGRATIONS = ".djdeploy-migrations"  # digest of a release's migration files
PATHS = ".djdeploy-paths.json"
POETRY_CACHE = "/var/cache/djdeploy/poetry"
STATIC_MANIFEST = "staticfiles.json"  # Django's ManifestStaticFilesStorage

# The commit a run deploys, per host: fixed for the rest of the run once known, so that the
# run executes what its preview showed even if the branch moves meanwhile.
_targets: dict[str, str] = {}


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

    def release(self, commit: str) -> str:
        return f"{self.releases}/{commit[:12]}"

    def project(self, release: str) -> str:
        return f"{release}/{self.s.project_subdir}".rstrip("/")

    def env_files(self) -> list[str]:
        """The environment files of the app, in order; `-` marks optional ones (systemd)."""
        c = self.s.config_dir
        return [f"{c}/app.env", f"{c}/secret_key.env", f"-{c}/database.env", f"-{c}/secrets.env"]

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
        raise SystemExit(f"{host.name}: {error}") from None


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


@operation()
def environment(s: Settings):
    """
    The app's environment files (runbook B3), outside the code, readable by root and the app
    group only: settings in `app.env`, secrets in their own files, never printed.

    + s: settings
    """
    lay = Layout(s)
    names = s.server_names or [host.name]
    https = s.tls != "off"
    origins = [f"{'https' if https else 'http'}://{n}" for n in names if "*" not in n]
    variables = {
        "DJANGO_SETTINGS_MODULE": s.settings_module,
        "DEBUG": "false",
        "ALLOWED_HOSTS": ",".join([*names, "localhost", "127.0.0.1"]),
        "CSRF_TRUSTED_ORIGINS": ",".join(origins),
        "DATA_DIR": f"{lay.shared}/data",
        "STATIC_ROOT": f"{lay.shared}/static",
        "MEDIA_ROOT": f"{lay.shared}/media",
        "HTTPS": "true" if https else "false",
    }
    if s.database == "sqlite":
        variables["DATABASE_URL"] = f"sqlite:///{lay.shared}/data/db.sqlite3"
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
    if target_commit(s) is not None:
        host.noop(f"{s.revision} is commit {target_commit(s)[:12]}")
        return
    yield env_prefix(ssh) + sh("git", "clone", "-q", "--mirror", s.repo_url, lay.mirror)
    if ssh:
        yield sh("git", "-C", lay.mirror, "config", "core.sshCommand", ssh["GIT_SSH_COMMAND"])


@operation()
def release(s: Settings):
    """
    The release folder for the target commit, built completely or not at all: the code, the
    runbook's `.venv` in the Django project root (R6, R7) made by pyenv's Python with
    `-m venv` and filled by Poetry from the lock (B4), `gunicorn.conf.py` (B8), the static
    files (B7), and the pre-flight checks that must pass before it may serve.

    + s: settings
    """
    lay = Layout(s)
    commit = target_commit(s)
    rel = lay.release(commit) if commit else f"{lay.releases}/<{s.revision}>"
    project = lay.project(rel)
    have = host.get_fact(ReleaseState, release=rel, project=project) if commit else {}
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
    # The venv has no pip of its own: Poetry installs into it, and skipping ensurepip saves
    # seconds on every release.
    yield " && ".join([
        f"printf '%s\\n' {sh(commit or s.revision)} > {sh(project + '/REVISION')}",
        f"cd {sh(project)}",
        "{ find . -path ./.venv -prune -o -path '*/migrations/*.py' -type f -print | LC_ALL=C sort "
        f"| xargs -r sha256sum | sha256sum | cut -c1-64 > {sh(rel + '/' + MIGRATIONS)}; }}",
        sh(s.python_bin, "-m", "venv", "--without-pip", ".venv"),
    ])
    only = ",".join(["main", *s.poetry_groups])
    extras = [w for e in s.poetry_extras for w in ("--extras", e)]
    env = {**tool_env(s.package_index_url), "POETRY_VIRTUALENVS_IN_PROJECT": "true",
           "POETRY_CACHE_DIR": POETRY_CACHE, "POETRY_CONFIG_DIR": "/opt/poetry/config"}
    yield (f"cd {sh(project)} && " + env_prefix(env)
           + sh("poetry", "sync", "--no-interaction", "--no-ansi", "--no-root", "--only", only, *extras))
    yield f"chown -R root:root {sh(rel)} && chmod -R u+rwX,go+rX,go-w {sh(rel)}"
    yield from config_file._inner(path=f"{project}/gunicorn.conf.py",
                                  content=gunicorn_conf(s, commit or s.revision, project))
    # Pre-flight, before the release may serve (it is marked complete only if they pass): static
    # files collected and Django's deploy checks in one start of the project (files/
    # djdeploy_build.py, which also prints where static and media live), then Gunicorn's config
    # check, which imports the WSGI app (preload_app).
    build = sh(f"{project}/.venv/bin/python", TOOLS["build"], f".incoming-{(commit or 'new')[:12]}")
    check = sh(f"{project}/.venv/bin/gunicorn", "--check-config", "-c", "gunicorn.conf.py")
    yield (run_as_app(s, project, sh("/bin/sh", "-c", f"{build} && {check} >&2"))
           + f" > {sh(project + '/' + PATHS)}")
    # The release keeps its own copy of the static manifest: all releases share one static
    # folder, and a release started again (rollback) must link the files it was built with.
    manifest = f"{lay.shared}/static/{STATIC_MANIFEST}"
    yield f"if [ -f {sh(manifest)} ]; then cp {sh(manifest)} {sh(rel + '/' + STATIC_MANIFEST)}; fi"
    yield f"touch {sh(rel + '/' + COMPLETE)}"


def gunicorn_conf(s: Settings, revision: str, project: str) -> str:
    """The release's `gunicorn.conf.py` (runbook B8): it belongs to the release it serves."""
    return render("gunicorn.conf.py.j2", app_name=s.app_name, revision=revision,
                  wsgi_app=s.wsgi_app, project=project, workers=s.gunicorn_workers,
                  timeout=s.gunicorn_timeout)


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
    lay = Layout(s)
    content = render("manage.sh.j2", app_name=s.app_name,
                     project=lay.project(lay.current), env_files=lay.env_files())
    yield from config_file._inner(path=f"/usr/local/bin/{s.app_name}-manage", content=content,
                                  mode=0o755)


def release_info(s: Settings) -> dict:
    """State of the target release (for other steps that read its static/media paths)."""
    commit = target_commit(s)
    if not commit:
        return {}
    lay = Layout(s)
    rel = lay.release(commit)
    return host.get_fact(ReleaseState, release=rel, project=lay.project(rel))

