"""First deploy to a fresh Debian 12 sandbox server, timed by phase, then a no-op re-run.

    .venv/bin/python bench/deploy.py

Starts its own sandbox (state dir under /tmp) with one bare debian12 server, runs
`pyinfra -y --json inventory.py deploy.py` twice and removes the server and state dir again,
even on failure. pyinfra's JSON has change counts but no timings, so each operation is timed
from its "--> Starting operation" log line as it streams in (next start - its start; the last
one ends at "--> Results"). The second run must change nothing.
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

from sandbox import Sandbox

REPO = Path(__file__).resolve().parent.parent
PYINFRA = REPO / ".venv" / "bin" / "pyinfra"

# phase, operation-name pattern (matched at the start of the name), floor in seconds
PHASES = [
    ("apt", r"Debian packages", 18),
    ("CPython build", r"pyenv |CPython ", 97),
    ("Poetry", r"Poetry ", 16),
    ("app release", r"System user|Release|PostgreSQL|Environment|Source code|Database schema|\S+-manage", 4),
    ("services", r"Gunicorn|gunicorn|TLS|Nginx", 0),
]
OTHER = "other"
FLOOR_TOTAL = sum(floor for _, _, floor in PHASES)  # 135 s
AIM_TOTAL = FLOOR_TOTAL * 1.10
AIM_NOOP = 3.0

START = re.compile(r"--> Starting (?:.+ )?operation: (.+)$")


def phase_of(op: str) -> str:
    return next((name for name, pattern, _ in PHASES if re.match(pattern, op)), OTHER)


def deploy(state_dir: Path, label: str) -> dict:
    """Run pyinfra once; return wall time, per-operation durations and the JSON results."""
    env = dict(os.environ, SANDBOX_STATE=str(state_dir), PYTHONUNBUFFERED="1")
    env.pop("DJDEPLOY_SETTINGS", None)
    cmd = [str(PYINFRA), "-y", "--json", "inventory.py", "deploy.py"]
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
                        print(f"  {label} {now:6.1f}s  {m.group(1).strip()}", file=sys.stderr)
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
    ops = [(name, (starts[i + 1][1] if i + 1 < len(starts) else end) - t)
           for i, (name, t) in enumerate(starts)]
    results = json.loads(stdout.strip().splitlines()[-1])["results"]
    return {"wall": wall, "ops": ops, "marks": marks, "results": results}


def goal(what: str, aim: float, measured: float) -> None:
    verdict = "met" if measured <= aim else "missed"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"goal: {what:<38} aim {aim:6.1f} s  measured {measured:6.1f} s  {verdict}"
          f"  (load average {load} on {os.cpu_count()} cores)")


def report_first(first: dict) -> None:
    phases = {name: 0.0 for name, _, _ in PHASES} | {OTHER: 0.0}
    for op, secs in first["ops"]:
        phases[phase_of(op)] += secs
    marks = first["marks"]
    prepare = marks.get("execute", 0.0)
    finish = first["wall"] - marks.get("results", first["wall"])
    floors = {name: floor for name, _, floor in PHASES}

    print(f"\nFirst deploy to a fresh debian12 server: {first['wall']:.1f} s wall "
          f"({first['results']['totals']['success']} operations changed something)")
    print(f"\n{'phase':<26}{'measured':>10}{'floor':>8}{'over':>9}")
    for name, secs in phases.items():
        floor = floors.get(name)
        over = f"{secs - floor:+8.1f}s" if floor else ""
        fl = f"{floor}s" if floor else "-"
        print(f"{name:<26}{secs:>9.1f}s{fl:>8}{over:>9}")
    print(f"{'start + connect':<26}{prepare:>9.1f}s{'-':>8}")
    print(f"{'results + disconnect':<26}{finish:>9.1f}s{'-':>8}")
    total_over = (first["wall"] / FLOOR_TOTAL - 1) * 100
    print(f"{'total':<26}{first['wall']:>9.1f}s{FLOOR_TOTAL:>7}s"
          f"{first['wall'] - FLOOR_TOTAL:+8.1f}s  ({total_over:+.0f}%)")

    print("\nSlowest operations:")
    for op, secs in sorted(first["ops"], key=lambda o: -o[1])[:5]:
        print(f"  {secs:6.1f}s  {op}  [{phase_of(op)}]")
    print()
    goal(f"first deploy <= {FLOOR_TOTAL} s floors + 10%", AIM_TOTAL, first["wall"])
    sys.stdout.flush()


def report_noop(noop: dict) -> bool:
    totals = noop["results"]["totals"]
    changed = [o["name"] for o in noop["results"]["operations"] if o["success"]]
    print(f"\nNo-op re-run: {noop['wall']:.1f} s wall, {totals['success']} changes, "
          f"{totals['no_change']} unchanged, {totals['error']} errors")
    marks = noop["marks"]
    slowest = max(noop["ops"], key=lambda o: o[1], default=("-", 0.0))
    print(f"  start + connect {marks.get('execute', 0.0):.1f} s, operations "
          f"{marks.get('results', noop['wall']) - marks.get('execute', 0.0):.1f} s "
          f"(slowest {slowest[1]:.1f} s: {slowest[0]})")
    if changed:
        print("  NOT idempotent, changed: " + "; ".join(changed))
    else:
        print("  zero changes: the re-run is a no-op")

    goal("no-op re-run < 3 s", AIM_NOOP, noop["wall"])
    return not changed


def main() -> int:
    state_dir = Path(tempfile.mkdtemp(prefix="djdeploy-bench-deploy-", dir="/tmp"))
    sandbox = Sandbox(state_dir=state_dir)
    try:
        t = time.monotonic()
        sandbox.add_server("bench-1", os="debian12")
        sandbox.source.info()  # the git/file server the deploy fetches from
        print(f"sandbox ready in {time.monotonic() - t:.1f} s ({state_dir})", file=sys.stderr)
        first = deploy(state_dir, "deploy")
        report_first(first)
        noop = deploy(state_dir, "re-run")
        return 0 if report_noop(noop) else 1
    finally:
        try:
            sandbox.down()
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
