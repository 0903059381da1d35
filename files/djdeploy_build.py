"""Finish a new release in one start of its Django project (run as the app user, with the app's
environment, in the project root, by the release's own Python):

- collect the static files beside the live ones and move them in file by file (a rename is
  atomic and nothing is deleted, so the running release keeps every file it links to);
- run Django's deploy checks: errors fail the release, warnings are shown;
- print, as JSON, where the project keeps its static and media files, for nginx.

Usage: python djdeploy_build.py INCOMING_NAME
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import django
from django.conf import settings
from django.core.management import call_command
from django.test.utils import override_settings


def publish(source: str, target: str) -> None:
    for folder, _, files in os.walk(source):
        destination = os.path.join(target, os.path.relpath(folder, source))
        os.makedirs(destination, exist_ok=True)
        for name in files:
            os.replace(os.path.join(folder, name), os.path.join(destination, name))


def main() -> int:
    sys.path.insert(0, os.getcwd())  # the project, as manage.py would have it
    django.setup()
    static_root = str(settings.STATIC_ROOT)
    incoming = os.path.join(static_root, sys.argv[1])
    shutil.rmtree(incoming, ignore_errors=True)
    with override_settings(STATIC_ROOT=incoming):
        call_command("collectstatic", interactive=False, verbosity=0)
    publish(incoming, static_root)
    shutil.rmtree(incoming)
    call_command("check", deploy=True, fail_level="ERROR", stdout=sys.stderr)
    print(json.dumps({"static": static_root, "media": str(settings.MEDIA_ROOT),
                      "static_url": settings.STATIC_URL, "media_url": settings.MEDIA_URL}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
