"""First deploys to fresh Debian 12 sandbox servers, timed by phase, in one run:

    .venv/bin/python bench/deploy.py

1. cold:  one bare server, an empty artifact cache: CPython is compiled, Poetry installed with
          pip, both packed into the cache;
2. no-op: the same deploy again, which must change nothing;
3. warm:  a second bare server: CPython and Poetry from the cache;
4. three: three bare servers in one run with a new, empty cache: one compiles, two receive.

Starts its own sandbox (state dir under /tmp, its artifact cache inside) and removes the servers
and the state dir again, even on failure. pyinfra's JSON has change counts but no timings, so
each operation is timed from its "--> Starting operation" log line as it streams in (next start
- its start; the last one ends at "--> Results"). Prints the phases side by side, the ratios
against the cold deploy and their aims, and the load average beside every figure: this machine
is shared, compare figures of one run only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox import Sandbox  # noqa: E402

PYINFRA = REPO / ".venv" / "bin" / "pyinfra"

# phase, operation-name pattern (matched at the start of the name)
PHASES = [
    ("apt", r"Debian packages"),
    ("pyenv + CPython", r"pyenv |CPython "),
    ("Poetry", r"Poetry "),
    ("app release", r"System user|Release|PostgreSQL|Environment|Source code|Database schema|\S+-manage"),
    ("services", r"Gunicorn|gunicorn|TLS|Nginx"),
]
OTHER = "other"
AIM_WARM = 0.25  # warm first deploy / cold first deploy
AIM_WARM_SECONDS = 45.0
AIM_THREE = 1.3  # three servers cold / one server cold
AIM_NOOP = 3.0

START = re.compile(r"--> Starting (?:.+ )?operation: (.+)$")


def load() -> str:
    return "load " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def phase_of(op: str) -> str:
    return next((name for name, pattern in PHASES if re.match(pattern, op)), OTHER)


def deploy(state_dir: Path, label: str, limit: str, settings: dict | None = None) -> dict:
    """Run pyinfra once; return wall time, per-phase durations, the JSON results, the log."""
    env = dict(os.environ, SANDBOX_STATE=str(state_dir), PYTHONUNBUFFERED="1")
    env.pop("DJDEPLOY_SETTINGS", None)
    if settings:
        path = state_dir / f"settings-{label}.json"
        path.write_text(json.dumps(settings))
        env["DJDEPLOY_SETTINGS"] = str(path)
    cmd = [str(PYINFRA), "-y", "--json", "--limit", limit, "inventory.py", "deploy.py"]
    starts: list[tuple[str, float]] = []
    marks: dict[str, float] = {}
    log: list[str] = []
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.monotonic()
        with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.PIPE,
                              text=True, bufsize=1) as proc:
            try:
                for line in proc.stderr:
                    now = time.monotonic() - t0
                    line = line.rstrip()
                    log.append(line)
                    if m := START.search(line):
                        starts.append((m.group(1).strip(), now))
                        print(f"  {label:<6} {now:6.1f}s  {m.group(1).strip()}", file=sys.stderr)
                    elif "--> Beginning operation run" in line:
                        marks["execute"] = now
                    elif "--> Results" in line:
                        marks["results"] = now
                proc.wait()
            except BaseException:
                proc.kill()
                raise
        wall = time.monotonic() - t0
        out.seek(0)
        stdout = out.read()
    if proc.returncode != 0:
        print(f"\n{label}: pyinfra exited {proc.returncode} after {wall:.1f} s; last output:")
        print("\n".join(log[-40:]))
        raise SystemExit(1)
    end = marks.get("results", wall)
    phases = {name: 0.0 for name, _ in PHASES} | {OTHER: 0.0}
    ops = []
    for i, (name, t) in enumerate(starts):
        secs = (starts[i + 1][1] if i + 1 < len(starts) else end) - t
        phases[phase_of(name)] += secs
        ops.append((name, secs))
    phases["start + connect"] = marks.get("execute", 0.0)
    phases["results + disconnect"] = wall - end
    results = json.loads(stdout.strip().splitlines()[-1])["results"]
    return {"label": label, "wall": wall, "phases": phases, "ops": ops, "results": results,
            "log": "\n".join(log), "load": load()}


def count(pattern: str, run: dict) -> list[str]:
    return re.findall(pattern, run["log"])


def report(cold: dict, noop: dict, warm: dict, three: dict) -> bool:
    runs = [cold, warm, three]
    print("\nFirst deploys of bare debian12 servers (seconds per phase)\n")
    print(f"{'phase':<22}" + "".join(f"{r['label']:>10}" for r in runs))
    for name in cold["phases"]:
        print(f"{name:<22}" + "".join(f"{r['phases'][name]:>9.1f}s" for r in runs))
    print(f"{'total (wall)':<22}" + "".join(f"{r['wall']:>9.1f}s" for r in runs))
    print()
    for run in runs:
        compiled = sorted(set(count(r"\[(\S+)\] CPython \S+: (?:from \S+ if it has the artifact, "
                                    r"else )?compiled here", run)))
        received = sorted(set(count(r"\[(\S+)\] CPython \S+ from artifact ", run)))
        print(f"  {run['label']:<6} {run['wall']:6.1f} s  CPython compiled on {compiled or 'none'}, "
              f"from an artifact on {received or 'none'}  ({run['load']})")
    print()
    ok = True
    ok &= goal(f"warm / cold <= {AIM_WARM}", warm["wall"] / cold["wall"], AIM_WARM, "x")
    ok &= goal(f"warm first deploy < {AIM_WARM_SECONDS:.0f} s", warm["wall"], AIM_WARM_SECONDS, "s")
    ok &= goal(f"three cold / one cold <= {AIM_THREE}", three["wall"] / cold["wall"], AIM_THREE, "x")
    changed = [o["name"] for o in noop["results"]["operations"] if o["success"]]
    print(f"\nNo-op re-run: {noop['wall']:.1f} s, {noop['results']['totals']['success']} changes"
          + (f" (NOT idempotent: {'; '.join(changed)})" if changed else "") + f"  ({noop['load']})")
    goal(f"no-op re-run < {AIM_NOOP:.0f} s", noop["wall"], AIM_NOOP, "s")
    return ok and not changed


def goal(what: str, measured: float, aim: float, unit: str) -> bool:
    verdict = "met" if measured <= aim else "missed"
    print(f"goal: {what:<34} measured {measured:6.2f}{unit}  {verdict}  ({load()} on "
          f"{os.cpu_count()} cores)")
    return measured <= aim


def main() -> int:
    state_dir = Path(tempfile.mkdtemp(prefix="djdeploy-bench-deploy-", dir="/tmp"))
    sandbox = Sandbox(state_dir=state_dir)
    try:
        t = time.monotonic()
        sandbox.add_server("bench-1", os="debian12")
        print(f"sandbox ready in {time.monotonic() - t:.1f} s ({state_dir})", file=sys.stderr)
        cold = deploy(state_dir, "cold", "bench-1")
        noop = deploy(state_dir, "no-op", "bench-1")
        sandbox.add_server("bench-2", os="debian12")
        warm = deploy(state_dir, "warm", "bench-2")
        for name in ("bench-1", "bench-2"):
            sandbox.remove_server(name)
        # Three independent sites (an app_name each, each its own SQLite database).
        for name in ("tri-1", "tri-2", "tri-3"):
            sandbox.add_server(name, os="debian12", settings={"app_name": name.replace("-", "")})
        three = deploy(state_dir, "three", "tri-*",
                       settings={"artifact_cache": str(state_dir / "artifacts-three")})
        return 0 if report(cold, noop, warm, three) else 1
    finally:
        try:
            sandbox.down()
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
