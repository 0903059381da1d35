"""The hardened Gunicorn unit: what the app may write into while it serves."""

from operations.common import render

CONTEXT = dict(app_name="shop", base="/srv/shop", subdir="", env_files=["/etc/shop/app.env"],
               timeout=30, postgresql=False, web_group="www-data")


def read_write_paths(text: str) -> list[str]:
    return next(line for line in text.splitlines() if line.startswith("ReadWritePaths=")).split("=", 1)[1].split()


def test_data_and_media_and_what_the_project_compresses_while_serving():
    plain = render("gunicorn.service.j2", **CONTEXT, writable=[])
    assert read_write_paths(plain) == ["/srv/shop/shared/data", "/srv/shop/shared/media"]
    compressing = render("gunicorn.service.j2", **CONTEXT, writable=["/srv/shop/shared/static/CACHE"])
    assert read_write_paths(compressing)[-1] == "/srv/shop/shared/static/CACHE"
    assert plain.replace("\n", "") == compressing.replace(" /srv/shop/shared/static/CACHE", "").replace("\n", "")


def test_workers_may_set_their_own_user_and_nothing_more():
    """Gunicorn before 21 calls setuid() to its own user in each worker."""
    lines = render("gunicorn.service.j2", **CONTEXT, writable=[]).splitlines()
    filters = [line for line in lines if line.startswith("SystemCallFilter=")]
    assert filters[-2:] == ["SystemCallFilter=~@privileged @resources", "SystemCallFilter=setuid setgid"]
    assert "CapabilityBoundingSet=" in lines and "NoNewPrivileges=yes" in lines
