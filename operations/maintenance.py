"""The maintenance page: while a flag file exists, nginx answers every request itself with 503,
`Retry-After` and a page in Traditional Chinese and English (a restore shows it)."""

from __future__ import annotations

from pyinfra.api import operation

from .common import config_file, render
from .settings import Settings

RETRY_AFTER = 30  # seconds a client is asked to wait


def flag(s: Settings) -> str:
    return f"{s.base_dir}/maintenance"


def page_dir(s: Settings) -> str:
    return f"/usr/local/share/djdeploy/{s.app_name}"


def nginx_context(s: Settings) -> dict:
    """What the nginx site template needs to serve the page."""
    return {"flag": flag(s), "root": page_dir(s), "retry_after": RETRY_AFTER}


@operation()
def page(s: Settings):
    """
    The maintenance page nginx serves while the flag exists.

    + s: settings
    """
    yield from config_file._inner(path=f"{page_dir(s)}/maintenance.html",
                                  content=render("maintenance.html.j2", app_name=s.app_name,
                                                 restoring=True))
