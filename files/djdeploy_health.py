"""Health gate for a release: ask one Gunicorn slot (through its socket) or nginx (through a
URL) until the health path answers 200 and the deploy's version answer (/_djdeploy/version)
names the expected revision, or time runs out. Also waits for nginx's old workers to drain
after a reload. Standard library only: it runs on the server with pyenv's Python.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from urllib.parse import urlsplit

VERSION = "/_djdeploy/version"


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address that sends the site's name in SNI: nginx's default TLS server
    rejects handshakes that name no site (`ssl_reject_handshake`)."""

    def __init__(self, address: str, port: int, server_name: str, timeout: float,
                 context: ssl.SSLContext):
        super().__init__(address, port, timeout=timeout, context=context)
        self.server_name = server_name

    def connect(self):
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.server_name)


def get(args, path: str) -> tuple[int, str]:
    if args.socket:
        conn = UnixConnection(args.socket, timeout=5)
    else:
        url = urlsplit(args.url)
        if url.scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # our own nginx on loopback
            conn = NamedHTTPSConnection(url.hostname, url.port or 443, args.host, timeout=5,
                                        context=context)
        else:
            conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=5)
    headers = {"Host": args.host, "X-Forwarded-Proto": "https" if args.https else "http"}
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    return response.status, response.read(2000).decode(errors="replace").strip()


def check(args) -> str | None:
    """None when healthy, else why not."""
    try:
        status, body = get(args, args.path)
        if status != 200:
            return f"{args.path} answered {status}: {body[:200]}"
        if args.revision:
            status, body = get(args, VERSION)
            try:
                revision = json.loads(body).get("revision") if status == 200 else None
            except (ValueError, AttributeError):
                revision = None
            if revision != args.revision:
                return f"{VERSION} answered {status} {body[:80]!r}, expected {args.revision}"
    except (OSError, http.client.HTTPException) as error:
        return f"no answer: {error}"
    return None


def drain(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        if "nginx: worker process is shutting down" not in ps:
            return
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--socket", help="a Gunicorn unix socket")
    target.add_argument("--url", help="nginx's base URL, e.g. http://127.0.0.1:80")
    parser.add_argument("--host", default="localhost", help="Host header to send")
    parser.add_argument("--https", action="store_true", help="say the request came over HTTPS")
    parser.add_argument("--path", default="/_djdeploy/health")
    parser.add_argument("--revision", default="", help="commit /version/ must name")
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--drain", type=float, default=0,
                        help="only wait up to this many seconds for old nginx workers to exit")
    args = parser.parse_args()
    if args.drain:
        drain(args.drain)
        return 0
    deadline = time.monotonic() + args.timeout
    while True:
        problem = check(args)
        if problem is None:
            return 0
        if time.monotonic() >= deadline:
            where = args.socket or args.url
            print(f"health check failed after {args.timeout:.0f}s at {where}: {problem}",
                  file=sys.stderr)
            return 1
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
