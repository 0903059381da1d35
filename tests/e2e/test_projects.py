"""Django projects as their developers wrote them (tests/projects/*: common real-world layouts,
none written for this deploy kit), each deployed with only the settings its user would write,
then updated to a second commit and rolled back; pages and static files checked through nginx.
The PostgreSQL one's second commit also migrates, and its rollback restores the backup the
update took: the database must be exactly as before, and the update must run again.

They share one server, started from the snapshot of the session's deployed Debian 12 server
(pyenv's CPython and Poetry are there already): each project is its own site on it (its own
`app_name` and host name), beside the example app.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench.revisions import push_branches

from .conftest import Run, Runner, http_get, note, sh

pytestmark = pytest.mark.e2e

PROJECTS = Path(__file__).resolve().parents[1] / "projects"
SERVER = "compat"

# project folder: (app_name, the settings a user of that project writes)
CASES = {
    "a_whitenoise": ("pa", {}),
    "b_settings_package": ("pb", {"dotenv": True}),
    "c_src_layout": ("pc", {}),
    "d_minimal": ("pd", {}),
    "e_pep621": ("pe", {"poetry_extras": ["server"]}),
    "f_postgres_parts": ("pf", {"database": "postgresql"}),
    "g_frontend": ("pg", {"nodejs": True, "build_commands": ["npm ci", "npm run build"]}),
}
MARKER = re.compile(r'(<h1 id="project">)([^<]*)(</h1>)')
ASSET = re.compile(r'(?:href|src)="(/static/[^"]+\.(?:css|js))"')


@pytest.fixture(scope="module")
def compat(sb, d12_image):
    server = sb.add_server(SERVER, os="debian12", image=d12_image)
    try:
        yield server
    finally:
        sb.remove_server(SERVER)


@pytest.fixture(scope="module")
def runner(sb, tmp_path_factory) -> Runner:
    return Runner(sb, tmp_path_factory.mktemp("projects-settings"))


def second_commit(root: Path) -> None:
    """A visible change: the project's heading marker gets " v2"."""
    for page in root.rglob("*.html"):
        if "node_modules" in page.parts:
            continue
        text = page.read_text()
        if MARKER.search(text):
            page.write_text(MARKER.sub(r"\1\2 v2\3", text, count=1))
            return
    raise AssertionError(f"no {MARKER.pattern} in the templates of {root}")


# The PostgreSQL project's second commit also migrates: a table of its own, so a rollback
# that restores the backup must remove it, and the next update must make it again.
REMINDERS = """from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("appointments", "0001_initial")]
    operations = [migrations.RunSQL(
        "CREATE TABLE appointments_reminder (id serial PRIMARY KEY, note text)",
        "DROP TABLE appointments_reminder")]
"""


def second_commit_with_a_migration(root: Path) -> None:
    second_commit(root)
    (root / "appointments" / "migrations" / "0002_reminders.py").write_text(REMINDERS)


def page(server, app: str, path: str = "/"):
    return http_get(server.http_port, path, host=f"{app}.test")


def heading(server, app: str) -> str:
    home = page(server, app)
    assert home.status == 200, home.body[:1000]
    match = MARKER.search(home.body)
    assert match, home.body[:1000]
    return match.group(2)


def assert_assets_served(server, app: str) -> None:
    home = page(server, app)
    assets = ASSET.findall(home.body)
    assert assets, f"no static asset linked from {app}'s home page:\n{home.body[:1000]}"
    for asset in assets:
        got = page(server, app, asset)
        assert got.status == 200 and got.body.strip(), f"{asset}: {got.status}"


def deploy(runner: Runner, script: str, app: str, settings: dict, **more) -> Run:
    return runner.run(SERVER, script, settings={**settings, **more})


@pytest.mark.parametrize("folder", list(CASES))
def test_project_deploys_updates_and_rolls_back(sb, compat, runner, folder, pytestconfig):
    app, own = CASES[folder]
    name = f"project-{app}"
    sb.source.publish(name, PROJECTS / folder)
    change = second_commit_with_a_migration if folder == "f_postgres_parts" else second_commit
    commits = push_branches(sb.source.repo_path(name), {"v2": ("main", change, "v2")},
                            author="Project Tests")
    # The sandbox's defaults describe the example app: its repository and its own health URL.
    settings = {"app_name": app, "repo_url": sb.source.git_url(name), "revision": "main",
                "health_check_path": "", "server_names": [f"{app}.test"], **own}
    base = f"/srv/{app}"

    first = deploy(runner, "deploy.py", app, settings)
    note(pytestconfig, f"{folder}: first deploy on a provisioned server: {first.seconds:.1f}s")
    assert first.returncode == 0, first.explain()
    assert "project: manage.py in" in first.output, first.explain()
    v1 = heading(compat, app)
    assert_assets_served(compat, app)
    # The deploy's own answers: the server itself gets them, the public a 404.
    assert page(compat, app, "/_djdeploy/health").status == 404
    inside = sh(sb, SERVER, f"curl -s -H 'Host: {app}.test' http://127.0.0.1/_djdeploy/version").stdout
    assert commits["main"] in inside, inside
    assert sh(sb, SERVER, f"curl -s -H 'Host: {app}.test' http://127.0.0.1/_djdeploy/health").stdout.strip() == "ok"
    check_layout(sb, app, folder, first)

    tables_before = tables(sb, app) if folder == "f_postgres_parts" else set()
    update = deploy(runner, "update.py", app, settings, revision="v2")
    note(pytestconfig, f"{folder}: update: {update.seconds:.1f}s")
    assert update.returncode == 0, update.explain()
    assert heading(compat, app) == f"{v1} v2"
    assert_assets_served(compat, app)
    check_data_kept(sb, app, folder)

    # PostgreSQL: the rollback restores the backup the update took, which must leave the
    # database exactly as it was (the update's table gone, its migration unrecorded).
    restore = {"restore_backup": True} if folder == "f_postgres_parts" else {}
    back = deploy(runner, "rollback.py", app, {**settings, **restore}, revision="v2")
    assert back.returncode == 0, back.explain()
    assert heading(compat, app) == v1
    assert_assets_served(compat, app)
    assert sh(sb, SERVER, f"cat {base}/current/REVISION || cat {base}/current/*/REVISION").stdout.split()[0] \
        == commits["main"]
    if folder == "f_postgres_parts":
        assert "appointments_reminder" not in tables_before, tables_before
        assert tables(sb, app) == tables_before
        applied = sh(sb, SERVER, "runuser -u postgres -- psql -tAc \"select count(*) from "
                                 f"django_migrations where name = '0002_reminders'\" {app}").stdout
        assert applied.strip() == "0"
        # The update that was undone runs again: its migration finds nothing in its way.
        again = deploy(runner, "update.py", app, settings, revision="v2")
        assert again.returncode == 0, again.explain()
        assert tables(sb, app) == tables_before | {"appointments_reminder"}
        assert heading(compat, app) == f"{v1} v2"


def tables(sb, app: str) -> set[str]:
    out = sh(sb, SERVER, "runuser -u postgres -- psql -tAc \"select tablename from pg_tables "
                         f"where schemaname = 'public'\" {app}").stdout
    return set(out.split())


def check_layout(sb, app: str, folder: str, first: Run) -> None:
    """What each layout needs of the deploy, checked on the server."""
    current = f"/srv/{app}/current"
    if folder == "a_whitenoise":
        # Uploads the project keeps in its folder live in shared/ and nginx serves them.
        sh(sb, SERVER, f"test -L {current}/media")
        sh(sb, SERVER, f"printf 'uploaded\\n' > /srv/{app}/shared/media/upload.txt")
        got = http_get(sb.server(SERVER).http_port, "/media/upload.txt", host=f"{app}.test")
        assert (got.status, got.body) == (200, "uploaded\n")
        # Static files are collected inside the release, which the app cannot change.
        assert sh(sb, SERVER, f"runuser -u {app} -- touch {current}/staticfiles/x", ok=False).returncode != 0
        # The project's own gunicorn.conf.py is read first: its hook ran, the deploy's socket won.
        assert "its gunicorn.conf.py applies first" in first.output, first.explain()
        journal = sh(sb, SERVER, f"journalctl --no-pager -u '{app}@*'").stdout
        assert "newsroom: workers ready" in journal, journal[-3000:]
        assert "0.0.0.0:8000" not in journal
    elif folder == "b_settings_package":
        assert sh(sb, SERVER, f"readlink {current}/.env").stdout.strip() == f"/etc/{app}/dotenv"
        mode = sh(sb, SERVER, f"stat -L -c '%U:%G %a' {current}/.env").stdout.strip()
        assert mode == f"root:{app} 640"
        assert "config.settings.production" in first.output
    elif folder == "c_src_layout":
        sh(sb, SERVER, f"test -x {current}/src/.venv/bin/python")  # R7: in the Django project root
        assert not sh(sb, SERVER, f"test -e {current}/.venv", ok=False).returncode == 0
    elif folder == "d_minimal":
        assert "Gunicorn" in first.output and "added" in first.output, first.explain()
        sh(sb, SERVER, f"test -x {current}/.venv/bin/gunicorn")
        sh(sb, SERVER, f"test -L {current}/db.sqlite3")
        # An unmigrated database is not healthy: the same site on an empty database answers 503
        # (the project itself would answer its pages with 500).
        db = f"/srv/{app}/shared/data/db.sqlite3"
        health = f"sleep 3; curl -s -w ' %{{http_code}}' -H 'Host: {app}.test' http://127.0.0.1/_djdeploy/health"
        sh(sb, SERVER, f"mv {db} {db}.aside")
        try:
            empty = sh(sb, SERVER, health).stdout
        finally:
            sh(sb, SERVER, f"rm -f {db} && mv {db}.aside {db}")
        assert empty.endswith(" 503") and "lacks" in empty and "migration" in empty, empty
        assert sh(sb, SERVER, health).stdout.endswith("ok\n 200")
        sh(sb, SERVER, f"{app}-manage shell -c \"from django.contrib.auth.models import Group; "
                       f"Group.objects.create(name='kept across releases')\"")
    elif folder == "e_pep621":
        assert sh(sb, SERVER, f"ls {current}/.venv/bin/ | grep -qx pytest", ok=False).returncode != 0
    elif folder == "f_postgres_parts":
        tables = sh(sb, SERVER, f"runuser -u postgres -- psql -tAc \"select count(*) from "
                                f"pg_tables where tablename='django_migrations'\" {app}").stdout
        assert tables.strip() == "1"
    elif folder == "g_frontend":
        sh(sb, SERVER, f"test -d {current}/node_modules || test -f {current}/package-lock.json")


def check_data_kept(sb, app: str, folder: str) -> None:
    if folder == "d_minimal":
        out = sh(sb, SERVER, f"{app}-manage shell -c \"from django.contrib.auth.models import Group; "
                             f"print(Group.objects.filter(name='kept across releases').count())\"")
        assert out.stdout.strip().splitlines()[-1] == "1"
    if folder == "a_whitenoise":
        got = http_get(sb.server(SERVER).http_port, "/media/upload.txt", host=f"{app}.test")
        assert got.status == 200


def test_a_project_that_refuses_the_python_stops_before_building(sb, compat, runner, tmp_path):
    """The project's requires-python against python_version: one message naming both, and
    nothing built."""
    work = tmp_path / "strict"
    shutil.copytree(PROJECTS / "a_whitenoise", work)
    pyproject = work / "pyproject.toml"
    text = pyproject.read_text()
    text, count = re.subn(r'(requires-python\s*=\s*)"[^"]*"', r'\1">=3.99"', text)
    if not count:
        text, count = re.subn(r'(\npython\s*=\s*)"[^"]*"', r'\1">=3.99"', text)
    assert count, text
    pyproject.write_text(text)
    sb.source.publish("project-strict", work)
    run = runner.run(SERVER, "deploy.py", settings={
        "app_name": "pstrict", "repo_url": sb.source.git_url("project-strict"),
        "health_check_path": "", "server_names": ["pstrict.test"]})
    assert run.returncode != 0, run.explain()
    assert "python_version: 3.11.2 is not accepted" in run.output and ">=3.99" in run.output, run.explain()
    assert sh(sb, SERVER, "ls /srv/pstrict/releases 2>/dev/null | wc -l").stdout.strip() == "0"
