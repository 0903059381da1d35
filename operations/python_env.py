"""The runbook's Python: pyenv (R4), CPython built by it (R3), Poetry in its own venv (R5)."""

from __future__ import annotations

import json
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, OperationError, operation

from .common import JsonState, env_prefix, sh

PYPI_MIRROR_PLUGIN = "poetry-plugin-pypi-mirror==0.6.5"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
POETRY_HOME = "/opt/poetry"

# What pyenv's wiki lists for building CPython on Debian, less Tk, plus the headers common
# sdists need (libpq, libjpeg, zlib, libffi) and the tools the deploy itself uses.
BUILD_PACKAGES = [
    "build-essential", "pkg-config", "git", "curl", "ca-certificates", "xz-utils",
    "libssl-dev", "zlib1g-dev", "libbz2-dev", "libreadline-dev", "libsqlite3-dev",
    "libncurses-dev", "libffi-dev", "liblzma-dev", "libgdbm-dev", "uuid-dev",
    "libpq-dev", "libjpeg-dev", "sqlite3",
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


@operation()
def python(version: str, root: str, mirror_url: str = "", build_env: dict | None = None,
           source_tarball: str = ""):
    """
    CPython `version` built by pyenv from source.

    + version: for example 3.10.6
    + root: PYENV_ROOT
    + mirror_url: PYTHON_BUILD_MIRROR_URL, a mirror serving tarballs by their sha256
    + build_env: extra environment for the build
    + source_tarball: a CPython source tarball on the controller, put in pyenv's cache
    """
    current = host.get_fact(PyenvState, root=root, ref="HEAD")
    if version in current.get("versions", []):
        host.noop(f"Python {version} is installed")
        return
    env = {"PYENV_ROOT": root, **(build_env or {})}
    if mirror_url:
        env["PYTHON_BUILD_MIRROR_URL"] = mirror_url
    if source_tarball:
        tarball = Path(source_tarball)
        if not tarball.is_file():
            raise OperationError(f"python_source_tarball: {tarball} is not a file on the controller")
        yield sh("mkdir", "-p", f"{root}/cache")
        # pyenv looks in its cache for Python-X.Y.Z.tar.gz or .tar.xz and checks the sha256.
        suffix = ".tar.xz" if tarball.name.endswith(".xz") else ".tar.gz"
        yield FileUploadCommand(str(tarball), f"{root}/cache/Python-{version}{suffix}",
                                remote_temp_filename=host.get_temp_filename(str(tarball)))
        if suffix == ".tar.gz":
            env["_PYTHON_BUILD_FORCE_SKIP_XZ"] = "1"
    yield env_prefix(env) + sh(f"{root}/bin/pyenv", "install", "--skip-existing", version)


class PoetryState(JsonState):
    """
    What is installed in Poetry's venv: its marker (versions and interpreter), if complete.
    """

    def command(self, home: str) -> str:
        return f"cat {sh(home + '/installed.json')} 2>/dev/null || true"


@operation()
def poetry(version: str, python: str, index_url: str = "", home: str = POETRY_HOME):
    """
    Poetry `version` in its own venv, with the PyPI mirror plugin, on the PATH.

    + version: Poetry version to pin
    + python: interpreter that runs Poetry (pyenv's)
    + index_url: a PyPI simple index for pip and Poetry; empty for the default
    + home: where Poetry's venv lives
    """
    marker = {"poetry": version, "plugin": PYPI_MIRROR_PLUGIN, "python": python}
    if host.get_fact(PoetryState, home=home) == marker:
        host.noop(f"Poetry {version} is installed")
        return
    pip = f"{home}/venv/bin/pip"
    yield sh("rm", "-rf", f"{home}/venv") + " && " + sh(python, "-m", "venv", f"{home}/venv")
    yield env_prefix(tool_env(index_url)) + sh(pip, "install", "-q", f"poetry=={version}",
                                               PYPI_MIRROR_PLUGIN)
    yield sh("ln", "-sfn", f"{home}/venv/bin/poetry", "/usr/local/bin/poetry")
    yield f"echo {sh(json.dumps(marker))} > {sh(home + '/installed.json')}"
