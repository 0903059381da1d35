"""Log rotation of the deploy's own logs: the audit log keeps its whole history, the backup
log a few months."""

from __future__ import annotations

from pyinfra.api import operation

from .backup import LOG_DIR
from .common import config_file, render
from .release import audit_path
from .settings import Settings

PACKAGES = ["logrotate"]


@operation()
def rotation(s: Settings):
    """
    logrotate's rules for the audit log (monthly, compressed, never deleted) and the backup log.

    + s: settings
    """
    content = render("logrotate.j2", app_name=s.app_name, audit_log=audit_path(s), log_dir=LOG_DIR)
    yield from config_file._inner(path=f"/etc/logrotate.d/djdeploy-{s.app_name}", content=content)
