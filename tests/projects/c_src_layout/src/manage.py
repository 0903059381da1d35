#!/usr/bin/env python
"""Management commands for the shop (run from src/)."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    try:
        from django.core.management import execute_from_command_line
    except ImportError as exc:
        raise SystemExit(f"Django is not importable ({exc}); run `poetry install` and use `poetry run`.")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
