"""Operational endpoints: health check and deployed revision.

Both are cheap, anonymous and never touch the session or CSRF machinery.
They are served by bizsite.middleware.HealthCheckMiddleware ahead of the
rest of the stack and are also routed in bizsite.urls.
"""

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)


def _plain(body, status=200):
    return HttpResponse(body + "\n", status=status, content_type="text/plain; charset=utf-8")


@csrf_exempt
@never_cache
@require_safe
def healthz(request):
    """200 "ok" when the database answers a trivial query, 503 otherwise."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:
        logger.warning("Health check: database unavailable", exc_info=True)
        return _plain("database unavailable", status=503)
    return _plain("ok")


def current_revision():
    """APP_REVISION from the environment, else the REVISION file, else "unknown"."""
    if settings.APP_REVISION:
        return settings.APP_REVISION
    try:
        with open(settings.REVISION_FILE, encoding="utf-8") as handle:
            first_line = handle.readline().strip()
    except OSError:
        first_line = ""
    return first_line or "unknown"


@csrf_exempt
@never_cache
@require_safe
def version(request):
    """The deployed git revision, as plain text."""
    return _plain(current_revision())
