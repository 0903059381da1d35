"""Local Debian test servers: containers with systemd and sshd."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import docker.errors
from docker.types import EndpointConfig

from .engine import Engine, connect
from .errors import SandboxError
from .hostinfo import SUITES, ca_certificates, npm_registry_url, package_index_url, state_prefix
from .image import DEPLOY_UID, ensure_base_image
from .source import PYTHON_VERSION, SourceServer

REPO_ROOT = Path(__file__).resolve().parent.parent
LABEL = "djdeploy.sandbox"
SNAPSHOT_REPO = "djdeploy-snapshot"
SSH_USER = "deploy"
LOOPBACK = "127.0.0.1"


def _log_stderr(msg: str) -> None:
    print(f"sandbox: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Server:
    """One test server, as the deploy and the tests reach it."""

    name: str
    os: str
    container: str
    state: str  # the container's state: running, exited, ...
    address: str | None  # the container's own IP on the container network
    ssh_host: str
    ssh_port: int
    ssh_user: str
    ssh_key: str
    http_port: int
    https_port: int
    http_url: str
    https_url: str
    image: str = ""
    roles: tuple[str, ...] = ("app",)  # app, db, lb, backup: its roles in the inventory
    settings: dict = field(default_factory=dict)  # its own deploy settings, as in SERVERS
    failed_units: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def ssh_command(self, *cmd: str, batch: bool = True) -> list[str]:
        """An ``ssh`` argv that logs into this server as the deploy user."""
        return [
            "ssh", "-i", self.ssh_key, "-p", str(self.ssh_port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", *(["-o", "BatchMode=yes"] if batch else ["-t"]),
            f"{self.ssh_user}@{self.ssh_host}", *cmd,
        ]

    def pyinfra_data(self) -> dict:
        """Host data for a pyinfra inventory entry."""
        return {
            "ssh_hostname": self.ssh_host,
            "ssh_port": self.ssh_port,
            "ssh_user": self.ssh_user,
            "ssh_key": self.ssh_key,
            "ssh_strict_host_key_checking": "off",
            "ssh_known_hosts_file": "/dev/null",
        }


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
            return True
        except OSError:
            return False


def _tar_bytes(entries: list[tuple[str, bytes | None, int, int]]) -> bytes:
    """entries: (path, content or None for a directory, mode, uid)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, content, mode, uid in entries:
            info = tarfile.TarInfo(path)
            info.mode = mode
            info.uid = info.gid = uid
            info.mtime = int(time.time())
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def role_names(roles: list[str]) -> dict[str, tuple[str, ...]]:
    """One server per role given, named after its role and its rank: lb,app,app -> lb-1,
    app-1, app-2 (a role may also be a combination such as app+db)."""
    plan: dict[str, tuple[str, ...]] = {}
    counts: dict[str, int] = {}
    for role in roles:
        parts = tuple(role.split("+"))
        counts[role] = counts.get(role, 0) + 1
        plan[f"{role.replace('+', '-')}-{counts[role]}"] = parts
    return plan


# The last line of every exec answer (Sandbox.exec): an answer without it was lost on the way.
EXEC_MARK = "__djdeploy_exec_end__"
# Where a command run through Sandbox.exec keeps its output and exit code (not /tmp: systemd may
# mount a fresh /tmp while the server boots).
EXEC_KEEP = "/var/tmp/.djdeploy-exec"

class Sandbox:
    """Test servers of one state directory, plus their source server."""

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        boot_timeout: float = 120,
        log=_log_stderr,
    ) -> None:
        if state_dir is None:
            state_dir = os.environ.get("SANDBOX_STATE") or REPO_ROOT / ".sandbox"
        self.state_dir = Path(state_dir).resolve()
        self.prefix = state_prefix(self.state_dir)
        self.boot_timeout = boot_timeout
        self.log = log
        self._engine: Engine | None = None
        self._source: SourceServer | None = None

    # -- plumbing ----------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._engine = connect(self.state_dir, log=self.log)
        return self._engine

    @property
    def client(self):
        return self.engine.client

    def container_name(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def _containers(self):
        return self.client.containers.list(
            all=True, filters={"label": f"{LABEL}.state={self.state_dir}"}
        )

    def _container(self, name: str):
        try:
            return self.client.containers.get(self.container_name(name))
        except docker.errors.NotFound:
            raise SandboxError(
                f"no server {name!r} in {self.state_dir} (see: python -m sandbox status)"
            ) from None

    @property
    def ssh_key(self) -> Path:
        """Private key of the key pair used for every server (generated once)."""
        key = self.state_dir / "ssh" / "id_ed25519"
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                 f"sandbox-{self.prefix}", "-f", str(key)],
                check=True,
            )
        key.chmod(0o600)
        return key

    def _server_from(self, container) -> Server:
        attrs = container.attrs
        labels = attrs["Config"].get("Labels") or {}
        bindings = attrs["HostConfig"].get("PortBindings") or {}

        def port(p: str) -> int:
            try:
                return int(bindings[f"{p}/tcp"][0]["HostPort"])
            except (KeyError, IndexError, TypeError, ValueError):
                return int(labels.get(f"{LABEL}.port{p}", 0))

        address = None
        for net in (attrs.get("NetworkSettings", {}).get("Networks") or {}).values():
            address = net.get("IPAddress") or address
        address = address or attrs.get("NetworkSettings", {}).get("IPAddress") or None
        http_port, https_port = port("80"), port("443")
        return Server(
            name=labels.get(f"{LABEL}.name", container.name),
            os=labels.get(f"{LABEL}.os", ""),
            container=container.name,
            state=attrs.get("State", {}).get("Status", "unknown"),
            address=address,
            ssh_host=LOOPBACK,
            ssh_port=port("22"),
            ssh_user=SSH_USER,
            ssh_key=str(self.state_dir / "ssh" / "id_ed25519"),
            http_port=http_port,
            https_port=https_port,
            http_url=f"http://{LOOPBACK}:{http_port}",
            https_url=f"https://{LOOPBACK}:{https_port}",
            image=labels.get(f"{LABEL}.image", ""),
            roles=tuple((labels.get(f"{LABEL}.roles") or "app").split(",")),
            settings=json.loads(labels.get(f"{LABEL}.settings") or "{}"),
        )

    def gateway(self) -> str:
        """This machine's address as the servers see it (container network gateway)."""
        for c in self._containers():
            for net in (c.attrs.get("NetworkSettings", {}).get("Networks") or {}).values():
                if net.get("Gateway"):
                    return net["Gateway"]
        default = "podman" if self.engine.kind == "podman" else "bridge"
        try:
            cfg = self.client.networks.get(default).attrs["IPAM"]["Config"]
            return cfg[0]["Gateway"]
        except (docker.errors.NotFound, KeyError, IndexError):
            raise SandboxError(f"cannot find the gateway of container network {default!r}") from None

    @property
    def source(self) -> SourceServer:
        if self._source is None:
            self._source = SourceServer(self.state_dir, self.gateway, log=self.log)
        return self._source

    # -- servers -----------------------------------------------------------
    def servers(self) -> list[Server]:
        return sorted(
            (self._server_from(c) for c in self._containers()),
            key=lambda s: (len(s.name), s.name),
        )

    def server(self, name: str) -> Server:
        return self._server_from(self._container(name))

    def _create(self, name: str, os_name: str, image: str | None, roles: tuple[str, ...],
                settings: dict | None = None):
        if os_name not in SUITES:
            raise SandboxError(f"unknown os {os_name!r}: choose one of {', '.join(SUITES)}")
        cname = self.container_name(name)
        try:
            self.client.containers.get(cname)
            raise SandboxError(f"server {name!r} already exists ({cname}); remove it first")
        except docker.errors.NotFound:
            pass
        if image is None:
            image = ensure_base_image(self.engine, os_name, log=self.log)
        else:
            try:
                self.client.images.get(image)
            except docker.errors.ImageNotFound:
                raise SandboxError(f"image {image!r} not found (make it with snapshot())") from None
        pub = self.ssh_key.with_suffix(".pub").read_bytes()
        ports = {p: _free_loopback_port() for p in (22, 80, 443)}
        for p, host_port in ports.items():
            if not _port_free(host_port):
                raise SandboxError(f"port {LOOPBACK}:{host_port} for {name}:{p} is in use")
        container = self.client.containers.create(
            image,
            **self._fixed_address(name),
            command=["/sbin/init"],
            name=cname,
            hostname=name,
            privileged=True,
            detach=True,
            stop_signal="SIGRTMIN+3",
            tmpfs={"/run": "rw,exec,mode=755", "/run/lock": "rw,mode=1777"},
            environment={"container": self.engine.kind},
            ports={f"{p}/tcp": (LOOPBACK, hp) for p, hp in ports.items()},
            labels={
                f"{LABEL}.state": str(self.state_dir),
                f"{LABEL}.name": name,
                f"{LABEL}.os": os_name,
                f"{LABEL}.image": image,
                f"{LABEL}.roles": ",".join(roles),
                f"{LABEL}.settings": json.dumps(settings or {}),
                **{f"{LABEL}.port{p}": str(hp) for p, hp in ports.items()},
            },
        )
        entries: list[tuple[str, bytes | None, int, int]] = [
            ("home/deploy/.ssh", None, 0o700, DEPLOY_UID),
            ("home/deploy/.ssh/authorized_keys", pub, 0o600, DEPLOY_UID),
            ("etc/machine-id", b"", 0o444, 0),
        ]
        for crt in ca_certificates():
            entries.append((f"usr/local/share/ca-certificates/{crt.name}", crt.read_bytes(),
                            0o644, 0))
        container.put_archive("/", _tar_bytes(entries))
        return container

    def _fixed_address(self, name: str) -> dict:
        """Network arguments that give the server the same address at every boot, as a real
        server keeps its own (the fleet's servers know each other by address). Podman allows
        it on its default network; an engine that does not gets none (an address per boot)."""
        if self.engine.kind != "podman":
            return {}
        try:
            subnet = self.client.networks.get("podman").attrs["IPAM"]["Config"][0]["Subnet"]
        except (docker.errors.APIError, KeyError, IndexError):
            return {}
        network = ipaddress.ip_network(subnet)
        used = {net.get("IPAddress") for c in self.client.containers.list(all=True)
                for net in (c.attrs.get("NetworkSettings", {}).get("Networks") or {}).values()}
        # Far above where the engine hands out addresses itself, picked from the name.
        seed = int(hashlib.sha256(self.container_name(name).encode()).hexdigest(), 16)
        span = max(network.num_addresses // 2 - 2, 1)
        for i in range(256):
            address = str(network[network.num_addresses // 2 + (seed + i) % span])
            if address not in used:
                return {"network": "podman", "networking_config": {
                    "podman": EndpointConfig(version=self.client.api._version, ipv4_address=address)}}
        return {}

    def _create_and_start(self, name: str, os_name: str, image: str | None,
                          roles: tuple[str, ...] = ("app",), settings: dict | None = None) -> None:
        for attempt in range(3):
            container = self._create(name, os_name, image, roles, settings)
            try:
                container.start()
                return
            except docker.errors.APIError as exc:
                container.remove(force=True)
                if "address already in use" not in str(exc) or attempt == 2:
                    raise SandboxError(f"cannot start {name}: {exc}") from None
                # another process took one of the ports we picked: pick again

    def _after_boot(self, name: str) -> None:
        if ca_certificates():
            res = self.exec(name, "update-ca-certificates >/dev/null 2>&1")
            if res.returncode != 0:
                raise SandboxError(f"{name}: update-ca-certificates failed: {res.stderr}")

    def add_server(self, name: str, os: str = "debian12", image: str | None = None,
                   roles: tuple[str, ...] = ("app",), settings: dict | None = None) -> Server:
        """Create and boot one server from the base image (or a snapshot image), with its roles
        in the inventory (app, db, lb, backup) and settings of its own (they win over the
        shared ones, as in inventory.py's SERVERS)."""
        self.log(f"starting {name} ({os})")
        self._create_and_start(name, os, image, tuple(roles), settings)
        self._wait_ready(name)
        self._after_boot(name)
        # The source server listens on the container network's gateway, which exists only
        # while a container runs: start it now that one does.
        self.source.info()
        return self.server(name)

    def up(self, servers: int = 1, os: str = "debian12",
           roles: list[str] | None = None) -> list[Server]:
        """Make sure servers sandbox-1..N run (keeps existing ones), or with `roles` (e.g.
        lb, db, app, app) one server per role named after it (lb-1, db-1, app-1, app-2), and
        the source server."""
        plan = role_names(roles) if roles else {f"sandbox-{i}": ("app",) for i in range(1, servers + 1)}
        names = list(plan)
        existing = {s.name: s for s in self.servers()}
        for name in names:
            if name in existing and existing[name].os != os:
                raise SandboxError(
                    f"{name} runs {existing[name].os}, not {os}: run 'python -m sandbox down' "
                    "first or use another state dir (SANDBOX_STATE)"
                )
        started, created = [], []
        for name in names:
            if name in existing and existing[name].state == "running":
                continue
            self.log(f"starting {name} ({os})")
            if name not in existing:
                self._create_and_start(name, os, None, plan[name])
                created.append(name)
            else:
                self._container(name).start()
            started.append(name)
        for name in started:
            self._wait_ready(name)
            if name in created:
                self._after_boot(name)
        self.source.info()  # starts the source server if it is not running
        return self.servers()

    def remove_server(self, name: str) -> None:
        try:
            self.client.containers.get(self.container_name(name)).remove(force=True, v=True)
        except docker.errors.NotFound:
            pass

    def restart(self, name: str) -> Server:
        """A real reboot: systemd shuts down, the container stops and boots again."""
        container = self._container(name)
        self.log(f"rebooting {name}")
        container.stop(timeout=60)
        container.start()
        failed = self._wait_ready(name)
        server = self.server(name)
        return Server(**{**server.to_dict(), "failed_units": failed})

    def down(self) -> None:
        """Remove this state dir's containers and stop (and delete) the source server."""
        for c in self._containers():
            self.log(f"removing {c.name}")
            c.remove(force=True, v=True)
        if self._source is not None or (self.state_dir / "source").exists():
            self.source.remove()

    def snapshot(self, name: str, tag: str) -> str:
        """Commit a server's container to an image; returns the image reference."""
        container = self._container(name)
        repo, _, t = tag.rpartition(":") if ":" in tag else (SNAPSHOT_REPO, "", tag)
        container.commit(repository=repo, tag=t)
        ref = f"{repo}:{t}"
        try:
            self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            raise SandboxError(f"snapshot of {name} as {ref} did not produce an image") from None
        return ref

    def exec(self, name: str, cmd: str, user: str = "root",
             environment: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a shell command in the server via the engine (not ssh).

        A busy engine now and then loses an exec's answer (empty, or cut short). The command's
        output and exit code are also kept in files on the server and its answer ends with a
        marker line: an answer without the marker is read again from those files (the command
        is never run twice)."""
        container = self._container(name)
        keep = f"{EXEC_KEEP}-{uuid.uuid4().hex[:12]}"
        wrapped = (f"find {EXEC_KEEP.rsplit('/', 1)[0]} -maxdepth 1 -name '{EXEC_KEEP.rsplit('/', 1)[1]}-*' "
                   f"-mmin +30 -delete 2>/dev/null; "
                   f"( {cmd}\n) >{keep}.out 2>{keep}.err; rc=$?; echo \"$rc\" >{keep}.rc; "
                   f"cat {keep}.out; cat {keep}.err >&2; printf '\\n{EXEC_MARK}%d\\n' \"$rc\"; exit $rc")
        res = container.exec_run(["/bin/sh", "-c", wrapped], user=user, demux=True,
                                 environment=environment)
        out, err = res.output if isinstance(res.output, tuple) else (res.output, b"")
        text = (out or b"").decode(errors="replace")
        end = text.rfind(f"\n{EXEC_MARK}")
        if end >= 0:
            return subprocess.CompletedProcess(cmd, res.exit_code, text[:end],
                                               (err or b"").decode(errors="replace"))
        return self._kept_answer(container, cmd, keep)

    def _kept_answer(self, container, cmd: str, keep: str) -> subprocess.CompletedProcess:
        """The answer of a command whose exec answer was lost, from the files it left (waiting
        for it to finish if it still runs)."""
        read = (f"[ -e {keep}.out ] || exit 9; cat {keep}.rc && printf {EXEC_MARK} && "
                f"cat {keep}.out && printf {EXEC_MARK} && cat {keep}.err")
        started = time.monotonic()
        while time.monotonic() - started < 900:
            res = container.exec_run(["/bin/sh", "-c", read], demux=False)
            parts = (res.output or b"").decode(errors="replace").split(EXEC_MARK)
            if res.exit_code == 0 and len(parts) == 3 and parts[0].strip().isdigit():
                return subprocess.CompletedProcess(cmd, int(parts[0]), parts[1], parts[2])
            if res.exit_code == 9 and time.monotonic() - started > 30:
                break  # the command never started
            time.sleep(0.5)
        raise SandboxError(f"no answer from {container.name} to: {cmd}")

    # -- readiness ---------------------------------------------------------
    def _wait_ready(self, name: str) -> list[str]:
        """Wait for systemd to finish booting and sshd to answer; return failed units."""
        deadline = time.monotonic() + self.boot_timeout
        state = ""
        while time.monotonic() < deadline:
            remaining = max(1, int(deadline - time.monotonic()))
            try:
                res = self.exec(name, f"timeout {remaining} systemctl is-system-running --wait")
                state = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
            except docker.errors.APIError as exc:
                state = f"exec failed: {exc}"
            if state in ("running", "degraded"):
                break
            time.sleep(0.5)
        else:
            raise SandboxError(
                f"{name} did not finish booting within {self.boot_timeout:.0f}s "
                f"(state {state!r}): {self._diagnostics(name)}"
            )
        failed: list[str] = []
        if state == "degraded":
            out = self.exec(name, "systemctl --failed --no-legend --plain").stdout
            failed = [line.split()[0] for line in out.splitlines() if line.strip()]
            self.log(f"{name} is degraded: failed units: {', '.join(failed) or '?'}")
        port = self.server(name).ssh_port
        while time.monotonic() < deadline + 20:
            try:
                with socket.create_connection((LOOPBACK, port), timeout=2) as s:
                    s.settimeout(3)
                    if s.recv(64).startswith(b"SSH-"):
                        return failed
            except OSError:
                pass
            time.sleep(0.3)
        raise SandboxError(
            f"{name}: sshd does not answer on {LOOPBACK}:{port}: {self._diagnostics(name)}"
        )

    def _diagnostics(self, name: str) -> str:
        try:
            failed = self.exec(name, "systemctl --failed --no-legend --plain").stdout.strip()
            journal = self.exec(name, "journalctl -b --no-pager -n 15 -o cat").stdout.strip()
        except Exception as exc:  # the container may be gone
            try:
                logs = self._container(name).logs(tail=15).decode(errors="replace")
            except Exception:
                logs = ""
            return f"cannot exec ({exc}); container log: {logs}"
        return f"failed units: [{failed or 'none'}]; journal tail:\n{journal}"

    # -- deploy settings ---------------------------------------------------
    def deploy_settings(self) -> dict:
        """Host data that points a deploy at the source server."""
        src = self.source
        return {
            "pyenv_git_url": src.git_url("pyenv"),
            "pyenv_ref": src.pyenv_ref,
            "python_version": PYTHON_VERSION,
            "python_build_mirror_url": src.python_build_mirror_url,
            "python_build_env": {"_PYTHON_BUILD_FORCE_SKIP_XZ": "1"},
            "package_index_url": package_index_url(),
            "npm_registry_url": npm_registry_url(),
            "extra_ca_certificates": [str(p) for p in ca_certificates()],
            "repo_url": src.git_url("example_app"),
            "revision": "main",
            # The example app has a health check of its own: the gate asks it.
            "health_check_path": "/healthz/",
            # Built CPython and Poetry kept with this sandbox: a new state dir starts empty.
            "artifact_cache": str(self.state_dir / "artifacts"),
        }
