"""The deploy's own answers in front of a project's WSGI application, so that any Django project
can be health-checked and asked for its revision without code of its own:

    /_djdeploy/health    200 "ok" when Django is set up, the database answers and has every
                         migration of this release; 503 with the reason otherwise
    /_djdeploy/version   200 JSON: the release's commit and the server's name

Every other request goes to the project untouched. nginx lets only the server itself (and a load
balancer of the site) reach these paths. Gunicorn puts it in front of the app from
gunicorn.conf.py's `post_worker_init` hook; it reads `release.json` beside it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

PREFIX = "/_djdeploy/"
RELEASE = json.loads((Path(__file__).parent / "release.json").read_text())
# A healthy answer is reused this long: a load balancer asking every second costs one query.
HEALTHY_FOR = 2.0


class Health:
    """Whether this release can serve: the answer and when it was found."""

    def __init__(self):
        self.lock = threading.Lock()
        self.graph = None  # this release's migrations, read from disk once
        self.checked_at = 0.0

    def _migrations(self) -> set[tuple[str, str]]:
        from django.db.migrations.loader import MigrationLoader

        if self.graph is None:
            loader = MigrationLoader(None, ignore_no_migrations=True)
            self.graph = {key: set(getattr(m, "replaces", []) or [])
                          for key, m in loader.graph.nodes.items()}
        return self.graph

    def problem(self) -> str | None:
        """None when healthy, else why not."""
        from django.db import DEFAULT_DB_ALIAS, connections
        from django.db.migrations.recorder import MigrationRecorder

        if time.monotonic() - self.checked_at < HEALTHY_FOR:
            return None
        with self.lock:
            connection = connections[DEFAULT_DB_ALIAS]
            try:
                connection.ensure_connection()
                recorder = MigrationRecorder(connection)
                applied = set(recorder.applied_migrations()) if recorder.has_table() else set()
            except Exception as error:  # noqa: BLE001 - any database error is the answer
                return f"database unreachable: {type(error).__name__}: {error}"
            finally:
                connection.close()  # as Django does after a request that is not kept alive
            missing = sorted(f"{app}.{name}" for (app, name), replaces in self._migrations().items()
                             if (app, name) not in applied
                             and not (replaces and all(r in applied for r in replaces)))
            if missing:
                return (f"database lacks {len(missing)} migration(s) of this release: "
                        + ", ".join(missing[:5]))
            self.checked_at = time.monotonic()
        return None


HEALTH = Health()


def _answer(start_response, status: str, body: bytes, content_type: str) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
    return [body]


def wrap(app):
    """`app` behind the deploy's health and version answers."""

    def application(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX):
            return app(environ, start_response)
        if path == PREFIX + "version":
            body = json.dumps({"revision": RELEASE["revision"], "server": socket.gethostname()})
            return _answer(start_response, "200 OK", body.encode(), "application/json")
        if path == PREFIX + "health":
            problem = HEALTH.problem()
            if problem is None:
                return _answer(start_response, "200 OK", b"ok\n", "text/plain; charset=utf-8")
            return _answer(start_response, "503 Service Unavailable", (problem + "\n").encode(),
                           "text/plain; charset=utf-8")
        return _answer(start_response, "404 Not Found", b"not found\n", "text/plain; charset=utf-8")

    return application
