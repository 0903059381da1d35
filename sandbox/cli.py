"""Command line: python -m sandbox up|down|status|ssh|restart|snapshot|settings|url."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .core import Sandbox, Server
from .errors import SandboxError
from .hostinfo import SUITES


def _table(servers: list[Server]) -> str:
    rows = [("NAME", "ROLES", "OS", "STATE", "ADDRESS", "SSH", "HTTP", "HTTPS")]
    for s in servers:
        rows.append((s.name, ",".join(s.roles), s.os, s.state, s.address or "-",
                     f"{s.ssh_user}@{s.ssh_host}:{s.ssh_port}", s.http_url, s.https_url))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _print_status(sb: Sandbox) -> None:
    servers = sb.servers()
    print(f"state dir: {sb.state_dir}  (containers {sb.prefix}-*)")
    if not servers:
        print("no servers (python -m sandbox up)")
    else:
        print(_table(servers))
        print(f"ssh key:   {servers[0].ssh_key}")
    if sb.source.running():
        print("source server:")
        print(f"  pyenv:       {sb.source.git_url('pyenv')}  (ref {sb.source.pyenv_ref})")
        print(f"  example_app: {sb.source.git_url('example_app')}")
        print(f"  python:      {sb.source.python_build_mirror_url}/")
    else:
        print("source server: not running")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--state-dir", help="state directory (default $SANDBOX_STATE or <repo>/.sandbox)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="start servers sandbox-1..N and the source server")
    p.add_argument("--servers", type=int, default=1)
    p.add_argument("--roles", help="one server per role, e.g. lb,db,app,app (a fleet)")
    p.add_argument("--os", choices=sorted(SUITES), default="debian12")
    sub.add_parser("down", help="remove the servers and stop the source server")
    p = sub.add_parser("status", help="show servers and source server")
    p.add_argument("--json", action="store_true", help="print a JSON list of servers")
    p = sub.add_parser("ssh", help="ssh into a server as the deploy user")
    p.add_argument("name")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command to run")
    p = sub.add_parser("restart", help="reboot a server and wait until it is up")
    p.add_argument("name")
    p = sub.add_parser("snapshot", help="commit a server to an image")
    p.add_argument("name")
    p.add_argument("tag")
    p = sub.add_parser("settings", help="print deploy settings (JSON) for the source server")
    p = sub.add_parser("url", help="print a server's web address on this machine")
    p.add_argument("name")
    p.add_argument("--https", action="store_true")
    args = parser.parse_args(argv)

    sb = Sandbox(args.state_dir)
    try:
        if args.command == "up":
            start = time.monotonic()
            roles = [r.strip() for r in args.roles.split(",") if r.strip()] if args.roles else None
            sb.up(servers=args.servers, os=args.os, roles=roles)
            _print_status(sb)
            print(f"up in {time.monotonic() - start:.1f}s")
        elif args.command == "down":
            sb.down()
        elif args.command == "status":
            if args.json:
                print(json.dumps([s.to_dict() for s in sb.servers()], indent=2))
            else:
                _print_status(sb)
        elif args.command == "ssh":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            argv_ssh = sb.server(args.name).ssh_command(*cmd, batch=bool(cmd))
            sys.stdout.flush()
            os.execvp(argv_ssh[0], argv_ssh)
        elif args.command == "restart":
            start = time.monotonic()
            server = sb.restart(args.name)
            state = "degraded: " + ", ".join(server.failed_units) if server.failed_units \
                else "running"
            print(f"{server.name}: {state} (rebooted in {time.monotonic() - start:.1f}s)")
        elif args.command == "snapshot":
            print(sb.snapshot(args.name, args.tag))
        elif args.command == "url":
            server = sb.server(args.name)
            print(server.https_url if args.https else server.http_url)
        elif args.command == "settings":
            print(json.dumps(sb.deploy_settings(), indent=2))
    except SandboxError as exc:
        print(f"sandbox: error: {exc}", file=sys.stderr)
        return 1
    return 0
