"""Shared pieces of the deploy's end-to-end tests: one sandbox per test session, the real
`pyinfra` command line, HTTP through the published ports on 127.0.0.1, and timing figures."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox import Sandbox, Server

ROOT = Path(__file__).resolve().parents[2]
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
DEPLOY_TIMEOUT = 1800
RUN_TIMEOUT = 600

# Every pyinfra run of the session: (what, combined output). The secrets test scans them all.
OUTPUTS: list[tuple[str, str]] = []
# Timing figures of the session, printed at the end and written to the pytest cache.
TIMINGS: list[str] = []


def note(config, line: str) -> None:
    """Print a timing figure now (`pytest -s`), in the summary, and into the session log."""
    TIMINGS.append(line)
    print(f"\n[e2e] {line}", flush=True)
    cache = getattr(config, "cache", None)
    if cache is None:  # -p no:cacheprovider
        return
    log = Path(cache.mkdir("djdeploy-e2e")) / "timings.log"
    with log.open("a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")


# When the e2e tests began (this conftest is loaded as they are collected).
STARTED = time.monotonic()


def pytest_terminal_summary(terminalreporter, config):
    if not TIMINGS:
        return
    total = time.monotonic() - STARTED
    terminalreporter.section("deploy timings")
    for line in TIMINGS:
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"whole session: {total:.1f}s")


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict:
        return json.loads(self.stdout)

    def explain(self) -> str:
        return f"{' '.join(self.args)} -> {self.returncode}\n{self.output[-6000:]}"


class Runner:
    """Runs `pyinfra inventory.py <script>` against one sandbox server, as a user would."""

    def __init__(self, sb, workdir: Path):
        self.sb = sb
        self.workdir = workdir
        self.count = 0

    def command(self, server: str | list[str], script: str, *args: str,
                settings: dict | None = None, yes: bool = True) -> tuple[list[str], dict]:
        """`server`: one server's name, or the names of the servers of a fleet."""
        env = {**os.environ, "SANDBOX_STATE": str(self.sb.state_dir), "PYTHONUNBUFFERED": "1"}
        env.pop("DJDEPLOY_SETTINGS", None)
        env.pop("PYINFRA_YES", None)
        if settings is not None:
            self.count += 1
            path = self.workdir / f"settings-{self.count}.json"
            path.write_text(json.dumps(settings))
            env["DJDEPLOY_SETTINGS"] = str(path)
        limits = [w for name in ([server] if isinstance(server, str) else server)
                  for w in ("--limit", name)]
        argv = [PYINFRA, *(["-y"] if yes else []), *args, *limits, "inventory.py", script]
        return argv, env

    def start(self, server: str | list[str], script: str, *args: str, settings: dict | None = None,
              yes: bool = True) -> Started:
        argv, env = self.command(server, script, *args, settings=settings, yes=yes)
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        return Started(server, argv, proc, time.monotonic())

    def run(self, server: str | list[str], script: str, *args: str, settings: dict | None = None,
            yes: bool = True, timeout: float = RUN_TIMEOUT) -> Run:
        return self.start(server, script, *args, settings=settings, yes=yes).wait(timeout)


class Started:
    """A pyinfra run in the background; its output is read (and its end timed) as it goes."""

    def __init__(self, server: str, argv: list[str], proc: subprocess.Popen, started: float):
        self.server, self.argv, self.proc, self.started = server, argv, proc, started
        self.out, self.err, self.ended = "", "", None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        self.out, self.err = self.proc.communicate()
        self.ended = time.monotonic()

    def wait(self, timeout: float = RUN_TIMEOUT) -> Run:
        self.reader.join(timeout)
        if self.reader.is_alive():
            self.proc.kill()
            self.reader.join(30)
        ended = self.ended or time.monotonic()
        run = Run(self.argv[1:], self.proc.returncode, self.out, self.err, ended - self.started)
        OUTPUTS.append((f"{self.server}: {' '.join(run.args)}", run.output))
        return run


class Deployer(Runner):
    """Runs `pyinfra inventory.py deploy.py` as a user would, against one sandbox server."""

    def run(self, server: str, *args: str, settings: dict | None = None, yes: bool = True,
            timeout: float = DEPLOY_TIMEOUT) -> Run:
        return super().run(server, "deploy.py", *args, settings=settings, yes=yes, timeout=timeout)


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: str


class _HTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 that names the site in SNI, as a browser resolving it there would."""

    def __init__(self, address: str, port: int, sni: str, timeout: float):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the server's self-signed certificate
        super().__init__(address, port, timeout=timeout, context=context)
        self._sni = sni
        self._tls = context

    def connect(self):
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._sni)


def http_get(port: int, path: str, host: str = "localhost", https: bool = False,
             timeout: float = 15) -> Response:
    """GET through nginx on a published port of 127.0.0.1 (redirects are not followed)."""
    if https:
        conn = _HTTPSConnection("127.0.0.1", port, sni=host, timeout=timeout)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return Response(response.status, response.headers,
                        response.read().decode("utf-8", errors="replace"))
    finally:
        conn.close()


def wait_for(port: int, path: str, status: int = 200, seconds: float = 60, **kw) -> Response:
    """Poll until `path` answers `status`; the last answer (or error) is in the failure."""
    deadline = time.monotonic() + seconds
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = http_get(port, path, timeout=5, **kw)
            if last.status == status:
                return last
        except (OSError, http.client.HTTPException) as error:
            last = error
        time.sleep(1)
    raise AssertionError(f"{path} did not answer {status} within {seconds:.0f}s: {last!r}")


class Poller:
    """One more client that records, for every answer of `get()`, its status, its Retry-After
    and whether it is the maintenance page (both languages)."""

    def __init__(self, get):
        self.get, self.seen, self.stop = get, [], threading.Event()
        self.times: list[float] = []  # when each answer came
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                answer = self.get()
                self.seen.append((answer.status, answer.headers.get("Retry-After"),
                                  "維護" in answer.body and "maintenance" in answer.body))
            except (OSError, http.client.HTTPException) as error:
                self.seen.append(("error", repr(error), False))
            self.times.append(time.monotonic())
            self.stop.wait(0.05)

    @property
    def unavailable(self) -> float:
        """Seconds from the first answer other than 200 to the last."""
        down = [t for t, s in zip(self.times, self.seen) if s[0] != 200]
        return down[-1] - down[0] if down else 0.0

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def race(runner: "Runner", server, script: str, settings: dict) -> tuple["Run", "Run"]:
    """Two runs of `script` started together: (the one that succeeded, the one that was
    refused); fails unless exactly one of each."""
    started = [runner.start(server, script, settings=settings) for _ in range(2)]
    runs = [s.wait() for s in started]
    ok = [r for r in runs if r.returncode == 0]
    refused = [r for r in runs if r.returncode != 0]
    assert len(ok) == 1 and len(refused) == 1, "\n\n".join(r.explain() for r in runs)
    return ok[0], refused[0]

def stall_limit(baseline: float) -> float:
    """The worst latency allowed while a release switches, from the worst latency of the same
    load just before: a slow or busy machine raises both, a stalled switch (requests waiting a
    second or more for a slot that is not ready) only the second."""
    return max(3 * baseline, baseline + 1.0)


def sh(sb: Sandbox, server: str, cmd: str, ok: bool = True) -> subprocess.CompletedProcess:
    res = sb.exec(server, cmd)
    if ok:
        assert res.returncode == 0, f"{cmd} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sb(tmp_path_factory):
    state = Path("/tmp") / f"djdeploy-e2e-{uuid.uuid4().hex[:8]}"
    sandbox = Sandbox(state_dir=state)
    sandbox.snapshots = []  # image references to remove at the end
    try:
        yield sandbox  # servers start the source server (pyenv, CPython, example_app.git)
    finally:
        try:
            sandbox.down()
        finally:
            for ref in sandbox.snapshots:
                try:
                    sandbox.client.images.remove(ref, force=True)
                except Exception as error:  # noqa: BLE001 - cleanup goes on
                    print(f"[e2e] could not remove image {ref}: {error}", file=sys.stderr)
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def deployer(sb, tmp_path_factory) -> Deployer:
    return Deployer(sb, tmp_path_factory.mktemp("settings"))


@pytest.fixture(scope="session")
def deployed_commit(sb, d12) -> str:
    repo = sb.source.repo_path("example_app")
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "main"], check=True,
                          capture_output=True, text=True).stdout.strip()


@dataclass
class Deployed:
    server: Server
    first: Run


@pytest.fixture(scope="session")
def d12(sb, deployer, pytestconfig) -> Deployed:
    """A bare Debian 12 server, deployed once with the default (sandbox) settings: git mode,
    SQLite, plain HTTP. The session's Debian 12 CPython compile; it fills the session's artifact
    cache (empty until then: it lives in the sandbox's state dir), so later bare Debian 12
    servers install CPython and Poetry from there."""
    server = sb.add_server("d12", os="debian12")
    first = deployer.run("d12")
    note(pytestconfig, f"first deploy, bare debian12 server: {first.seconds:.1f}s")
    assert first.returncode == 0, first.explain()
    return Deployed(server, first)


@pytest.fixture(scope="session")
def d12_image(sb, d12) -> str:
    """An image of the deployed Debian 12 server, for scenarios that need only the cheap steps."""
    ref = sb.snapshot("d12", f"{sb.prefix}-d12")
    sb.snapshots.append(ref)
    return ref
