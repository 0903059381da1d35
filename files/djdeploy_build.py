"""Finish a new release in one start of its Django project (run as the app user, with the app's
environment, in the project root, by the release's own Python):

- collect the static files. Into a static folder inside the release: directly (the release is
  new). Into one outside it, shared by releases: beside the live files first, then moved in
  file by file (a rename is atomic and nothing is deleted, so the running release keeps every
  file it links to);
- run Django's deploy checks: errors fail the release, warnings are shown;
- print, as JSON, where the project keeps its static and media files and SQLite databases, and
  the folders it writes into while serving besides (django-compressor's, made here).

Usage: python djdeploy_build.py INCOMING_NAME --release RELEASE_FOLDER
"""

from __future__ import annotations

import argparse
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


def within(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def written_while_serving() -> str:
    """The folder django-compressor writes into while the site serves, when it compresses on
    demand (COMPRESS_ENABLED without COMPRESS_OFFLINE), else ''."""
    if "compressor" not in settings.INSTALLED_APPS:
        return ""
    import compressor.conf  # noqa: F401  (gives the COMPRESS_ settings their defaults)

    if not settings.COMPRESS_ENABLED or settings.COMPRESS_OFFLINE:
        return ""
    return os.path.abspath(os.path.join(str(settings.COMPRESS_ROOT), settings.COMPRESS_OUTPUT_DIR))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("incoming")
    parser.add_argument("--release", required=True)
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())  # the project, as manage.py would have it
    django.setup()
    # Relative folders are the project folder's, as Django's file storage takes them.
    static_root = os.path.abspath(settings.STATIC_ROOT) if settings.STATIC_ROOT else ""
    media_root = os.path.abspath(settings.MEDIA_ROOT) if settings.MEDIA_ROOT else ""
    if not static_root:
        print("STATIC_ROOT is not set in the project's settings: nothing to collect for nginx",
              file=sys.stderr)
    elif within(static_root, args.release):
        call_command("collectstatic", interactive=False, verbosity=0)
    else:
        incoming = os.path.join(static_root, args.incoming)
        shutil.rmtree(incoming, ignore_errors=True)
        with override_settings(STATIC_ROOT=incoming):
            call_command("collectstatic", interactive=False, verbosity=0)
        publish(incoming, static_root)
        shutil.rmtree(incoming)
    call_command("check", deploy=True, fail_level="ERROR", stdout=sys.stderr)
    writable = []
    if folder := written_while_serving():
        if within(folder, args.release):
            print(f"django-compressor compresses on demand into {folder}, inside the release, "
                  "which is read-only while it serves: set COMPRESS_OFFLINE and run `python "
                  "manage.py compress` as a build command", file=sys.stderr)
        else:
            os.makedirs(folder, exist_ok=True)
            writable.append(folder)
    sqlite = [str(db["NAME"]) for db in settings.DATABASES.values()
              if db.get("ENGINE", "").endswith("sqlite3") and str(db.get("NAME", "")).startswith("/")]
    print(json.dumps({"static": static_root, "media": media_root,
                      "static_url": settings.STATIC_URL, "media_url": settings.MEDIA_URL,
                      "sqlite": sqlite, "writable": writable}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
