"""A small HTTP load generator for the zero-downtime checks: N client threads, each asking nginx
on a published port of 127.0.0.1 for a list of paths in turn, one new connection per request.

Bounded both ways: it stops at `seconds` or after `max_requests`, or when `stop()` is called.
A request fails when it raises (connection refused or reset, timeout) or answers 5xx.

    with Load(port, ["/", "/static/x.css"]) as load:
        ...                                      # run the update
    result = load.result                         # served, failed, worst latency
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Self

HOST = "127.0.0.1"  # only ever this machine: published ports of the test servers


@dataclass
class LoadResult:
    served: int = 0            # requests answered below 500
    failed: int = 0            # connection errors, timeouts and 5xx answers
    worst: float = 0.0         # slowest request, seconds (failed ones included)
    seconds: float = 0.0       # how long the load ran
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # the first few failures of each kind
    odd: Counter = field(default_factory=Counter)    # (path, status) of answers other than 200

    @property
    def total(self) -> int:
        return self.served + self.failed

    def summary(self) -> str:
        rate = self.total / self.seconds if self.seconds else 0.0
        return (f"{self.total} requests in {self.seconds:.1f}s ({rate:.0f}/s): served {self.served}, "
                f"failed {self.failed}, worst latency {self.worst * 1000:.0f} ms, "
                f"statuses {dict(self.statuses)}"
                + (f", not 200: {dict(self.odd)}" if self.odd else ""))


class Load:
    """Load in background threads until stopped (or its bounds are reached)."""

    def __init__(self, port: int, paths: list[str], clients: int = 20, seconds: float = 120,
                 max_requests: int = 200_000, host_header: str = "localhost",
                 timeout: float = 5, pause: float = 0.0, https: bool = False,
                 record: bool = False):
        if not paths:
            raise ValueError("no paths to request")
        self.port, self.paths, self.clients = port, list(paths), clients
        self.seconds, self.max_requests = seconds, max_requests
        self.host_header, self.timeout, self.pause = host_header, timeout, pause
        self.https = https
        # With `record`, (end time, ok, latency) of every request, for failing_window() and
        # worst_starting_after().
        self.record: list[tuple[float, bool, float]] | None = [] if record else None
        self.result = LoadResult()
        self._kinds: Counter = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started = 0.0

    def _connection(self) -> http.client.HTTPConnection:
        if not self.https:
            return http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the test site's self-signed certificate
        conn = http.client.HTTPSConnection(HOST, self.port, timeout=self.timeout, context=context)
        name = self.host_header

        def connect():  # name the site in SNI, as a browser resolving it here would
            http.client.HTTPConnection.connect(conn)
            conn.sock = context.wrap_socket(conn.sock, server_hostname=name)

        conn.connect = connect
        return conn

    def _one(self, path: str) -> tuple[int | None, float, Exception | None]:
        conn = self._connection()
        started = time.monotonic()
        try:
            conn.request("GET", path, headers={"Host": self.host_header, "Connection": "close"})
            response = conn.getresponse()
            response.read()
            return response.status, time.monotonic() - started, None
        except (OSError, http.client.HTTPException) as error:
            return None, time.monotonic() - started, error
        finally:
            conn.close()

    def _client(self, index: int) -> None:
        deadline = self._started + self.seconds
        i = index
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self.result.total >= self.max_requests:
                    return
            path = self.paths[i % len(self.paths)]
            status, latency, error = self._one(path)
            i += 1
            with self._lock:
                r = self.result
                r.worst = max(r.worst, latency)
                if status is None or status >= 500:
                    r.failed += 1
                    # A few of each kind (a status, an exception's type), so a rare kind is
                    # not hidden behind many of a common one.
                    kind = type(error).__name__ if error else status
                    if self._kinds[kind] < 3 and len(r.errors) < 30:
                        r.errors.append(f"{path}: {error!r}" if error else f"{path}: HTTP {status}")
                    self._kinds[kind] += 1
                else:
                    r.served += 1
                r.statuses[status if status is not None else "error"] += 1
                if self.record is not None:
                    self.record.append((time.monotonic(), status is not None and status < 500,
                                        latency))
                if status != 200:
                    r.odd[(path, status if status is not None else "error")] += 1
            if self.pause:
                self._stop.wait(self.pause)

    def start(self) -> Self:
        self._started = time.monotonic()
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True,
                                          name=f"load-{n}") for n in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        self.result.seconds = time.monotonic() - self._started
        return self.result

    def failing_window(self) -> float:
        """Seconds from the first failed request to the last (0 when none failed)."""
        failed = [at for at, ok, _ in (self.record or []) if not ok]
        return failed[-1] - failed[0] if failed else 0.0

    def worst_starting_after(self, moment: float) -> float:
        """The slowest request sent at or after `moment` (time.monotonic()), seconds. (One sent
        before and still running then was slowed by whatever ran before `moment`.)"""
        return max((latency for at, _, latency in (self.record or []) if at - latency >= moment),
                   default=0.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_load(port: int, paths: list[str], clients: int = 20, seconds: float = 10,
             max_requests: int = 200_000, **kw) -> LoadResult:
    """Load for `seconds` (or `max_requests`), then return served / failed / worst latency."""
    load = Load(port, paths, clients=clients, seconds=seconds, max_requests=max_requests, **kw)
    load.start()
    time.sleep(seconds)
    return load.stop()
