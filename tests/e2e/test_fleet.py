"""A fleet end to end: a load balancer, a database server and two app servers, from bare servers
(CPython and Poetry come from the session's artifact cache), deployed with the real
`pyinfra inventory.py deploy.py` and checked through the load balancer's HTTPS port on
127.0.0.1, as a client would, and on the servers themselves.

The servers are `flb` (lb), `fdb` (db), `fapp1` and `fapp2` (app); runs limit themselves to them.
The tests run in file order and share the fleet: a first deploy, a second that changes nothing,
data and uploads shared, security, an app server lost under load, the db server rebooted, bad
layouts, then updates and rollbacks (under load, unhealthy, killed, two at once), the status
table, scale out and in, and restores (under load, and one that fails half way).
"""

from __future__ import annotations

import http.client
import os
import re
import shlex
import threading
import time

import pytest

from bench.load import Load
from bench.revisions import add_column, both, page_note, push_branches, unhealthy_where

from .conftest import OUTPUTS, Poller, Runner, http_get, note, race, sh, stall_limit

pytestmark = pytest.mark.e2e

APP = "bizsite"
LB, DB, APP1, APP2 = "flb", "fdb", "fapp1", "fapp2"
FLEET = [LB, DB, APP1, APP2]
SETTINGS = {"database": "postgresql", "tls": "self-signed"}


@pytest.fixture(scope="module")
def runner(sb, tmp_path_factory) -> Runner:
    return Runner(sb, tmp_path_factory.mktemp("fleet-settings"))


@pytest.fixture(scope="module")
def fleet(sb, d12, runner, pytestconfig):
    """The fleet, from bare Debian 12 servers, deployed once. (`d12`: the session's Debian 12
    compile has filled the artifact cache by then.)"""
    roles = {LB: ["lb"], DB: ["db"], APP1: ["app"], APP2: ["app"]}
    try:
        for name, role in roles.items():
            sb.add_server(name, os="debian12", roles=role)
        first = runner.run(FLEET, "deploy.py", settings=SETTINGS)
        note(pytestconfig, f"fleet first deploy, lb + db + 2 app from bare: {first.seconds:.1f}s")
        assert first.returncode == 0, first.explain()
        assert "compiled here" not in first.output, "an app server compiled CPython"
        yield {name: sb.server(name) for name in FLEET}
    finally:
        for name in FLEET:
            sb.remove_server(name)


def lb_get(fleet, path: str = "/", **kw):
    return http_get(fleet[LB].https_port, path, https=True, **kw)


def answers(fleet, path: str) -> bool:
    """Whether the site answers `path` with 200 through the load balancer right now."""
    try:
        return lb_get(fleet, path, timeout=5).status == 200
    except (OSError, http.client.HTTPException):
        return False


def served_by(fleet, tries: int = 12) -> set[str]:
    return {lb_get(fleet).headers.get("X-Served-By") for _ in range(tries)}


def manage(sb, server: str, code: str) -> str:
    out = sh(sb, server, f"{APP}-manage shell -c {shlex.quote(code)}").stdout.strip()
    return out.splitlines()[-1] if out else ""


def address(sb, name: str) -> str:
    return sb.server(name).address


# -- it serves ----------------------------------------------------------------------------------


def test_fleet_serves_through_the_load_balancer(sb, fleet, deployed_commit):
    home = lb_get(fleet)
    assert home.status == 200 and 'id="customer-count"' in home.body, home.body[:500]
    assert "max-age" in home.headers.get("Strict-Transport-Security", "")
    assert served_by(fleet) == {APP1, APP2}  # both app servers take traffic
    redirect = http_get(fleet[LB].http_port, "/admin/login/")
    assert redirect.status == 301 and redirect.headers["Location"].startswith("https://localhost")
    # The deploy's own answers are for the servers, not the public.
    assert lb_get(fleet, "/_djdeploy/health").status == 404
    version = sh(sb, APP2, "curl -s -H 'Host: localhost' http://127.0.0.1/_djdeploy/version").stdout
    assert deployed_commit in version and APP2 in version
    # The client's address reaches the app servers' logs (the lb's X-Forwarded-For, trusted
    # from it only): here the address this machine has on the container network.
    logs = sh(sb, APP1, "tail -n 20 /var/log/nginx/access.log").stdout.strip().splitlines()
    clients = {line.split()[0] for line in logs if '"GET / ' in line}
    assert clients == {sb.gateway()}, logs


def test_second_deploy_changes_nothing(fleet, runner, pytestconfig):
    run = runner.run(FLEET, "deploy.py", "--json", settings=SETTINGS)
    assert run.returncode == 0, run.explain()
    note(pytestconfig, f"fleet no-op re-run (4 servers): {run.seconds:.1f}s")
    results = run.json()["results"]
    busy = [op["name"] for op in results["operations"] if op["success"]]
    assert results["totals"]["success"] == 0, f"changed on a re-run: {busy}"


def test_rows_and_uploads_are_shared(sb, fleet):
    manage(sb, APP1, "from sales.models import Customer; Customer.objects.create(name='Written on app 1')")
    assert manage(sb, APP2, "from sales.models import Customer; "
                            "print(Customer.objects.filter(name='Written on app 1').count())") == "1"
    saved = manage(sb, APP1, "from django.core.files.base import ContentFile; "
                             "from django.core.files.storage import default_storage as d; "
                             "print(d.save('contracts/from-app1.txt', ContentFile(b'uploaded on app 1\\n')))")
    through_app2 = sh(sb, LB, f"curl -s -H 'Host: localhost' http://{address(sb, APP2)}/media/{saved}").stdout
    assert through_app2 == "uploaded on app 1\n"
    got = lb_get(fleet, f"/media/{saved}")
    assert (got.status, got.body) == (200, "uploaded on app 1\n")


# -- security -----------------------------------------------------------------------------------


def test_security(sb, fleet, runner):
    db = address(sb, DB)
    # PostgreSQL: not from the load balancer, never in plain text.
    refused = sh(sb, LB, f"curl -s -m 5 telnet://{db}:5432 </dev/null", ok=False)
    assert refused.returncode != 0, "the load balancer reached PostgreSQL"
    plain = sh(sb, APP1, f"cd /srv/{APP}/current && .venv/bin/python -c "
                         + shlex.quote("import psycopg\ntry:\n    psycopg.connect('host=" + db
                                       + " dbname=bizsite user=bizsite password=x sslmode=disable', "
                                       "connect_timeout=5)\nexcept Exception as e:\n    print(e)"),
               ok=False).stdout
    assert "no pg_hba.conf entry" in plain and "no encryption" in plain, plain
    # An app server's HTTP answers the load balancer only.
    assert sh(sb, DB, f"curl -s -m 5 -o /dev/null http://{address(sb, APP1)}/", ok=False).returncode != 0
    # (as the load balancer asks, and believed from it: the client used HTTPS)
    assert sh(sb, LB, f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' -H 'Host: localhost' "
                      f"-H 'X-Forwarded-Proto: https' http://{address(sb, APP1)}/").stdout == "200"
    # HAProxy's runtime socket is root's alone.
    assert sh(sb, LB, "stat -c '%U %a' /run/haproxy/admin.sock").stdout.split() == ["root", "600"]
    # The database password made on the db server is in no output, -v, --dry and --diff included.
    for args in (("-v",), ("--diff",), ("--dry",)):
        run = runner.run(FLEET, "deploy.py", *args, settings=SETTINGS, yes=args != ("--dry",))
        assert run.returncode == 0, run.explain()
    password = sh(sb, DB, f"sed -n 's/^PASSWORD=//p' /etc/djdeploy/{APP}-database.env").stdout.strip()
    assert len(password) >= 20
    assert password in sh(sb, APP2, f"cat /etc/{APP}/database.env").stdout
    for what, output in OUTPUTS:
        assert password not in output, f"the database password printed by {what}"


# -- failures -----------------------------------------------------------------------------------


def test_an_app_server_lost_under_load(sb, fleet, pytestconfig):
    """Its Gunicorn stopped, then the whole server: no request fails; back, it takes traffic
    again without a deploy."""
    paths = ["/", "/customers/"]
    load = Load(fleet[LB].https_port, paths, clients=20, seconds=300, pause=0.05, timeout=15,
                https=True)
    with load:
        time.sleep(3)
        live = sh(sb, APP1, f"systemctl list-units --state=active --no-legend '{APP}@*.service'").stdout
        sh(sb, APP1, f"systemctl stop '{APP}@*'")
        assert live.strip(), "no Gunicorn ran on app 1"
        time.sleep(8)
        sb.client.containers.get(sb.container_name(APP1)).stop(timeout=30)
        time.sleep(8)
        sb.client.containers.get(sb.container_name(APP1)).start()
        back = time.monotonic()
        wait_for_local_health(sb, APP1)
        healthy = time.monotonic()
        deadline = healthy + 60
        while APP1 not in served_by(fleet, tries=6):
            assert time.monotonic() < deadline, "app 1 did not take traffic again"
            time.sleep(0.5)
        serving = time.monotonic()
        time.sleep(2)
    result = load.result
    note(pytestconfig, f"app server lost under load: {result.summary()}; back up {healthy - back:.1f}s "
                       f"after its start, in the load balancer {serving - healthy:.1f}s after that")
    assert result.served > 100, result.summary()
    assert result.failed == 0, f"{result.summary()}; {result.errors}"


def wait_for_local_health(sb, name: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got = sb.exec(name, "curl -s -m 3 -H 'Host: localhost' http://127.0.0.1/_djdeploy/health")
            if got.stdout.strip() == "ok":
                return
        except Exception:  # noqa: BLE001 - the server is still booting
            pass
        time.sleep(0.5)
    raise AssertionError(f"{name} did not become healthy within {seconds:.0f}s")


def test_db_server_reboot_under_load(sb, fleet, pytestconfig):
    """The site fails while its database is down (told, not hidden) and recovers by itself."""
    pids = {n: sh(sb, n, f"systemctl show -P MainPID {APP}@a.service {APP}@b.service").stdout.split()
            for n in (APP1, APP2)}
    load = Load(fleet[LB].https_port, ["/customers/"], clients=20, seconds=300, pause=0.05,
                timeout=15, https=True, record=True)
    with load:
        time.sleep(3)
        started = time.monotonic()
        sb.restart(DB)
        rebooted = time.monotonic()
        deadline = rebooted + 120
        while not answers(fleet, "/customers/"):
            assert time.monotonic() < deadline, "the site did not recover after the db server's reboot"
            time.sleep(0.5)
        time.sleep(3)
    failing = load.failing_window()
    note(pytestconfig, f"db server reboot under load ({rebooted - started:.1f}s): "
                       f"{load.result.summary()}; requests failed for {failing:.1f}s")
    assert load.result.statuses.get(200, 0) > 100
    # Recovered by themselves: the same Gunicorn processes serve.
    for n, before in pids.items():
        assert sh(sb, n, f"systemctl show -P MainPID {APP}@a.service {APP}@b.service").stdout.split() == before
    assert lb_get(fleet, "/customers/").status == 200


# -- bad layouts --------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, limit, settings, words", [
    ({}, [LB, DB, APP1, APP2], {"database": "sqlite"}, ["database: 'sqlite' with a db server"]),
    ({}, [LB, APP1, APP2], {"database": "sqlite"}, ["'sqlite' with 2 app servers"]),
    ({}, [LB, APP1, APP2], {"database": "postgresql"}, ["no db server would give each its own database"]),
    ({}, [DB, APP1, APP2], SETTINGS, ["no load balancer"]),
    ({}, [LB, DB], SETTINGS, ["no app server"]),
    ({"fdb2": ["db"]}, [LB, DB, "fdb2", APP1, APP2], SETTINGS, ["2 db servers"]),
    ({"fboth": ["lb", "app"]}, [DB, "fboth", APP1], SETTINGS, ["'lb' and 'app' cannot share a server"]),
], ids=["sqlite_with_db_server", "sqlite_on_two_apps", "local_postgresql_on_two_apps", "no_lb",
        "lb_without_apps", "two_db_servers", "lb_and_app_together"])
def test_bad_layouts_change_nothing(sb, fleet, runner, extra, limit, settings, words):
    for name, roles in extra.items():
        sb.add_server(name, os="debian12", roles=roles)
    try:
        before = sh(sb, APP1, f"md5sum /etc/{APP}/app.env /etc/nginx/sites-available/{APP}.conf").stdout
        run = runner.run(limit, "deploy.py", settings=settings)
        assert run.returncode != 0, run.explain()
        assert "Layout error, nothing was changed" in run.output, run.explain()
        for word in words:
            assert word in run.output, run.explain()
        assert len(re.findall("Layout error", run.output)) == 1, run.explain()  # one message
        assert "Starting operation" not in run.output
        assert sh(sb, APP1, f"md5sum /etc/{APP}/app.env /etc/nginx/sites-available/{APP}.conf").stdout == before
    finally:
        for name in extra:
            sb.remove_server(name)


# -- updates and rollbacks (last: the fleet moves to other revisions) -------------------------

FLAG = "/var/lib/djdeploy-test-unhealthy"  # on a server: release C's /healthz/ answers 503 there
FAST = {"health_timeout": 8}  # a release that is unhealthy on purpose fails in seconds


@pytest.fixture(scope="module")
def revisions(sb, fleet) -> dict[str, str]:
    """B: a page change and a column; C: a page change, and /healthz/ fails where FLAG is;
    D: a page change. Branch -> commit."""
    bare = sb.source.repo_path("example_app")
    return push_branches(bare, {
        "fleet-b": ("main", both(page_note("Fleet release B"), add_column("fleet_tier")),
                    "Fleet release B: a page change and a column"),
        "fleet-c": ("fleet-b", both(page_note("Fleet release C"), unhealthy_where(FLAG)),
                    "Fleet release C"),
        "fleet-d": ("fleet-c", page_note("Fleet release D"), "Fleet release D"),
    }, author="Fleet Tests")


def revision_on(sb, name: str) -> str:
    """The commit the server's live release names (asked on the server, through its nginx)."""
    out = sh(sb, name, "curl -s -H 'Host: localhost' http://127.0.0.1/_djdeploy/version").stdout
    match = re.search(r'"revision":\s*"([0-9a-f]+)"', out)
    return match.group(1) if match else out


def running_slots(sb, name: str) -> list[str]:
    out = sh(sb, name, f"systemctl list-units --state=active --no-legend '{APP}@*.service'").stdout
    return re.findall(rf"{APP}@([ab])\.service", out)


def operation_hosts(output: str, title: str) -> set[str]:
    """The servers pyinfra ran the operation called `title` on, as its output lists them."""
    hosts: set[str] = set()
    for block in output.split("--> Starting operation: ")[1:]:
        if block.startswith(title):
            hosts |= set(re.findall(r"\[(\w+)\] (?:Success|No changes|Error)", block))
    return hosts


MEASURED: dict[str, float] = {}


class SlotsWatch:
    """Notes when the first app server starts its second Gunicorn slot: the update's switch
    phases begin (start, switch, stop the old slot). Before that the servers build the release
    beside the running one, which on this machine (every server shares its two cores) slows
    every request; the stall the test looks for is in the switch."""

    def __init__(self, sb, name: str):
        self.sb, self.name, self.moment = sb, name, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set() and self.moment is None:
            asked = time.monotonic()
            out = self.sb.exec(self.name, f"systemctl is-active {APP}@a.service {APP}@b.service").stdout
            if out.split() == ["active", "active"]:
                self.moment = asked
            self._stop.wait(0.3)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def test_fleet_update_under_load_switches_every_server_and_migrates_once(sb, fleet, runner,
                                                                          revisions, pytestconfig):
    paths = ["/", "/customers/"]

    def load() -> Load:
        return Load(fleet[LB].https_port, paths, clients=20, seconds=300, pause=0.05,
                    timeout=15, https=True, record=True)

    with load() as before:
        time.sleep(10)
    baseline = before.result
    with load() as during, SlotsWatch(sb, APP1) as watch:
        time.sleep(1)
        run = runner.run(FLEET, "update.py", settings={**SETTINGS, "revision": "fleet-b"})
        time.sleep(1)
    result = during.result
    limit = stall_limit(baseline.worst)
    assert watch.moment is not None, "the first app server never ran two slots at once"
    switching = during.worst_starting_after(watch.moment)
    MEASURED["update"] = run.seconds
    note(pytestconfig, f"fleet: load through the load balancer before the update: {baseline.summary()}")
    note(pytestconfig, f"fleet update A -> B under load ({run.seconds:.1f}s): {result.summary()}; "
                       f"worst {switching * 1000:.0f} ms of the requests sent from the start of the new slots on, "
                       f"against {limit * 1000:.0f} ms allowed (while building: "
                       f"{result.worst * 1000:.0f} ms; load average {os.getloadavg()[0]:.1f})")
    assert run.returncode == 0, run.explain()
    commit = revisions["fleet-b"]
    assert {revision_on(sb, n) for n in (APP1, APP2)} == {commit}
    assert "Fleet release B" in lb_get(fleet).body
    assert baseline.failed == 0, baseline.summary()
    assert result.served > 100, result.summary()
    assert result.failed == 0, f"{result.summary()}; {result.errors}"
    assert switching < limit, \
        f"a request waited {switching:.2f}s during the switch, {baseline.worst:.2f}s before it"
    # Migrated once, by the first app server, after it backed up the database server's data
    # (dumped over TLS).
    assert operation_hosts(run.output, "Migrate the fleet's database") == {APP1}, run.output
    assert operation_hosts(run.output, "Start ") == {APP1, APP2}, run.output
    sh(sb, APP1, f"pg_restore -l /srv/{APP}/shared/backups/before-{commit[:12]}.dump | grep -q customer")
    columns = manage(sb, APP2, "from django.db import connection as c; from sales.models import Customer; "
                               "print([d.name for d in c.introspection.get_table_description("
                               "c.cursor(), Customer._meta.db_table)])")
    assert "'fleet_tier'" in columns, columns
    assert manage(sb, APP2, "from sales.models import Customer; "
                            "print(Customer.objects.filter(name='Written on app 1').count())") == "1"
    for name in (APP1, APP2):  # the old slot stopped once both servers had switched
        assert len(running_slots(sb, name)) == 1, name
    # The nightly backup: taken by the first app server, database and shared uploads.
    run = runner.run(FLEET, "backup.py", settings={**SETTINGS, "revision": "fleet-b"})
    assert run.returncode == 0, run.explain()
    assert re.search(rf"backup {APP1}-\d", run.output), run.explain()
    assert not re.search(rf"backup {APP2}-\d", run.output), run.explain()


def test_fleet_update_no_op_changes_nothing(fleet, runner, pytestconfig):
    run = runner.run(FLEET, "update.py", settings={**SETTINGS, "revision": "fleet-b"})
    note(pytestconfig, f"fleet no-op update: {run.seconds:.1f}s "
                       f"(the update before: {MEASURED['update']:.1f}s)")
    assert run.returncode == 0, run.explain()
    assert "already serves it: nothing to do" in run.output, run.explain()
    assert run.seconds < 0.5 * MEASURED["update"], run.explain()


def test_a_release_unhealthy_on_one_server_switches_none(sb, fleet, runner, revisions,
                                                          pytestconfig):
    sh(sb, APP2, f"touch {FLAG}")
    try:
        with Load(fleet[LB].https_port, ["/"], clients=20, seconds=300, pause=0.05,
                  timeout=15, https=True) as load:
            run = runner.run(FLEET, "update.py", settings={
                **SETTINGS, **FAST, "revision": "fleet-c", "health_check_path": "/healthz/"})
            time.sleep(1)
    finally:
        sh(sb, APP2, f"rm -f {FLAG}")
    result = load.result
    note(pytestconfig, f"fleet update unhealthy on {APP2}: exit {run.returncode} after "
                       f"{run.seconds:.1f}s; clients: {result.summary()}")
    assert run.returncode != 0, run.explain()
    assert APP2 in run.output and "failed on" in run.output, run.explain()
    b = revisions["fleet-b"]
    assert {revision_on(sb, n) for n in (APP1, APP2)} == {b}, run.explain()
    assert "Fleet release B" in lb_get(fleet).body
    for name in (APP1, APP2):  # release C stopped wherever it started
        assert len(running_slots(sb, name)) == 1, (name, run.explain())
    assert result.failed == 0, f"{result.summary()}; {result.errors}"
    # The lock was released: the next update goes on (below).
    assert not sh(sb, APP1, f"cat /srv/{APP}/deploy.lock", ok=False).stdout.strip()


def haproxy_state(sb, server: str, state: str) -> None:
    sh(sb, LB, f"echo 'set server {APP}_app/{server} state {state}' | socat stdio /run/haproxy/admin.sock")


def test_fleet_update_killed_during_the_switch_converges(sb, fleet, runner, revisions,
                                                          pytestconfig):
    """Killed after the canary switched, while the load balancer is checked (held up by
    setting the canary to maintenance in HAProxy, so that the moment is not missed): the next
    run finishes the job."""
    c = revisions["fleet-c"]
    settings = {**SETTINGS, "revision": "fleet-c", "health_check_path": "/healthz/"}
    haproxy_state(sb, APP1, "maint")
    try:
        started = runner.start(FLEET, "update.py", settings=settings)
        deadline = time.monotonic() + 300
        try:
            while revision_on(sb, APP1) != c:  # the canary has switched: kill the run
                assert started.proc.poll() is None, started.wait(5).explain()
                assert time.monotonic() < deadline, "the canary never switched"
                time.sleep(0.2)
        finally:
            started.proc.kill()
        killed = started.wait(60)
    finally:
        haproxy_state(sb, APP1, "ready")
    states = {n: revision_on(sb, n)[:12] for n in (APP1, APP2)}
    note(pytestconfig, f"fleet update killed after the canary switched: {states}")
    assert states[APP2] == revisions["fleet-b"][:12], killed.explain()
    again = runner.run(FLEET, "update.py", settings=settings)
    note(pytestconfig, f"fleet update after the kill: {again.seconds:.1f}s")
    assert again.returncode == 0, killed.explain() + "\n\n" + again.explain()
    assert {revision_on(sb, n) for n in (APP1, APP2)} == {c}
    for name in (APP1, APP2):
        assert len(running_slots(sb, name)) == 1, (name, again.explain())


def test_two_fleet_updates_at_once(sb, fleet, runner, revisions, pytestconfig):
    winner, loser = race(runner, FLEET, "update.py", {**SETTINGS, "revision": "fleet-d"})
    note(pytestconfig, f"two fleet updates at once: winner {winner.seconds:.1f}s, "
                       f"refused after {loser.seconds:.1f}s")
    assert "locked by" in loser.output and APP1 in loser.output, loser.explain()
    assert loser.seconds < winner.seconds
    assert {revision_on(sb, n) for n in (APP1, APP2)} == {revisions["fleet-d"]}


def test_fleet_rollback_is_all_or_nothing_and_quick(sb, fleet, runner, revisions, pytestconfig):
    run = runner.run(FLEET, "rollback.py", settings={**SETTINGS, "revision": "fleet-d"})
    note(pytestconfig, f"fleet rollback D -> C: {run.seconds:.1f}s "
                       f"({run.seconds / MEASURED['update']:.2f}x the fleet update)")
    assert run.returncode == 0, run.explain()
    assert {revision_on(sb, n) for n in (APP1, APP2)} == {revisions["fleet-c"]}
    assert "Fleet release C" in lb_get(fleet).body
    assert run.seconds < 0.75 * MEASURED["update"], run.explain()
    for name in (APP1, APP2):
        assert len(running_slots(sb, name)) == 1, name


def status_row(output: str, name: str) -> list[str]:
    """The fleet table's columns for one server (server, role, release, live, health, from lb,
    in haproxy, database, pending)."""
    line = next((l for l in output.splitlines() if l.startswith(f"{name} ")), "")
    words = line.split()
    if len(words) == 10:  # "UP L7OK": HAProxy's state and its last check
        words[6:8] = [" ".join(words[6:8])]
    return words


def test_fleet_status_table_and_its_exit(sb, fleet, runner, revisions):
    settings = {**SETTINGS, "revision": "fleet-d"}
    run = runner.run(FLEET, "status.py", settings=settings)
    assert run.returncode == 0, run.explain()
    c = revisions["fleet-c"][:12]
    for name in (APP1, APP2):
        assert status_row(run.output, name) == [name, "app", c, status_row(run.output, name)[3],
                                                "ok", "200", "UP L7OK", "ok", "0"], run.output
    assert status_row(run.output, LB)[:2] == [LB, "lb"] and status_row(run.output, DB)[:2] == [DB, "db"]
    live = running_slots(sb, APP2)[0]
    sh(sb, APP2, f"systemctl stop {APP}@{live}.service {APP}@{live}.socket")
    try:
        run = runner.run(FLEET, "status.py", settings=settings)
        assert run.returncode != 0, run.explain()
        assert f"{APP2} is not healthy" in run.output, run.explain()
    finally:
        sh(sb, APP2, f"systemctl start {APP}@{live}.socket {APP}@{live}.service")


def test_scale_out_and_in(sb, fleet, runner, revisions, pytestconfig):
    app3 = "fapp3"
    sb.add_server(app3, os="debian12", roles=["app"])
    try:
        # The branch's head is D; the fleet serves C (rolled back): app 3 gets C.
        run = runner.run([*FLEET, app3], "deploy.py", settings={**SETTINGS, "revision": "fleet-d"})
        note(pytestconfig, f"fleet scale-out, a bare app server added: {run.seconds:.1f}s")
        assert run.returncode == 0, run.explain()
        assert revision_on(sb, app3) == revisions["fleet-c"], run.explain()
        deadline = time.monotonic() + 60
        while app3 not in served_by(fleet, tries=9):
            assert time.monotonic() < deadline, "app 3 never took traffic"
            time.sleep(1)
        assert {revision_on(sb, n) for n in (APP1, APP2)} == {revisions["fleet-c"]}
        # Out again: the next deploy takes it out of the load balancer.
        run = runner.run(FLEET, "deploy.py", settings={**SETTINGS, "revision": "fleet-d"})
        assert run.returncode == 0, run.explain()
        assert served_by(fleet, tries=12) == {APP1, APP2}
        assert {revision_on(sb, n) for n in (APP1, APP2)} == {revisions["fleet-c"]}
    finally:
        sb.remove_server(app3)


def customer_columns(sb, name: str) -> str:
    return manage(sb, name, "from django.db import connection as c; from sales.models import Customer; "
                            "print(sorted(d.name for d in c.introspection.get_table_description("
                            "c.cursor(), Customer._meta.db_table)))")


def test_fleet_rollback_restores_the_database_once(sb, fleet, runner, revisions, pytestconfig):
    """An update with a migration, then a rollback with `restore_backup`: the backup the first
    app server took before the update goes back into the db server's database, once."""
    bare = sb.source.repo_path("example_app")
    e = push_branches(bare, {"fleet-e": ("fleet-c", both(page_note("Fleet release E"),
                                                         add_column("fleet_extra", "0004",
                                                                    "0003_customer_fleet_tier")),
                                         "Fleet release E: a column")},
                      author="Fleet Tests")["fleet-e"]
    served, columns = revision_on(sb, APP1), customer_columns(sb, APP2)
    run = runner.run(FLEET, "update.py", settings={**SETTINGS, "revision": "fleet-e"})
    assert run.returncode == 0, run.explain()
    assert "'fleet_extra'" in customer_columns(sb, APP2)
    manage(sb, APP1, "from sales.models import Customer; Customer.objects.create(name='Written on E')")
    run = runner.run(FLEET, "rollback.py", settings={**SETTINGS, "revision": "fleet-e",
                                                    "restore_backup": True})
    note(pytestconfig, f"fleet rollback E -> {served[:12]} with the database restored: {run.seconds:.1f}s")
    assert run.returncode == 0, run.explain()
    assert operation_hosts(run.output, "Restore the database backup") == {APP1}, run.output
    assert {revision_on(sb, n) for n in (APP1, APP2)} == {served} != {e}
    assert customer_columns(sb, APP2) == columns
    assert manage(sb, APP2, "from sales.models import Customer; "
                            "print(Customer.objects.filter(name='Written on E').count())") == "0"


def table_names(sb, name: str) -> list[str]:
    return manage(sb, name, "from django.db import connection as c; "
                            "print(sorted(c.introspection.table_names()))")


def test_fleet_restore_under_load(sb, fleet, runner, revisions, pytestconfig):
    """backup.py, then a row, a table and an upload written after it; restore.py under 20
    clients through the load balancer: only 200 or the maintenance page (503, Retry-After),
    the data as the backup had it on every app server, the once-only steps on the first."""
    settings = {**SETTINGS, "revision": "fleet-e"}
    run = runner.run(FLEET, "backup.py", settings=settings)
    assert run.returncode == 0, run.explain()
    # The newest name backup.py prints (it names older backups too, e.g. the retention's).
    point = max(re.findall(rf"backup ({APP1}-\d{{8}}T\d{{6}}Z)", run.output))
    tables = table_names(sb, APP2)
    count = "from sales.models import Customer; print(Customer.objects.count())"
    rows = manage(sb, APP2, count)
    manage(sb, APP1, "from sales.models import Customer; Customer.objects.create(name='After the backup')")
    manage(sb, APP1, "from django.db import connection as c; "
                     "c.cursor().execute('CREATE TABLE made_after_the_backup (id integer)')")
    late = manage(sb, APP1, "from django.core.files.base import ContentFile; "
                            "from django.core.files.storage import default_storage as d; "
                            "print(d.save('contracts/after-backup.txt', ContentFile(b'late\\n')))")
    assert lb_get(fleet, f"/media/{late}").status == 200

    dry = runner.run(FLEET, "restore.py", "--dry", settings=settings)
    assert dry.returncode == 0, dry.explain()
    assert f"fleet restore of {point} (the server's copy)" in dry.output, dry.output
    assert f"maintenance page on, the app stopped: {APP1}, {APP2}" in dry.output, dry.output
    assert manage(sb, APP2, count) != rows  # --dry changed nothing

    with Load(fleet[LB].https_port, ["/", "/customers/"], clients=20, seconds=300, pause=0.05,
              timeout=15, https=True) as load, Poller(lambda: lb_get(fleet, timeout=5)) as poller:
        time.sleep(1)
        run = runner.run(FLEET, "restore.py", settings=settings)
        time.sleep(1)
    result = load.result
    statuses = dict(result.statuses)
    note(pytestconfig, f"fleet restore.py under 20 clients ({run.seconds:.1f}s): {result.summary()}; "
                       f"the maintenance page for {poller.unavailable:.1f}s")
    assert run.returncode == 0, run.explain()
    assert set(statuses) <= {200, 503}, f"{result.summary()}; {result.errors}"
    assert statuses.get(503, 0) > 0 and statuses.get(200, 0) > 0, result.summary()
    down = [s for s in poller.seen if s[0] != 200]
    assert down and all(s == (503, "30", True) for s in down), down[:5]
    assert poller.seen[-1][0] == 200, poller.seen[-5:]
    # The data as the backup had it, on both servers; the replaced database kept as a dump.
    assert manage(sb, APP2, count) == rows
    assert table_names(sb, APP1) == tables
    assert lb_get(fleet, f"/media/{late}").status == 404
    sh(sb, APP1, f"pg_restore -l /srv/{APP}/shared/backups/db-before-restore.dump | grep -q made_after_the_backup")
    assert operation_hosts(run.output, "The fleet's database replaced") == {APP1}, run.output
    assert operation_hosts(run.output, "The app started") == {APP1, APP2}, run.output
    assert served_by(fleet) == {APP1, APP2}
    audit = sh(sb, APP1, f"tail -n 1 /srv/{APP}/shared/audit.log").stdout
    assert f"restore {point} from server onto" in audit and audit.rstrip().endswith(" ok"), audit
    sh(sb, APP1, f"test ! -e /srv/{APP}/deploy.lock")


FAIL_ONCE = "/run/djdeploy-test-fail-once"
DROP_IN = f"/run/systemd/system/{APP}@.service.d/zz-test-fail-once.conf"


def test_a_failed_fleet_restore_puts_the_data_back(sb, fleet, runner, pytestconfig):
    """Gunicorn fails to start once on fapp2 after the database was replaced: the run stops,
    the database written before it goes back, every app server serves again, unlocked."""
    settings = {**SETTINGS, "revision": "fleet-e"}
    count = "from sales.models import Customer; print(Customer.objects.filter(name='Before the failed restore').count())"
    manage(sb, APP1, "from sales.models import Customer; Customer.objects.create(name='Before the failed restore')")
    sh(sb, APP2, f"mkdir -p {os.path.dirname(DROP_IN)} && printf '%s\\n' '[Service]' "
                 f"\"ExecStartPre=+/bin/sh -c 'if [ -f {FAIL_ONCE} ]; then rm -f {FAIL_ONCE}; exit 1; fi'\" "
                 f"> {DROP_IN} && touch {FAIL_ONCE} && systemctl daemon-reload")
    try:
        run = runner.run(FLEET, "restore.py", settings=settings)
    finally:
        sh(sb, APP2, f"rm -f {DROP_IN} {FAIL_ONCE} && systemctl daemon-reload")
    note(pytestconfig, f"fleet restore failing on {APP2} after the database was replaced: "
                       f"exit {run.returncode} after {run.seconds:.1f}s")
    assert run.returncode != 0, run.explain()
    assert re.search(rf"fleet restore of {APP1}-\S+ failed on {APP2}", run.output), run.output
    assert "database: put back" in run.output and f"{APP2}: serving" in run.output, run.output
    assert manage(sb, APP2, count) == "1"  # the data written before the restore, back
    assert served_by(fleet) == {APP1, APP2}
    for name in (APP1, APP2):
        sh(sb, name, f"test ! -e /srv/{APP}/maintenance")
    sh(sb, APP1, f"test ! -e /srv/{APP}/deploy.lock")
    audit = sh(sb, APP1, f"tail -n 1 /srv/{APP}/shared/audit.log").stdout
    assert audit.rstrip().endswith(" failed"), audit
