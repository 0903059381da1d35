"""Benchmark of update.py and rollback.py on one sandbox server:

    .venv/bin/python bench/update.py                  # a fresh server: first deploy included
    .venv/bin/python bench/update.py --state DIR --image REF   # start from a deployed snapshot

Prints the wall time of an update with a code and a migration change, of an update with nothing
to do, of a rollback, and the requests served / failed and the worst latency seen by 20 clients
(nginx on 127.0.0.1) during an update.

Then the same on a fleet in the same sandbox (skip it with --no-fleet): a load balancer, a
database server and two app servers, bare (CPython and Poetry from the artifact cache the one
server filled), deployed, then a fleet update A -> B, a fleet update with nothing to do and a
fleet rollback, printed beside the one-server figures with the ratio (aim: a fleet update at
most 1.3x a one-server update). It adds about three minutes.

Cost: without --image the server is deployed first (the CPython compile, about 3 minutes on two
cores), then the measurements take about a minute. With --image (a snapshot of a deployed
server, e.g. `python -m sandbox snapshot`) only the minute; the deploy points the snapshot's
repository mirror at this sandbox's source server by itself.

The revisions measured are branches `bench-b` (the source repository's `main` + a page change +
a migration adding a nullable column) and `bench-c` (bench-b + another page change) of the
sandbox source server's example_app repository; `main` is left as it is.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import Load
from bench.revisions import add_column, both, page_note, push_branches
from sandbox import Sandbox

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
SERVER = "bench"
BASE = "/srv/bizsite"
# Aims on a 2-core machine of the CI kind; figures are printed beside them with the load
# average, never asserted (the tests compare measurements of one run with each other).
AIMS = {"update": 10.0, "noop": 2.0, "rollback": 3.0, "worst": 0.5}
AIM_FLEET_RATIO = 1.3  # fleet update / one-server update, same run
FLEET = {"bf-lb": ["lb"], "bf-db": ["db"], "bf-app1": ["app"], "bf-app2": ["app"]}
FLEET_SETTINGS = {"database": "postgresql", "tls": "self-signed"}


def aim(measured: float, limit: float) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    verdict = "met" if measured <= limit else "missed"
    return f"aim < {limit:g} s, {verdict} (load average {load} on {os.cpu_count()} cores)"

def make_branches(sb: Sandbox) -> dict[str, str]:
    """bench-b and bench-c on the source repository; returns branch -> commit."""
    return push_branches(sb.source.repo_path("example_app"), {
        "bench-b": ("main", both(page_note("Bench B"), add_column("bench_note")),
                    "Bench B: page change and a migration"),
        "bench-c": ("bench-b", page_note("Bench C"), "Bench C: page change"),
    }, author="Update Benchmark")


class Runner:
    def __init__(self, sb: Sandbox, workdir: Path):
        self.sb, self.workdir, self.count = sb, workdir, 0

    def run(self, script: str, settings: dict | None = None,
            limit: str = SERVER) -> tuple[float, int, str]:
        env = {**os.environ, "SANDBOX_STATE": str(self.sb.state_dir), "PYTHONUNBUFFERED": "1"}
        env.pop("DJDEPLOY_SETTINGS", None)
        if settings is not None:
            self.count += 1
            path = self.workdir / f"settings-{self.count}.json"
            path.write_text(json.dumps(settings))
            env["DJDEPLOY_SETTINGS"] = str(path)
        started = time.monotonic()
        proc = subprocess.run([PYINFRA, "-y", "--limit", limit, "inventory.py", script], cwd=ROOT,
                              check=False, env=env, capture_output=True, text=True, timeout=1800)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"{script} {settings or ''} failed ({proc.returncode}):\n"
                             f"{(proc.stdout + proc.stderr)[-4000:]}")
        return seconds, proc.returncode, proc.stdout + proc.stderr


def version(sb: Sandbox) -> str:
    return sb.exec(SERVER, f"cat {BASE}/current/REVISION").stdout.strip()


def fleet_rows(sb: Sandbox, run: Runner, commits: dict[str, str],
               one: dict[str, float]) -> list[tuple[str, str]]:
    """lb + db + 2 app: deployed at A, then update A -> B, no-op, rollback; beside `one`."""
    rows = []
    started = time.monotonic()
    for name, roles in FLEET.items():
        sb.remove_server(name)
        sb.add_server(name, os="debian12", roles=roles)
    rows.append(("fleet: lb + db + 2 app started (bare)", f"{time.monotonic() - started:.1f} s"))
    settings = {**FLEET_SETTINGS, "revision": "main"}
    seconds, _, _ = run.run("deploy.py", settings, limit="bf-*")
    rows.append(("fleet: deploy.py of A (artifacts from the cache)", f"{seconds:.1f} s"))
    figures = {}
    for what, script, revision, label in (
            ("update", "update.py", "bench-b", "fleet update A -> B (code + migration)"),
            ("noop", "update.py", "bench-b", "fleet update with nothing to do"),
            ("rollback", "rollback.py", "bench-b", "fleet rollback B -> A")):
        seconds, _, _ = run.run(script, {**FLEET_SETTINGS, "revision": revision}, limit="bf-*")
        figures[what] = seconds
        rows.append((label, f"{seconds:.1f} s, {seconds / one[what]:.2f}x one server's "
                            f"{one[what]:.1f} s"))
    for name in ("bf-app1", "bf-app2"):
        got = sb.exec(name, f"cat {BASE}/current/REVISION").stdout.strip()
        assert got == commits["main"], f"{name} is not back on A after the rollback"
    ratio = figures["update"] / one["update"]
    verdict = "met" if ratio <= AIM_FLEET_RATIO else "missed"
    rows.append(("fleet update / one-server update",
                 f"{ratio:.2f}x; aim <= {AIM_FLEET_RATIO}x, {verdict}"))
    for name in FLEET:
        sb.remove_server(name)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", help="sandbox state dir (default: a new one, removed after)")
    parser.add_argument("--image", help="start the server from this snapshot of a deployed server")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the server (and state dir)")
    parser.add_argument("--no-fleet", action="store_true", help="one server only")
    args = parser.parse_args()

    own_state = not args.state
    state = Path(args.state or f"/tmp/djdeploy-bench-{uuid.uuid4().hex[:8]}")
    sb = Sandbox(state_dir=state)
    rows: list[tuple[str, str]] = []
    work = Path(tempfile.mkdtemp(prefix="bench-settings-"))
    try:
        run = Runner(sb, work)
        sb.remove_server(SERVER)
        started = time.monotonic()
        server = sb.add_server(SERVER, os="debian12", image=args.image)
        rows.append(("server started" + (" from snapshot" if args.image else " (bare)"),
                     f"{time.monotonic() - started:.1f} s"))
        commits = make_branches(sb)  # now that a server runs, so does the source server
        seconds, _, _ = run.run("deploy.py", {"revision": "main"})
        rows.append(("deploy.py of A" + (" (on the snapshot)" if args.image else " (first deploy)"),
                     f"{seconds:.1f} s"))

        seconds, _, _ = run.run("update.py", {"revision": "bench-b"})
        assert version(sb) == commits["bench-b"], "update did not reach bench-b"
        rows.append(("update A -> B (code + migration)",
                     f"{seconds:.1f} s; " + aim(seconds, AIMS["update"])))

        seconds, _, out = run.run("update.py", {"revision": "bench-b"})
        assert "nothing to update" in out
        rows.append(("update with nothing to do",
                     f"{seconds:.1f} s; " + aim(seconds, AIMS["noop"])))

        seconds, _, _ = run.run("rollback.py", {})
        assert version(sb) == commits["main"], "rollback did not reach A"
        rows.append(("rollback B -> A",
                     f"{seconds:.1f} s; " + aim(seconds, AIMS["rollback"])))

        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
        conn.request("GET", "/", headers={"Host": "localhost"})
        home = conn.getresponse().read().decode(errors="replace")
        conn.close()
        css = re.search(r'href="(/static/sales/site\.[0-9a-f]{12}\.css)"', home)
        css = css.group(1) if css else None
        paths = ["/"] + ([css] if css else [])
        baseline = Load(server.http_port, paths, clients=args.clients, seconds=10,
                        max_requests=200_000)
        with baseline:
            time.sleep(10)
        rows.append((f"same load, no update ({args.clients} clients)",
                     f"worst latency {baseline.result.worst * 1000:.0f} ms, "
                     f"{baseline.result.failed} failed of {baseline.result.total}"))
        load = Load(server.http_port, paths, clients=args.clients, seconds=300,
                    max_requests=200_000)
        with load:
            time.sleep(1)
            seconds, _, _ = run.run("update.py", {"revision": "bench-c"})
            time.sleep(1)
        result = load.result
        assert version(sb) == commits["bench-c"], "update under load did not reach bench-c"
        rows.append((f"update A -> C under load ({args.clients} clients)", f"{seconds:.1f} s"))
        rows.append(("  requests served", str(result.served)))
        rows.append(("  requests failed (errors, 5xx)", str(result.failed)))
        rows.append(("  worst latency", f"{result.worst * 1000:.0f} ms; "
                     + aim(result.worst, AIMS["worst"])))
        rate = result.total / result.seconds
        rows.append(("  throughput", f"{rate:.0f} req/s over {result.seconds:.1f} s ({', '.join(paths)})"))
        if result.errors:
            rows.append(("  first failures", "; ".join(result.errors[:3])))
        one = {"update": rows[2], "noop": rows[3], "rollback": rows[4]}
        if not args.no_fleet:
            rows += fleet_rows(sb, run, commits, {k: float(v[1].split()[0]) for k, v in one.items()})
    finally:
        if rows:
            width = max(len(k) for k, _ in rows)
            print(f"\n{'step'.ljust(width)}  result")
            print(f"{'-' * width}  {'-' * 20}")
            for key, value in rows:
                print(f"{key.ljust(width)}  {value}")
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            sb.remove_server(SERVER)
            if own_state:
                sb.down()
                shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
