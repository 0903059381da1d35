"""The "source server": what a server room's internal mirror would serve.

Runs on this machine, listening on the container network's gateway address:
git repositories over ``git daemon`` and plain files over HTTP.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .engine import cache_dir, file_lock
from .errors import SandboxError
from .hostinfo import pyenv_root, read_apt_mirrors

PYTHON_VERSION = "3.11.2"
PYTHON_SHA256 = "2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849"
PYTHON_TGZ = f"Python-{PYTHON_VERSION}.tgz"
PYTHON_DEBIAN_ORIG = f"pool/main/p/python3.11/python3.11_{PYTHON_VERSION}.orig.tar.gz"

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_APP_DIR = REPO_ROOT / "example_app"

# Not part of the application source.
EXAMPLE_APP_EXCLUDES = [
    ".venv/", "venv/", "data/", "staticfiles/", "media/", "__pycache__/", "*.pyc",
    "*.sqlite3", "node_modules/", ".pytest_cache/", "*.egg-info/",
]

# Fixed identity and date: the same content always gives the same commit id.
FIXED_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Example App",
    "GIT_AUTHOR_EMAIL": "example-app@example.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+0000",
    "GIT_COMMITTER_NAME": "Example App",
    "GIT_COMMITTER_EMAIL": "example-app@example.invalid",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+0000",
}


def _git(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        ["git", "-c", "safe.directory=*", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    if proc.returncode != 0:
        raise SandboxError(f"git {' '.join(args[:3])} failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip()


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, 0))
        except OSError as exc:
            raise SandboxError(
                f"cannot listen on {host} (the container network's gateway): {exc}; "
                "start a server first (sandbox up)"
            ) from None
        return s.getsockname()[1]


def _wait_port(host: str, port: int, proc: subprocess.Popen, what: str, logfile: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = logfile.read_text(errors="replace").splitlines()[-5:]
    raise SandboxError(f"{what} did not start on {host}:{port} (port clash?): " + " | ".join(tail))


def python_tarball(log=print) -> Path:
    """CPython source tarball from Debian's source archive, cached and verified."""
    target = cache_dir() / "python" / PYTHON_TGZ
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock("python-tarball"):
        if target.exists():
            return target
        url = f"{read_apt_mirrors().main}/{PYTHON_DEBIAN_ORIG}"
        log(f"downloading CPython {PYTHON_VERSION} source from {url}")
        tmp = target.with_suffix(".part")
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=120) as resp, open(tmp, "wb") as out:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as exc:
            raise SandboxError(f"cannot download {url}: {exc}") from None
        if digest.hexdigest() != PYTHON_SHA256:
            tmp.unlink(missing_ok=True)
            raise SandboxError(f"{url}: sha256 {digest.hexdigest()} != {PYTHON_SHA256}")
        tmp.rename(target)
    return target


class SourceServer:
    """git daemon + HTTP file server for the servers of one state dir."""

    def __init__(self, state_dir: Path, gateway_fn, log=print) -> None:
        self.root = state_dir / "source"
        self.git_dir = self.root / "git"
        self.files_dir = self.root / "files"
        self._state_file = self.root / "source.json"
        self._gateway_fn = gateway_fn
        self._log = log

    # -- state -------------------------------------------------------------
    def _state(self) -> dict:
        try:
            return json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return {}

    def running(self) -> bool:
        st = self._state()
        return bool(st) and _alive(st.get("git_pid")) and _alive(st.get("http_pid"))

    def info(self) -> dict:
        """Addresses of the running source server (starts it if needed)."""
        st = self._state()
        if not (st and _alive(st.get("git_pid")) and _alive(st.get("http_pid"))):
            st = self.start()
        return st

    # -- public API --------------------------------------------------------
    @property
    def host(self) -> str:
        return self.info()["host"]

    def git_url(self, repo_name: str) -> str:
        st = self.info()
        return f"git://{st['host']}:{st['git_port']}/{repo_name.removesuffix('.git')}.git"

    def file_url(self, path: str) -> str:
        st = self.info()
        return f"http://{st['host']}:{st['http_port']}/{path.lstrip('/')}"

    def repo_path(self, repo_name: str) -> Path:
        return self.git_dir / f"{repo_name.removesuffix('.git')}.git"

    @property
    def pyenv_ref(self) -> str:
        return _git("-C", str(self.repo_path("pyenv")), "rev-parse", "refs/heads/sandbox-pinned")

    @property
    def python_build_mirror_url(self) -> str:
        return self.file_url("python")

    def reset_repo(self, repo_name: str) -> Path:
        """Re-create a served repository from its origin (drops pushed commits)."""
        path = self.repo_path(repo_name)
        if path.exists():
            shutil.rmtree(path)
        return self._prepare_repo(repo_name)

    # -- content -----------------------------------------------------------
    def _prepare_repo(self, repo_name: str) -> Path:
        if repo_name.removesuffix(".git") == "pyenv":
            return self._prepare_pyenv()
        if repo_name.removesuffix(".git") == "example_app":
            return self._prepare_example_app()
        raise SandboxError(f"unknown repository {repo_name!r}")

    def _prepare_pyenv(self) -> Path:
        origin = pyenv_root()
        if origin is None:
            raise SandboxError(
                "no pyenv git checkout found (pyenv root / $PYENV_ROOT / ~/.pyenv): "
                "clone pyenv there first"
            )
        head = _git("-C", str(origin), "rev-parse", "HEAD")
        bare = self.repo_path("pyenv")
        if bare.exists():
            try:
                if _git("-C", str(bare), "rev-parse", "refs/heads/sandbox-pinned") == head:
                    return bare
            except SandboxError:
                pass
            shutil.rmtree(bare)
        bare.parent.mkdir(parents=True, exist_ok=True)
        _git("clone", "--quiet", "--bare", str(origin), str(bare))
        # pyenv's checkout has no tags: pin its HEAD commit under a stable name
        _git("-C", str(bare), "update-ref", "refs/heads/sandbox-pinned", head)
        return bare

    def _tree(self, bare: Path, folder: Path, excludes: list[str] | None = None) -> str:
        """A git tree of `folder`'s files: with `excludes`, everything but them; without, what
        the folder's own .gitignore lets in."""
        index = self.root / f"{bare.stem}.index"
        index.unlink(missing_ok=True)
        env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(folder)}
        if folder.is_dir():
            if excludes is None:
                _git("--git-dir", str(bare), "add", "--all", "--", ".", env=env, cwd=folder)
            else:
                _git("--git-dir", str(bare), "add", "--all", "--force", "--", ".",
                     *[f":(exclude,glob)**/{p.rstrip('/')}" + ("/**" if p.endswith("/") else "")
                       for p in excludes],
                     env=env, cwd=folder)
        tree = _git("--git-dir", str(bare), "write-tree", env=env)
        index.unlink(missing_ok=True)
        return tree

    def _example_app_tree(self, bare: Path) -> str:
        return self._tree(bare, EXAMPLE_APP_DIR, EXAMPLE_APP_EXCLUDES)

    def publish(self, name: str, folder: Path, message: str = "Initial commit") -> str:
        """Serve `folder` as repository `name` (one commit on `main`, made anew each time);
        returns the commit."""
        bare = self.repo_path(name)
        if bare.exists():
            shutil.rmtree(bare)
        bare.parent.mkdir(parents=True, exist_ok=True)
        _git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        tree = self._tree(bare, Path(folder))
        commit = _git("--git-dir", str(bare), "commit-tree", tree, "-m", message, env=FIXED_GIT_ENV)
        _git("--git-dir", str(bare), "update-ref", "refs/heads/main", commit)
        return commit

    def _prepare_example_app(self) -> Path:
        bare = self.repo_path("example_app")
        marker = self.root / "example_app.created"
        if bare.exists():
            try:
                main = _git("-C", str(bare), "rev-parse", "refs/heads/main")
            except SandboxError:
                main = ""
            created = marker.read_text().strip() if marker.exists() else ""
            if main != created:
                return bare  # commits were pushed on top: leave it alone
            tree = self._example_app_tree(bare)
            if _git("-C", str(bare), "rev-parse", f"{main}^{{tree}}") == tree:
                return bare
            self._log("example_app changed: re-creating example_app.git")
            shutil.rmtree(bare)
        bare.parent.mkdir(parents=True, exist_ok=True)
        _git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        tree = self._example_app_tree(bare)
        commit = _git("--git-dir", str(bare), "commit-tree", tree, "-m", "example_app",
                      env=FIXED_GIT_ENV)
        _git("--git-dir", str(bare), "update-ref", "refs/heads/main", commit)
        _git("--git-dir", str(bare), "symbolic-ref", "HEAD", "refs/heads/main")
        marker.write_text(commit + "\n")
        return bare

    def _prepare_files(self) -> None:
        tgz = python_tarball(self._log)
        pydir = self.files_dir / "python"
        pydir.mkdir(parents=True, exist_ok=True)
        for name in (PYTHON_SHA256, PYTHON_TGZ):
            link = pydir / name
            if not link.exists():
                link.unlink(missing_ok=True)
                link.symlink_to(tgz)

    # -- processes ---------------------------------------------------------
    def start(self) -> dict:
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock("source-" + hashlib.sha256(str(self.root).encode()).hexdigest()[:8]):
            st = self._state()
            host = self._gateway_fn()
            if st and st.get("host") == host and _alive(st.get("git_pid")) \
                    and _alive(st.get("http_pid")):
                return st
            self.stop()
            self._prepare_pyenv()
            self._prepare_example_app()
            self._prepare_files()
            git_port, http_port = _free_port(host), _free_port(host)
            git_log = self.root / "git-daemon.log"
            http_log = self.root / "http.log"
            with open(git_log, "ab") as out:
                git = subprocess.Popen(
                    ["git", "daemon", "--reuseaddr", "--export-all", f"--listen={host}",
                     f"--port={git_port}", f"--base-path={self.git_dir}", "--verbose"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                )
            with open(http_log, "ab") as out:
                http = subprocess.Popen(
                    [sys.executable, "-m", "http.server", "--bind", host,
                     "--directory", str(self.files_dir), str(http_port)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                )
            st = {"host": host, "git_port": git_port, "git_pid": git.pid,
                  "http_port": http_port, "http_pid": http.pid}
            self._state_file.write_text(json.dumps(st, indent=2) + "\n")
            _wait_port(host, git_port, git, "git daemon", git_log)
            _wait_port(host, http_port, http, "HTTP file server", http_log)
            self._log(f"source server: git://{host}:{git_port}/  http://{host}:{http_port}/")
            return st

    def stop(self) -> None:
        st = self._state()
        for key in ("git_pid", "http_pid"):
            pid = st.get(key)
            if _alive(pid):
                try:
                    os.killpg(pid, signal.SIGTERM)
                except OSError:
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except OSError:
                        pass
                for _ in range(50):
                    if not _alive(pid):
                        break
                    time.sleep(0.1)
        self._state_file.unlink(missing_ok=True)

    def remove(self) -> None:
        """Stop and delete everything served (repositories included)."""
        self.stop()
        if self.root.exists():
            shutil.rmtree(self.root)
