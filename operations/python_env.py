"""The runbook's Python: pyenv (R4), CPython built by it (R3), Poetry in its own venv (R5); each
built once per platform in a run and shared with the other servers as an artifact."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from gevent.lock import Semaphore
from pyinfra import host, state
from pyinfra.context import ctx_state
from pyinfra.api import FileUploadCommand, OperationError, StringCommand, operation
from pyinfra.api.command import PyinfraCommand

from . import artifacts
from .common import JsonState, config_file, env_prefix, sh
from .roles import is_app_server
from .settings import Settings, from_host

PYPI_MIRROR_PLUGIN = "poetry-plugin-pypi-mirror==0.6.5"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
POETRY_HOME = "/opt/poetry"

# What pyenv's wiki lists for building CPython on Debian, less Tk, plus the headers common
# sdists need (libpq, libjpeg, zlib, libffi) and the tools the deploy itself uses (zstd packs
# artifacts).
BUILD_PACKAGES = [
    "build-essential", "pkg-config", "git", "curl", "ca-certificates", "xz-utils",
    "libssl-dev", "zlib1g-dev", "libbz2-dev", "libreadline-dev", "libsqlite3-dev",
    "libncurses-dev", "libffi-dev", "liblzma-dev", "libgdbm-dev", "uuid-dev",
    "libpq-dev", "libjpeg-dev", "sqlite3", "zstd",
]


def tool_env(index_url: str) -> dict:
    """Environment for pip and Poetry on the server: the system trust store and the index."""
    env = {
        "PIP_CERT": SYSTEM_CA_BUNDLE,
        "REQUESTS_CA_BUNDLE": SYSTEM_CA_BUNDLE,
        "SSL_CERT_FILE": SYSTEM_CA_BUNDLE,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
    }
    if index_url:
        env["PIP_INDEX_URL"] = index_url
        env["POETRY_PYPI_MIRROR_URL"] = index_url
    return env


class PyenvState(JsonState):
    """
    pyenv's checked-out commit, the commit `ref` names locally, and the installed versions.
    """

    def command(self, root: str, ref: str) -> str:
        return (
            f"R={sh(root)}; [ -d \"$R/.git\" ] || {{ echo '{{}}'; exit 0; }}; "
            f"head=$(git -C \"$R\" rev-parse HEAD); "
            f"want=$(git -C \"$R\" rev-parse --verify -q {sh(ref + '^{commit}')} || true); "
            "url=$(git -C \"$R\" remote get-url origin); "
            "versions=$(ls \"$R/versions\" 2>/dev/null | sed 's/.*/\"&\"/' | paste -sd, -); "
            "printf '{\"head\":\"%s\",\"want\":\"%s\",\"url\":\"%s\",\"versions\":[%s]}\\n' "
            "\"$head\" \"$want\" \"$url\" \"$versions\""
        )


@operation()
def pyenv(git_url: str, ref: str, root: str):
    """
    pyenv cloned from `git_url` and checked out at `ref`, under a system-wide root.

    + git_url: where to clone pyenv from (upstream, or an internal mirror)
    + ref: tag or commit to check out
    + root: PYENV_ROOT, outside any home directory
    """
    current = host.get_fact(PyenvState, root=root, ref=ref)
    checkout = sh("git", "-C", root, "-c", "advice.detachedHead=false", "checkout", "-q", ref)
    if not current:
        yield sh("git", "clone", "-q", git_url, root) + " && " + checkout
        return
    if current["url"] != git_url:
        yield sh("git", "-C", root, "remote", "set-url", "origin", git_url)
    if current["want"] and current["want"] == current["head"]:
        if current["url"] == git_url:
            host.noop(f"pyenv is at {ref}")
        return
    yield sh("git", "-C", root, "fetch", "-q", "--tags", "origin") + " && " + checkout




class PoetryState(JsonState):
    """
    What is installed in Poetry's venv: its marker (versions and interpreter), if complete.
    """

    def command(self, home: str) -> str:
        return f"cat {sh(home + '/installed.json')} 2>/dev/null || true"


# -- CPython and Poetry: built where needed, shared as artifacts --------------------------------

# What proves a CPython tree: the modules that need the -dev packages above, built and loading.
PYTHON_CHECK = ("import ssl, sqlite3, ctypes, lzma, bz2, readline, sys; "
                "print('Python', sys.version.split()[0], 'imports ssl, sqlite3, ctypes, lzma, bz2, readline')")


def cpython_key(s: Settings, platform: dict, commit: str | None) -> dict:
    """What makes a pyenv build of CPython fit a server. The -dev packages decide which optional
    modules get built; the source tarball's origin does not matter (pyenv checks its sha256)."""
    dev = sorted({p for p in [*BUILD_PACKAGES, *s.apt_packages] if p.endswith("-dev")})
    return {"kind": "cpython", "version": s.python_version, "pyenv_commit": commit,
            "pyenv_root": s.pyenv_root, "build_env": json.dumps(s.python_build_env, sort_keys=True),
            "build_packages": " ".join(dev), **platform}


def poetry_key(s: Settings, platform: dict, commit: str | None) -> dict:
    """What makes Poetry's venv fit a server: its versions, its path, and its interpreter."""
    return {"kind": "poetry", "version": s.poetry_version, "plugin": PYPI_MIRROR_PLUGIN,
            "venv": f"{POETRY_HOME}/venv", "python": s.python_bin,
            "python_key": artifacts.key_hash(cpython_key(s, platform, commit)), **platform}


def spec(s: Settings, platform: dict, kind: str) -> artifacts.Spec:
    """The artifact of `kind` for a server with settings `s` on `platform`."""
    if kind == "cpython":
        tree = f"{s.pyenv_root}/versions/{s.python_version}"
        return artifacts.Spec("cpython", f"CPython {s.python_version}", tree,
                              partial(cpython_key, s, platform),
                              (f"{tree}/bin/python", "-c", PYTHON_CHECK), "compiled here",
                              s.pyenv_root, s.pyenv_ref)
    venv = f"{POETRY_HOME}/venv"
    return artifacts.Spec("poetry", f"Poetry {s.poetry_version}", venv, partial(poetry_key, s, platform),
                          (f"{venv}/bin/poetry", "--version"), "installed with pip here",
                          s.pyenv_root, s.pyenv_ref)


def poetry_marker(s: Settings) -> dict:
    return {"poetry": s.poetry_version, "plugin": PYPI_MIRROR_PLUGIN, "python": s.python_bin}


@dataclass
class _Server:
    """What the plan knows of one server: its settings and facts, read once per run (when the
    first of these steps runs), so that the plan stays the same when pyinfra runs a step again."""

    s: Settings
    platform: dict
    versions: list
    poetry: dict
    commit: str | None  # pyenv's commit: the server's, or the one the cached artifact was built at
    cache: artifacts.Cache | None
    logged: set = field(default_factory=set)  # kinds whose plan line was printed


_SERVERS: dict[tuple[int, str], _Server] = {}
_PLANS: dict[tuple[int, str], dict[str, artifacts.Role]] = {}
_LOCK = Semaphore()


def _server(h) -> _Server:
    memo = (id(ctx_state.get()), h.name)
    if memo not in _SERVERS:
        s = from_host(h)
        platform = h.get_fact(artifacts.Platform)
        current = h.get_fact(PyenvState, root=s.pyenv_root, ref=s.pyenv_ref)
        cache = artifacts.Cache.of(s.artifact_cache)
        commit = current.get("head") if current and current.get("want") == current.get("head") else None
        if commit is None and cache:
            commit = cache.predicted_commit(cpython_key(s, platform, None), s.pyenv_ref)
        _SERVERS[memo] = _Server(s, platform, current.get("versions", []) if current else [],
                                 h.get_fact(PoetryState, home=POETRY_HOME), commit, cache)
    return _SERVERS[memo]


def _lacks(server: _Server, kind: str) -> bool:
    if kind == "cpython":
        return server.s.python_version not in server.versions
    return server.poetry != poetry_marker(server.s)


def plan(kind: str) -> dict[str, artifacts.Role]:
    """Roles of all servers of this run for `kind`, from the settings and facts of all of them:
    the first server (inventory order) of each platform without a cached artifact builds."""
    with _LOCK:
        memo = (id(ctx_state.get()), kind)
        if memo not in _PLANS:
            needs = []
            # Only app servers run the site's Python.
            for h in [h for h in state.inventory if h in state.active_hosts and is_app_server(h)]:
                server = _server(h)
                if not _lacks(server, kind):
                    continue
                art = spec(server.s, server.platform, kind)
                cached = None
                if server.cache and server.commit:
                    cached = server.cache.manifest(artifacts.artifact_name(art.key(server.commit)))
                group = json.dumps([art.key(None), server.s.pyenv_ref, server.s.artifact_cache,
                                    server.s.artifact_url], sort_keys=True)
                needs.append(artifacts.Need(h.name, group, server.cache is not None,
                                            cached["name"] if cached else ""))
            _PLANS[memo] = artifacts.assign(needs)
        return _PLANS[memo]


def _script():
    """The artifact script on the server, before a step runs it (uploaded once: a later step
    finds it up to date)."""
    yield from config_file._inner(path=artifacts.SCRIPT, mode=0o755,
                                  content=artifacts.SCRIPT_SOURCE.read_text())


def _compile(s: Settings) -> list[PyinfraCommand]:
    """pyenv's own build of CPython: `make -j<cores>`, no PGO, as python-build does by default."""
    commands: list[PyinfraCommand] = []
    env = {"PYENV_ROOT": s.pyenv_root, **s.python_build_env}
    if s.python_build_mirror_url:
        env["PYTHON_BUILD_MIRROR_URL"] = s.python_build_mirror_url
    if s.python_source_tarball:
        tarball = Path(s.python_source_tarball)
        if not tarball.is_file():
            raise OperationError(f"python_source_tarball: {tarball} is not a file on the controller")
        commands.append(StringCommand(sh("mkdir", "-p", f"{s.pyenv_root}/cache")))
        # pyenv looks in its cache for Python-X.Y.Z.tar.gz or .tar.xz and checks the sha256.
        suffix = ".tar.xz" if tarball.name.endswith(".xz") else ".tar.gz"
        commands.append(FileUploadCommand(
            str(tarball), f"{s.pyenv_root}/cache/Python-{s.python_version}{suffix}",
            remote_temp_filename=host.get_temp_filename(str(tarball))))
        if suffix == ".tar.gz":
            env["_PYTHON_BUILD_FORCE_SKIP_XZ"] = "1"
    commands.append(StringCommand(env_prefix(env) + sh(f"{s.pyenv_root}/bin/pyenv", "install",
                                                       "--skip-existing", s.python_version)))
    return commands


def _pip_poetry(s: Settings) -> list[PyinfraCommand]:
    venv = f"{POETRY_HOME}/venv"
    return [StringCommand(sh("rm", "-rf", venv) + " && " + sh(s.python_bin, "-m", "venv", venv)),
            StringCommand(env_prefix(tool_env(s.package_index_url)) + sh(
                f"{venv}/bin/pip", "install", "-q", f"poetry=={s.poetry_version}", PYPI_MIRROR_PLUGIN))]


def _built(s: Settings, kind: str) -> list[PyinfraCommand]:
    return _compile(s) if kind == "cpython" else _pip_poetry(s)


def _finished(s: Settings, kind: str):
    """After the tree is in place: pyenv's shims (as `pyenv install` leaves them), or Poetry on
    the PATH and its marker."""
    if kind == "cpython":
        yield env_prefix({"PYENV_ROOT": s.pyenv_root}) + sh(f"{s.pyenv_root}/bin/pyenv", "rehash")
        return
    yield sh("ln", "-sfn", f"{POETRY_HOME}/venv/bin/poetry", "/usr/local/bin/poetry")
    yield f"echo {sh(json.dumps(poetry_marker(s)))} > {sh(POETRY_HOME + '/installed.json')}"


def _build_step(kind: str, s: Settings, present: str):
    """Where this server builds the tree: from the URL's artifact if there is one, else by
    building it; where it receives it, nothing yet."""
    role = plan(kind).get(host.name)
    if role is None:
        host.noop(present)
        return
    server = _server(host)
    art = spec(s, server.platform, kind)
    if kind not in server.logged:  # once, though pyinfra may run this twice (plan, execute)
        server.logged.add(kind)
        host.log(artifacts.describe(art, role, art.key(server.commit), s.artifact_url))
    if role.action == "receive":
        host.noop(f"{art.label} comes from an artifact, a later step installs it")
        return
    if s.artifact_url:
        yield from _script()
        yield artifacts.Install(art, server.cache, s.artifact_url, _built(s, kind))
        yield from _finished(s, kind)
    else:
        yield from _built(s, kind)
        if kind == "poetry":
            yield from _finished(s, kind)


@operation()
def python(s: Settings):
    """
    CPython `python_version` built by pyenv from source (R3), on the servers that build it.

    + s: the settings; the first server of each platform that lacks it builds it (or takes it
      from `artifact_url`), the others get its artifact in `from_artifact`
    """
    yield from _build_step("cpython", s, f"Python {s.python_version} is installed")


@operation()
def poetry(s: Settings):
    """
    Poetry `poetry_version` in its own venv, with the PyPI mirror plugin, on the PATH (R5), on
    the servers that build it.

    + s: the settings; as for `python`
    """
    yield from _build_step("poetry", s, f"Poetry {s.poetry_version} is installed")


@operation()
def shared(kind: str, s: Settings):
    """
    The tree this server built in this run packed into the controller's artifact cache, with
    its manifest, for the servers of the same platform.

    + kind: cpython or poetry
    + s: the settings
    """
    role = plan(kind).get(host.name)
    if not (role and role.share):
        host.noop("no artifact to share from this server")
        return
    server = _server(host)
    yield from _script()
    yield artifacts.Share(spec(s, server.platform, kind), server.cache)


@operation()
def from_artifact(kind: str, s: Settings):
    """
    The tree from its artifact (the controller's cache or `artifact_url`): sha256 checked,
    unpacked beside its place and moved in, proven by running it. Without a fitting, intact
    artifact it is built here instead, and the output says why.

    + kind: cpython or poetry
    + s: the settings
    """
    role = plan(kind).get(host.name)
    if not (role and role.action == "receive"):
        host.noop("nothing to install from an artifact")
        return
    server = _server(host)
    yield from _script()
    yield artifacts.Install(spec(s, server.platform, kind), server.cache, s.artifact_url,
                            _built(s, kind))
    yield from _finished(s, kind)
