"""The deploy's scripts that run on the servers (files/), on the parts that need no server."""

from __future__ import annotations

import importlib.util
import json
import grp
import os
import pwd
import shutil
import tomllib
from pathlib import Path

import pytest

FILES = Path(__file__).resolve().parents[2] / "files"


def load(name: str, folder: Path = FILES):
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


release = load("djdeploy_release")
env = load("djdeploy_env")


# -- files/djdeploy_release.py ------------------------------------------------------------------


@pytest.mark.parametrize("output, packages", [
    ("Error: pg_config executable not found.\n", ["libpq-dev"]),
    ("/bin/sh: 1: mysql_config: not found\nOSError: mysql_config not found", ["default-libmysqlclient-dev", "pkg-config"]),
    ("Modules/LDAPObject.h:16:10: fatal error: lber.h: No such file or directory", ["libldap2-dev", "libsasl2-dev"]),
    ("fatal error: libxml/xmlversion.h: No such file or directory", ["libxml2-dev", "libxslt1-dev"]),
    ("everything went fine", []),
])
def test_a_failed_build_names_the_debian_package(output, packages):
    assert release.hints(output) == packages


def test_a_failed_poetry_install_names_the_dependencies_that_did_not_build():
    output = "\n".join([
        "  - Installing oldpkg (1.0)",
        "PEP517 build of a dependency failed",
        "",
        "    | Traceback (most recent call last):",
        "    | ImportError: cannot import name 'gone' from 'setuptools'",
        "",
        "Note: This error originates from the build backend, and is likely not a problem with "
        "poetry but one of the following issues with oldpkg (1.0)",
        "  - not supporting PEP 517 builds",
        "    | AttributeError: 'build_ext' object has no attribute 'x'",
        "Note: ... one of the following issues with other-pkg (5.4.1)",
        "warning: a long build log of a package that built fine",
    ])
    assert release.failed_builds(output) == [
        "oldpkg 1.0: ImportError: cannot import name 'gone' from 'setuptools'",
        "other-pkg 5.4.1: AttributeError: 'build_ext' object has no attribute 'x'",
    ]
    assert release.failed_builds("Installing dependencies from lock file\nok") == []


def test_what_the_deploy_adds_to_the_venv_poetry_filled(tmp_path):
    venv = tmp_path / ".venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    (venv / "bin").mkdir(parents=True)
    (site / "countries").mkdir(parents=True)
    (site / "countries" / "fields.py").write_text("import os\nimport pkg_resources\n")
    (site / "careful.py").write_text("try:\n    import pkg_resources\nexcept ImportError:\n    pass\n")
    assert release.pkg_resources_importers(venv) == ["countries"]  # a guarded import needs nothing
    adds = release.missing(venv)
    assert set(adds) == {"gunicorn", "setuptools"} and "countries" in adds["setuptools"]
    (venv / "bin" / "gunicorn").write_text("")
    (site / "setuptools").mkdir()
    assert release.missing(venv) == {}
    # Nothing asks for pkg_resources: the venv stays what the lock says.
    (site / "setuptools").rmdir()
    (site / "countries" / "fields.py").write_text("import os\n")
    assert release.missing(venv) == {}


def test_build_commands_find_the_releases_python_first(tmp_path):
    venv = tmp_path / ".venv"
    env = release.build_env({"HOME": "/var/cache/x"}, venv)
    assert env["PATH"].split(":")[0] == f"{venv}/bin" and "/usr/bin" in env["PATH"].split(":")
    assert env["VIRTUAL_ENV"] == str(venv) and env["HOME"] == "/var/cache/x"


def test_build_constraints_become_the_table_poetry_reads():
    pyproject = '[tool.poetry]\nname = "x"\n[tool.poetry.dependencies]\npython = "^3.8"\n'
    text = pyproject + release.build_constraints_toml(
        {"pyyaml": {"cython": "<3.0"}, "django-allauth": {"setuptools": "<70", "wheel": "<1"}})
    data = tomllib.loads(text)
    assert data["tool"]["poetry"]["build-constraints"] == {
        "pyyaml": {"cython": "<3.0"}, "django-allauth": {"setuptools": "<70", "wheel": "<1"}}
    assert data["tool"]["poetry"]["dependencies"] == {"python": "^3.8"}


def test_migration_digest_follows_migration_files_only(tmp_path):
    (tmp_path / "shop/migrations").mkdir(parents=True)
    (tmp_path / "shop/migrations/0001_initial.py").write_text("a")
    (tmp_path / "shop/views.py").write_text("v")
    (tmp_path / ".venv/lib/x/migrations").mkdir(parents=True)
    (tmp_path / ".venv/lib/x/migrations/0001.py").write_text("ignored")
    first = release.migration_digest(tmp_path)
    (tmp_path / "shop/views.py").write_text("changed")
    (tmp_path / ".venv/lib/x/migrations/0001.py").write_text("changed too")
    assert release.migration_digest(tmp_path) == first
    (tmp_path / "shop/migrations/0002_more.py").write_text("b")
    assert release.migration_digest(tmp_path) != first


def test_inside():
    assert release.inside("/srv/a/releases/x/staticfiles", "/srv/a/releases/x") == "staticfiles"
    assert release.inside("/srv/a/shared/static", "/srv/a/releases/x") is None
    assert release.inside("/srv/a/releases/xy", "/srv/a/releases/x") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="changes owners")
def test_the_release_is_the_apps_while_it_builds_its_venv_too(tmp_path):
    """Some static files finders write into their own package in the .venv during collectstatic."""
    release_dir = tmp_path / "rel"
    package = release_dir / ".venv" / "lib" / "site-packages" / "finder"
    package.mkdir(parents=True)
    (package / "compiled.css").write_text("")
    outside = tmp_path / "outside"
    outside.write_text("")
    (release_dir / "link").symlink_to(outside)
    release.chown_tree(release_dir, "nobody")
    owners = {p.lstat().st_uid for p in [release_dir, *release_dir.rglob("*")]}
    assert owners == {pwd.getpwnam("nobody").pw_uid}
    assert outside.stat().st_uid == 0  # a link's target is left alone


@pytest.mark.skipif(os.geteuid() != 0, reason="changes groups")
def test_what_the_app_writes_while_serving_nginx_can_read(tmp_path):
    cache = tmp_path / "static" / "CACHE"
    (cache / "css").mkdir(parents=True)
    (cache / "css" / "old.css").write_text("")
    release.served_while_written(cache, "www-data")
    www = grp.getgrnam("www-data").gr_gid
    assert (cache.stat().st_gid, cache.stat().st_mode & 0o7777) == (www, 0o2750)
    assert ((cache / "css").stat().st_mode & 0o7777) == 0o2750
    assert ((cache / "css" / "old.css").stat().st_gid, (cache / "css" / "old.css").stat().st_mode & 0o777) == (www, 0o640)
    (cache / "js").mkdir()  # made later, by the app: the group is passed on
    assert (cache / "js").stat().st_gid == www


def test_data_kept_in_the_release_moves_to_shared_once(tmp_path):
    rel, shared = tmp_path / "rel", tmp_path / "shared"
    (rel / "media").mkdir(parents=True)
    (rel / "media/.keep").write_text("")
    (rel / "db.sqlite3").write_text("db")
    shared.mkdir()
    release.link_into_shared(rel / "media", shared / "media")
    release.link_into_shared(rel / "db.sqlite3", shared / "db.sqlite3")
    assert (rel / "media").is_symlink() and (shared / "media/.keep").exists()
    assert (rel / "db.sqlite3").resolve() == shared / "db.sqlite3"
    # A later release never overwrites what shared/ already holds.
    rel2 = tmp_path / "rel2"
    rel2.mkdir()
    (rel2 / "db.sqlite3").write_text("empty")
    release.link_into_shared(rel2 / "db.sqlite3", shared / "db.sqlite3")
    assert (shared / "db.sqlite3").read_text() == "db"


# -- files/djdeploy_env.py ----------------------------------------------------------------------


def test_env_files_parse_as_systemd_reads_the_deploys():
    text = 'A="x \\"q\\" \\\\ y"\nB=plain\n# C=comment\nexport D=\'single\'\n'
    assert env.parse(text) == {"A": 'x "q" \\ y', "B": "plain", "D": "single"}
    assert env.parse(env.render({"K": 'a"b\\c'}, "t")) == {"K": 'a"b\\c'}


def test_database_url_parts():
    assert env.url_parts("postgres://shop:p%40ss@db.internal:6432/shopdb") == {
        "db_name": "shopdb", "db_user": "shop", "db_password": "p@ss",
        "db_host": "db.internal", "db_port": "6432"}
    assert env.url_parts("postgres://shop:pw@localhost/shop")["db_port"] == "5432"
    assert env.url_parts("sqlite:////srv/x/shared/data/db.sqlite3") == {}


def spec_in(tmp_path: Path, dotenv: bool) -> dict:
    (tmp_path / "app.env").write_text('DEBUG="false"\nDATABASE_URL="sqlite:////x.db"\n')
    (tmp_path / "secret_key.env").write_text("SECRET_KEY=k3y\n")
    (tmp_path / "database.env").write_text("DATABASE_URL=postgres://app:pw@localhost:5432/app\n")
    return {
        "sources": [str(tmp_path / n) for n in ("app.env", "secret_key.env", "database.env", "secrets.env")],
        "names": {"secret_key": ["SECRET_KEY", "DJANGO_SECRET_KEY"], "database_url": ["DATABASE_URL"],
                  "db_name": ["DB_NAME"], "db_password": ["DB_PASSWORD", "POSTGRES_PASSWORD"],
                  "db_host": ["DB_HOST"], "db_port": [], "db_user": ["DB_USER"]},
        "out": str(tmp_path / "names.env"),
        "dotenv": str(tmp_path / "dotenv") if dotenv else "",
        "remove": [] if dotenv else [str(tmp_path / "dotenv")],
        "group": "root",
    }


def test_secret_values_under_the_names_asked_for(tmp_path):
    spec = spec_in(tmp_path, dotenv=False)
    out, whole = env.derived(spec)
    # Names the sources already have with the same value are not repeated.
    assert out == {"DJANGO_SECRET_KEY": "k3y", "DB_NAME": "app", "DB_PASSWORD": "pw",
                   "POSTGRES_PASSWORD": "pw", "DB_HOST": "localhost", "DB_USER": "app"}
    assert whole["DATABASE_URL"].startswith("postgres://")  # the later source wins


@pytest.mark.skipif(os.geteuid() != 0, reason="writes root-owned files")
def test_check_then_write_then_same(tmp_path, capsys):
    spec = spec_in(tmp_path, dotenv=True)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert env.main(["x", "check", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "differs"
    env.main(["x", "write", str(path)])
    assert (tmp_path / "names.env").stat().st_mode & 0o777 == 0o640
    dotenv = env.parse((tmp_path / "dotenv").read_text())
    assert dotenv["DJANGO_SECRET_KEY"] == "k3y" and dotenv["DEBUG"] == "false"
    env.main(["x", "check", str(path)])
    assert capsys.readouterr().out.strip() == "same"
    # A .env no longer wanted goes.
    path.write_text(json.dumps(spec_in(tmp_path, dotenv=False)))
    env.main(["x", "check", str(path)])
    assert capsys.readouterr().out.strip() == "differs"
    env.main(["x", "write", str(path)])
    assert not (tmp_path / "dotenv").exists()


# -- files/djdeploy_wsgi.py ---------------------------------------------------------------------


@pytest.fixture
def wrapper(tmp_path):
    shutil.copy(FILES / "djdeploy_wsgi.py", tmp_path)
    (tmp_path / "release.json").write_text(json.dumps({"revision": "abc123", "wsgi_app": "x:y"}))
    return load("djdeploy_wsgi", tmp_path)


def call(app, path: str):
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response))
    return seen["status"], body


def test_wrapper_answers_version_and_passes_everything_else(wrapper):
    def project(environ, start_response):
        start_response("200 OK", [])
        return [b"project " + environ["PATH_INFO"].encode()]

    app = wrapper.wrap(project)
    status, body = call(app, "/_djdeploy/version")
    assert status == "200 OK" and json.loads(body)["revision"] == "abc123"
    assert call(app, "/orders/") == ("200 OK", b"project /orders/")
    assert call(app, "/_djdeploy/other")[0].startswith("404")
    assert call(app, "/_djdeployed")[1] == b"project /_djdeployed"
