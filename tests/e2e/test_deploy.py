"""The deploy end to end: the real `pyinfra inventory.py deploy.py` against sandbox servers, checked
the way a user checks a site (HTTP through nginx on 127.0.0.1) and the runbook's way on the
server itself (R3-R8, B1-B9).

Servers: d12 (bare Debian 12, git mode; the session's one Debian 12 CPython compile), s12 (from
a snapshot of d12: upload mode, PostgreSQL, TLS), dry (bare Debian 12, only `--dry`), d13 (bare
Debian 13)."""

from __future__ import annotations

import http.client
import re
import shlex
import subprocess

import pytest

from operations.common import env_prefix
from operations.python_env import tool_env

from .conftest import OUTPUTS, Deployed, http_get, note, sh, wait_for

pytestmark = pytest.mark.e2e

APP = "bizsite"
BASE = f"/srv/{APP}"
SECRET_TOKEN = "s3cr3t-token-value"
HTTPS_WARNINGS = ("security.W004", "security.W008", "security.W012", "security.W016")


def static_url(html: str) -> str:
    match = re.search(r'href="(/static/sales/site\.[0-9a-f]{12}\.css)"', html)
    assert match, "no hashed site.css in the page"
    return match.group(1)


def live_slot(sb, name: str) -> str:
    upstream = sh(sb, name, f"cat /etc/nginx/{APP}-upstream.conf").stdout
    match = re.search(rf"/run/{APP}/([ab])\.sock", upstream)
    assert match, upstream
    return match.group(1)


def changed(run) -> int:
    """Operations that changed something, from `--json` (pyinfra 3.10: results.totals)."""
    return run.json()["results"]["totals"]["success"]


def listeners(sb, name: str) -> set[str]:
    """`address:port` of each listening TCP socket."""
    out = sh(sb, name, "ss -ltnH").stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}


def public_ports(addresses: set[str]) -> set[int]:
    loopback = ("127.", "[::1]", "::1")
    return {int(a.rsplit(":", 1)[1]) for a in addresses if not a.startswith(loopback)}


def secret_key(sb, name: str) -> str:
    text = sh(sb, name, f"cat /etc/{APP}/secret_key.env").stdout
    match = re.search(r"^SECRET_KEY=(\S+)$", text, re.M)
    assert match and len(match.group(1)) >= 40, "no usable SECRET_KEY"
    return match.group(1)


def state_marks(sb, name: str) -> str:
    """What a deploy would change: `current`, config files, units and their mtimes."""
    return sh(sb, name, f"readlink {BASE}/current; ls -l --time-style=+%s.%N {BASE}/releases "
                        f"/etc/{APP} /etc/nginx/sites-enabled /etc/systemd/system | "
                        "grep -v '^total'", ok=False).stdout


# -- d12: a bare Debian 12 server, git mode --------------------------------------------------


def test_fresh_server_serves_the_site(sb, d12: Deployed, deployer, deployed_commit):
    """Acceptance 1: the site through nginx; static files survive a stopped Gunicorn."""
    port = d12.server.http_port
    home = http_get(port, "/")
    assert home.status == 200, home.body[:500]
    assert 'id="customer-count"' in home.body and 'href="/analysis/"' in home.body, home.body[:500]
    assert http_get(port, "/admin/login/").status == 200
    health = http_get(port, "/healthz/")
    assert (health.status, health.body.strip()) == (200, "ok")
    version = http_get(port, "/version/")
    assert (version.status, version.body.strip()) == (200, deployed_commit)

    css = static_url(home.body)
    static = http_get(port, css)
    assert static.status == 200 and "{" in static.body
    assert "immutable" in static.headers.get("Cache-Control", "")

    sh(sb, "d12", f"systemctl stop '{APP}@*'")
    try:
        assert sh(sb, "d12", f"systemctl is-active {APP}@a.service {APP}@b.service",
                  ok=False).returncode != 0
        assert http_get(port, "/").status == 502  # Gunicorn is really down
        again = http_get(port, css)
        assert again.status == 200 and again.body == static.body
    finally:
        rerun = deployer.run("d12")
    assert rerun.returncode == 0, rerun.explain()
    wait_for(port, "/healthz/", seconds=60)
    assert http_get(port, "/").status == 200


def test_runbook_on_the_server(sb, d12: Deployed):
    """Acceptance 2: R3-R7 and B8 checked on the server."""
    cur = f"{BASE}/current"
    sh(sb, "d12", f"test -d {cur}/.venv")
    version = sh(sb, "d12", f"{cur}/.venv/bin/python --version").stdout.strip()
    assert version == "Python 3.11.2"
    real = sh(sb, "d12", f"readlink -f {cur}/.venv/bin/python").stdout.strip()
    assert real.startswith("/opt/pyenv/versions/3.11.2/"), real
    cfg = sh(sb, "d12", f"cat {cur}/.venv/pyvenv.cfg").stdout
    assert re.search(r"^command = /opt/pyenv/versions/3\.11\.2/bin/python\S* -m venv ", cfg, re.M), cfg
    assert "home = /opt/pyenv/versions/3.11.2/bin" in cfg

    from sandbox.hostinfo import package_index_url
    env = {**tool_env(package_index_url()), "POETRY_VIRTUALENVS_IN_PROJECT": "true",
           "POETRY_CACHE_DIR": "/var/cache/djdeploy/poetry", "POETRY_CONFIG_DIR": "/opt/poetry/config"}
    dry = sh(sb, "d12", f"cd {cur} && " + env_prefix(env)
             + "poetry sync --dry-run --no-interaction --no-ansi --only main --no-root").stdout
    assert re.search(r"0 installs, 0 updates, 0 removals", dry), dry
    assert "django" in dry.lower()  # it did read the lock file

    slot = live_slot(sb, "d12")
    pid = sh(sb, "d12", f"systemctl show -P MainPID {APP}@{slot}.service").stdout.strip()
    assert pid not in ("", "0")
    cmdline = sh(sb, "d12", f"tr '\\0' ' ' < /proc/{pid}/cmdline").stdout
    assert re.search(r"/\.venv/bin/gunicorn -c gunicorn\.conf\.py\b", cmdline), cmdline
    cwd = sh(sb, "d12", f"readlink -f /proc/{pid}/cwd").stdout.strip()
    current = sh(sb, "d12", f"readlink -f {cur}").stdout.strip()
    assert cwd == current
    conf = sh(sb, "d12", f"cat {cur}/gunicorn.conf.py").stdout
    assert 'wsgi_app = "bizsite.wsgi:application"' in conf


def test_second_run_changes_nothing(sb, d12: Deployed, deployer, pytestconfig):
    """Acceptance 3: a re-run reports zero changed operations (pyinfra --json)."""
    key = secret_key(sb, "d12")
    run = deployer.run("d12", "--json")
    assert run.returncode == 0, run.explain()
    note(pytestconfig, f"no-op re-run (d12): {run.seconds:.1f}s")
    results = run.json()["results"]
    assert results["failed_hosts"] == []
    busy = [op["name"] for op in results["operations"] if op["success"]]
    assert changed(run) == 0, f"changed on a re-run: {busy}"
    assert results["totals"]["no_change"] == len(results["operations"]) > 10
    assert secret_key(sb, "d12") == key  # acceptance 9: the key survives a deploy


def test_secrets_never_in_output(sb, d12: Deployed, deployer):
    """Acceptance 9 (d12): the secret key and a secret_env value in no output of a normal,
    `--dry`, `-v` and `--diff` run; the secret still reaches the app."""
    key = secret_key(sb, "d12")
    settings = {"secret_env": {"API_TOKEN": SECRET_TOKEN}}
    try:
        runs = [deployer.run("d12", "--dry", settings=settings, yes=False),
                deployer.run("d12", "-v", "--diff", settings=settings),
                deployer.run("d12", "-v", "--diff", settings=settings)]
        for run in runs:
            assert run.returncode == 0, run.explain()
        assert "secrets.env" in sh(sb, "d12", f"ls /etc/{APP}").stdout
        mode = sh(sb, "d12", f"stat -c '%U:%G %a' /etc/{APP}/secrets.env").stdout.strip()
        assert mode == f"root:{APP} 640"
        # The running app has the secret (a changed environment restarts Gunicorn).
        slot = live_slot(sb, "d12")
        pid = sh(sb, "d12", f"systemctl show -P MainPID {APP}@{slot}.service").stdout.strip()
        assert sh(sb, "d12", f"tr '\\0' '\\n' < /proc/{pid}/environ | grep -qx "
                             f"{shlex.quote('API_TOKEN=' + SECRET_TOKEN)}", ok=False).returncode == 0, \
            "Gunicorn does not see the new secret_env value"
    finally:
        back = deployer.run("d12", "-v")  # back to the default settings: the secrets file goes
    assert back.returncode == 0, back.explain()
    assert "secrets.env" not in sh(sb, "d12", f"ls /etc/{APP}").stdout
    assert secret_key(sb, "d12") == key
    for what, output in OUTPUTS:
        assert key not in output, f"SECRET_KEY printed by {what}"
        assert SECRET_TOKEN not in output, f"secret_env value printed by {what}"


def test_security(sb, d12: Deployed):
    """Acceptance 10: code not writable by the app, few open ports, unknown hosts dropped,
    dotfiles hidden, Django's deploy checks, systemd sandboxing."""
    port = d12.server.http_port
    res = sh(sb, "d12", f"runuser -u {APP} -- touch {BASE}/current/x", ok=False)
    assert res.returncode != 0 and "Permission denied" in res.stderr
    res = sh(sb, "d12", f"runuser -u {APP} -- touch {BASE}/current/.venv/x", ok=False)
    assert res.returncode != 0
    assert public_ports(listeners(sb, "d12")) == {22, 80}

    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        http_get(port, "/", host="evil.example")
    assert http_get(port, "/.git/config").status == 404
    assert http_get(port, "/.env").status == 404

    check = sh(sb, "d12", f"{APP}-manage check --deploy", ok=False)
    found = set(re.findall(r"\((\w+\.[WE]\d+)\)", check.stdout + check.stderr))
    assert found <= set(HTTPS_WARNINGS), check.stdout + check.stderr

    slot = live_slot(sb, "d12")
    out = sh(sb, "d12", f"systemd-analyze security --no-pager {APP}@{slot}.service").stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out[-1000:]
    assert float(match.group(1)) <= 2.0, out[-3000:]


def test_reboot_brings_the_site_back(sb, d12: Deployed):
    """Acceptance 5: after a reboot the site answers by itself."""
    after = sb.restart("d12")
    assert after.http_port == d12.server.http_port
    wait_for(d12.server.http_port, "/healthz/", seconds=60)
    assert http_get(d12.server.http_port, "/").status == 200


@pytest.mark.parametrize("settings, words", [
    ({"python_version": "abc"}, ["python_version", "'abc'"]),
    ({"app_name": "my app"}, ["app_name", "'my app'"]),
    ({"repo_url": ""}, ["repo_url"]),
    ({"http_port": 70000}, ["http_port", "70000"]),
    ({"pyhton_version": "3.11.2"}, ["pyhton_version", "unknown setting", "python_version"]),
], ids=["python_version", "app_name", "repo_url", "http_port", "unknown_key"])
def test_bad_settings_change_nothing(sb, d12: Deployed, deployer, settings, words):
    """Acceptance 11: a bad setting stops the run before any host is touched."""
    before = state_marks(sb, "d12")
    run = deployer.run("d12", settings=settings)
    assert run.returncode != 0, run.explain()
    assert "Settings error, nothing was changed" in run.output
    for word in words:
        assert word in run.output, run.explain()
    assert "Connected" not in run.output and "Starting operation" not in run.output
    assert state_marks(sb, "d12") == before


def test_missing_revision_fails_and_keeps_the_site(sb, d12: Deployed, deployer, deployed_commit):
    """Acceptance 11: a revision that does not exist fails; `current` and the site stay."""
    before = state_marks(sb, "d12")
    run = deployer.run("d12", settings={"revision": "no-such-branch"})
    assert run.returncode != 0, run.explain()
    assert "revision: 'no-such-branch' does not exist" in run.output, run.explain()
    assert state_marks(sb, "d12") == before
    assert http_get(d12.server.http_port, "/").status == 200
    assert http_get(d12.server.http_port, "/version/").body.strip() == deployed_commit


# -- dry: --dry on a bare server --------------------------------------------------------------


def test_dry_run_on_a_bare_server_changes_nothing(sb, deployer):
    """Acceptance 4: `--dry` lists what would change and leaves the server as it was."""
    sb.add_server("dry", os="debian12")
    try:
        run = deployer.run("dry", "--dry", yes=False)
        assert run.returncode == 0, run.explain()
        assert "Detected changes" in run.output, run.explain()
        rows = {line.strip().split("  ")[0]: line for line in run.output.splitlines()
                if re.match(r"^\s{4}\S", line) and "(dry)" in line}
        for name in ("Debian packages", "pyenv", "CPython 3.11.2", "Poetry", f"System user {APP}",
                     "Release layout", "Environment", "Nginx site"):
            assert any(row.startswith(name) for row in rows), f"{name}: no change listed\n{run.output}"
        plan = deployer.run("dry", "--dry", "--json", yes=False)
        assert plan.returncode == 0, plan.explain()
        would = [op["name"] for op in plan.json()["plan"] if "dry" in op["hosts_with_change"]]
        assert any(n.startswith("Debian packages") for n in would), would
        assert any(n.startswith("CPython") for n in would), would
        assert any(n.startswith("Nginx site") for n in would), would
        assert sh(sb, "dry", "dpkg -s nginx", ok=False).returncode != 0
        assert sh(sb, "dry", f"id {APP}", ok=False).returncode != 0
        assert sh(sb, "dry", f"test -e /opt/pyenv || test -e {BASE} || test -e /etc/{APP}",
                  ok=False).returncode != 0
    finally:
        sb.remove_server("dry")


# -- s12: snapshot of d12, upload mode, PostgreSQL, TLS ---------------------------------------


@pytest.fixture(scope="module")
def s12(sb, d12_image, deployer, pytestconfig):
    server = sb.add_server("s12", os="debian12", image=d12_image)
    settings = {"source_mode": "upload", "repo_url": str(sb.source.repo_path("example_app")),
                "database": "postgresql", "tls": "self-signed",
                "secret_env": {"API_TOKEN": SECRET_TOKEN}}
    run = deployer.run("s12", "-v", "--diff", settings=settings)
    note(pytestconfig, f"deploy from snapshot (upload, postgresql, tls): {run.seconds:.1f}s")
    assert run.returncode == 0, run.explain()
    again = deployer.run("s12", "--json", settings=settings)
    assert again.returncode == 0, again.explain()
    note(pytestconfig, f"no-op re-run (s12): {again.seconds:.1f}s")
    return server, settings, again


def test_upload_mode_postgresql_and_tls(sb, s12, deployed_commit):
    """Acceptance 6 and 7: upload mode deploys; HTTPS serves, HTTP redirects, PostgreSQL on
    loopback only, Django's deploy checks clean with HTTPS on."""
    server, _, again = s12
    assert changed(again) == 0, [op["name"] for op in again.json()["results"]["operations"]
                                 if op["success"]]
    home = http_get(server.https_port, "/", https=True)
    assert home.status == 200 and 'id="customer-count"' in home.body
    assert "max-age" in home.headers.get("Strict-Transport-Security", "")
    assert http_get(server.https_port, "/version/", https=True).body.strip() == deployed_commit
    assert http_get(server.https_port, "/healthz/", https=True).status == 200
    assert http_get(server.https_port, "/admin/login/", https=True).status == 200
    css = http_get(server.https_port, static_url(home.body), https=True)
    assert css.status == 200 and "immutable" in css.headers.get("Cache-Control", "")
    redirect = http_get(server.http_port, "/admin/login/")
    assert redirect.status == 301
    assert redirect.headers["Location"].startswith("https://localhost") and \
        redirect.headers["Location"].endswith("/admin/login/")
    # upload mode: no mirror of the repository needed on the server for this release
    rev = sh(sb, "s12", f"cat {BASE}/current/REVISION").stdout.strip()
    assert rev == deployed_commit

    app_env = sh(sb, "s12", f"cat /etc/{APP}/app.env").stdout
    assert "sqlite" not in app_env and 'HTTPS="true"' in app_env
    db_env = sh(sb, "s12", f"cat /etc/{APP}/database.env").stdout
    assert re.search(r"^DATABASE_URL=postgres://bizsite:\S+@localhost:5432/bizsite$", db_env, re.M)
    pg = {a for a in listeners(sb, "s12") if a.endswith(":5432")}
    assert pg and all(a.startswith(("127.0.0.1:", "[::1]:")) for a in pg), pg
    assert public_ports(listeners(sb, "s12")) == {22, 80, 443}
    tables = sh(sb, "s12", "runuser -u postgres -- psql -tAc "
                           "\"select count(*) from pg_tables where tablename='sales_customer'\" bizsite")
    assert tables.stdout.strip() == "1"  # the schema lives in PostgreSQL

    check = sh(sb, "s12", f"{APP}-manage check --deploy", ok=False)
    text = check.stdout + check.stderr
    assert not [w for w in HTTPS_WARNINGS if w in text], text
    assert check.returncode == 0, text


def test_secrets_never_in_output_postgresql(sb, s12, deployer):
    """Acceptance 9 (s12): the PostgreSQL password and the secret_env value in no output."""
    server, settings, _ = s12
    for args in (("--dry",), ("-v",), ("--diff",)):
        run = deployer.run("s12", *args, settings=settings, yes=args != ("--dry",))
        assert run.returncode == 0, run.explain()
    db_env = sh(sb, "s12", f"cat /etc/{APP}/database.env").stdout
    password = re.search(r"postgres://bizsite:([^@]+)@", db_env).group(1)
    key = secret_key(sb, "s12")
    assert len(password) >= 20
    for what, output in OUTPUTS:
        assert password not in output, f"PostgreSQL password printed by {what}"
        assert key not in output, f"SECRET_KEY printed by {what}"
        assert SECRET_TOKEN not in output, f"secret_env value printed by {what}"


def test_update_over_tls(sb, s12, deployer, tmp_path):
    """Acceptance 6/7: a new commit, uploaded, goes live over HTTPS (the health gate through
    nginx speaks TLS) by switching Gunicorn slots."""
    server, settings, _ = s12
    work = tmp_path / "app"
    git = ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@localhost"]
    subprocess.run(git + ["clone", "-q", settings["repo_url"], str(work)], check=True)
    (work / "README.md").write_text((work / "README.md").read_text() + "\nUpdated.\n")
    subprocess.run(git + ["-C", str(work), "commit", "-qam", "update"], check=True)
    commit = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    before = live_slot(sb, "s12")
    run = deployer.run("s12", settings={**settings, "repo_url": str(work)})
    assert run.returncode == 0, run.explain()
    assert live_slot(sb, "s12") != before
    assert http_get(server.https_port, "/version/", https=True).body.strip() == commit
    assert http_get(server.https_port, "/", https=True).status == 200


# -- d13: a bare Debian 13 server -------------------------------------------------------------


def test_debian13(sb, d12, deployer, deployed_commit, pytestconfig):
    """Acceptance 8: the same deploy works on Debian 13. The artifact cache holds only d12's
    Debian 12 builds: they are not used, Debian 13 gets its own."""
    server = sb.add_server("d13", os="debian13")
    try:
        run = deployer.run("d13")
        note(pytestconfig, f"first deploy, bare debian13 server: {run.seconds:.1f}s")
        assert run.returncode == 0, run.explain()
        assert "[d13] CPython 3.11.2: compiled here (debian 13 (trixie) amd64" in run.output
        assert "from artifact" not in run.output
        cache = sb.state_dir / "artifacts"
        assert list(cache.glob("cpython-3.11.2-debian13-amd64-*.json")), sorted(cache.iterdir())
        assert http_get(server.http_port, "/healthz/").status == 200
        assert http_get(server.http_port, "/version/").body.strip() == deployed_commit
        assert http_get(server.http_port, "/").status == 200
        again = deployer.run("d13", "--json")
        assert again.returncode == 0 and changed(again) == 0, again.explain()
    finally:
        sb.remove_server("d13")
