"""Connect to a Docker-API engine: Docker if one answers, else Podman's service."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import docker
import docker.errors

from .errors import SandboxError

PODMAN_SOCKET = "/run/podman/podman.sock"

CONTAINERS_CONF = """\
# Written by the sandbox for its own Podman API service.
[containers]
# No CAP_SYS_RESOURCE on some hosts: containers must not set rlimits.
default_ulimits = []

[engine]
runtime = "runc"
"""


def cache_dir() -> Path:
    path = Path(os.environ.get("SANDBOX_CACHE", "/var/cache/djdeploy-sandbox"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def file_lock(name: str) -> Iterator[None]:
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class Engine:
    client: docker.DockerClient
    kind: str  # "docker" or "podman"


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise SandboxError(f"{what} needs root: run the sandbox as root (e.g. with sudo)")


def _ping(base_url: str | None) -> docker.DockerClient | None:
    try:
        if base_url is None:
            client = docker.from_env(timeout=300)
        else:
            client = docker.DockerClient(base_url=base_url, timeout=300)
        client.ping()
        return client
    except Exception:
        return None


def _is_podman(client: docker.DockerClient) -> bool:
    try:
        version = client.version()
    except Exception:
        return False
    names = " ".join(c.get("Name", "") for c in version.get("Components", []))
    return "podman" in names.lower()


def connect(log_dir: Path, log=print) -> Engine:
    """Return a client for a running engine, starting Podman's service if needed."""
    if os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists():
        client = _ping(None)
        if client is not None:
            return Engine(client, "podman" if _is_podman(client) else "docker")
    client = _ping(f"unix://{PODMAN_SOCKET}")
    if client is not None:
        return Engine(client, "podman")
    podman = shutil.which("podman")
    if podman is None:
        raise SandboxError(
            "no container engine: no Docker Engine answers and podman is not installed "
            "(apt-get install podman runc)"
        )
    if shutil.which("runc") is None:
        raise SandboxError("podman needs the runc runtime here: apt-get install runc")
    require_root("starting Podman's API service")
    with file_lock("podman-service"):
        client = _ping(f"unix://{PODMAN_SOCKET}")
        if client is not None:
            return Engine(client, "podman")
        conf_dir = cache_dir() / "podman"
        conf_dir.mkdir(parents=True, exist_ok=True)
        conf = conf_dir / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        Path(PODMAN_SOCKET).parent.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        logfile = log_dir / "podman-service.log"
        env = dict(os.environ, CONTAINERS_CONF=str(conf))
        log(f"starting Podman API service on {PODMAN_SOCKET} (log: {logfile})")
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(
                [podman, "--runtime", "runc", "system", "service", "--time=0",
                 f"unix://{PODMAN_SOCKET}"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            client = _ping(f"unix://{PODMAN_SOCKET}")
            if client is not None:
                return Engine(client, "podman")
            if proc.poll() is not None:
                break
            time.sleep(0.3)
        tail = logfile.read_text(errors="replace").splitlines()[-5:]
        raise SandboxError(
            f"Podman API service did not come up on {PODMAN_SOCKET}: "
            + " | ".join(tail)
        )
