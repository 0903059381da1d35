"""A fleet's first deploy and its no-op re-run, beside one server's, in one run:

    .venv/bin/python bench/fleet.py

1. one:   a bare one-server site (SQLite): CPython compiled, packed into the artifact cache;
2. fleet: a load balancer, a database server and two app servers, bare, deployed together
          (PostgreSQL, self-signed TLS): CPython and Poetry from the cache;
3. no-op: the one server again, then the four servers again: neither may change anything.

Prints the times with the load average beside them and the aim: a four-server no-op at most
1.5x the one-server no-op. Starts its own sandbox (state dir under /tmp) and removes it again,
even on failure.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.deploy import deploy, goal, load  # noqa: E402
from sandbox import Sandbox  # noqa: E402

AIM_NOOP_RATIO = 1.5
FLEET = {"fl-lb": ["lb"], "fl-db": ["db"], "fl-app1": ["app"], "fl-app2": ["app"]}
FLEET_SETTINGS = {"database": "postgresql", "tls": "self-signed"}


def changes(run: dict) -> list[str]:
    return [o["name"] for o in run["results"]["operations"] if o["success"]]


def main() -> int:
    state_dir = Path(tempfile.mkdtemp(prefix="djdeploy-bench-fleet-", dir="/tmp"))
    sandbox = Sandbox(state_dir=state_dir)
    try:
        sandbox.add_server("one", os="debian12")
        one = deploy(state_dir, "one", "one")
        t = time.monotonic()
        for name, roles in FLEET.items():
            sandbox.add_server(name, os="debian12", roles=roles)
        print(f"fleet servers up in {time.monotonic() - t:.1f} s", file=sys.stderr)
        fleet = deploy(state_dir, "fleet", "fl-*", settings=FLEET_SETTINGS)
        one_noop = deploy(state_dir, "one-noop", "one")
        fleet_noop = deploy(state_dir, "fleet-noop", "fl-*", settings=FLEET_SETTINGS)

        print("\nFirst deploys of bare debian12 servers, and re-runs with nothing to do\n")
        for run, what in ((one, "one server, empty cache (compiles)"),
                          (fleet, "lb + db + 2 app, warm cache"),
                          (one_noop, "one server, no-op"),
                          (fleet_noop, "lb + db + 2 app, no-op")):
            changed = changes(run) if "noop" in run["label"] else []
            print(f"  {what:<38} {run['wall']:7.1f} s  ({run['load']})"
                  + (f"  CHANGED: {'; '.join(changed)}" if changed else ""))
        print()
        ok = goal(f"fleet no-op / one no-op <= {AIM_NOOP_RATIO}",
                  fleet_noop["wall"] / one_noop["wall"], AIM_NOOP_RATIO, "x")
        ok &= not changes(one_noop) and not changes(fleet_noop)
        print(f"\n({load()})")
        return 0 if ok else 1
    finally:
        try:
            sandbox.down()
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
