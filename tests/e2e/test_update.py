"""Update, rollback and status end to end: the real `pyinfra inventory.py update.py` (and
rollback.py, status.py) against one sandbox server started from the snapshot of the deployed
Debian 12 server (`d12_image`: revision A, the source repository's `main`, already serves).

The revisions deployed here live on their own branches of the source server's example_app
repository (never `main`, which the deploy tests read):

    b          A + a visible page change + migration 0003 (a nullable column)
    c, d, e    b + one more page change each (no migration)
    badmig     A + a migration 0003 whose RunPython raises
    badurls    A + a syntax error in urls.py (the app does not import)
    badsettings A + settings that raise on import
    badhealth  A + /healthz/ answering 500

The tests run in file order, each leaving the server where the next one starts: the failing
updates while A serves, then A -> b, rollback to A and back, the no-op update, b -> c under
load, two updates at once (c -> d), a killed update (d -> e), and status last.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import signal
import threading
import time
from pathlib import Path

import pytest

from bench.load import Load
from bench.revisions import add_column, both, git, page_note, push_branches

from .conftest import Run, Runner, http_get, note, race, sh, stall_limit, wait_for

pytestmark = pytest.mark.e2e

APP = "bizsite"
BASE = f"/srv/{APP}"
DB = f"{BASE}/shared/data/db.sqlite3"
SERVER = "upd"

# Figures measured earlier in this module's run, for tests that compare with them (never with a
# fixed number of seconds: a slow or busy machine makes every step slower alike).
MEASURED: dict[str, float] = {}


# -- the revisions --------------------------------------------------------------------------


MIGRATION_BAD = '''from django.db import migrations


def explode(apps, schema_editor):
    raise RuntimeError("0003_explodes: this migration fails on purpose")


class Migration(migrations.Migration):

    dependencies = [("sales", "0002_customer_vat_number_order_status_index")]

    operations = [migrations.RunPython(explode, migrations.RunPython.noop)]
'''


def _bad_migration(root: Path) -> None:
    (root / "sales/migrations/0003_explodes.py").write_text(MIGRATION_BAD)


def _bad_urls(root: Path) -> None:
    urls = root / "bizsite/urls.py"
    urls.write_text(urls.read_text() + "\nurlpatterns += [  # a syntax error on purpose\n")


def _bad_settings(root: Path) -> None:
    settings = root / "bizsite/settings.py"
    settings.write_text(settings.read_text()
                        + '\nraise RuntimeError("settings broken on purpose")\n')


def _bad_health(root: Path) -> None:
    views = root / "bizsite/views.py"
    body = views.read_text()
    anchor = '    """200 "ok" when the database answers a trivial query, 503 otherwise."""\n'
    assert anchor in body
    views.write_text(body.replace(anchor, anchor + '    return _plain("broken on purpose", status=500)\n', 1))


# branch: (parent, edit, subject)
BRANCHES = {
    "b": ("main", both(page_note("Release B"), add_column("loyalty_tier")),
          "Release B: release note on the home page, loyalty tier column"),
    "c": ("b", page_note("Release C"), "Release C"),
    "d": ("c", page_note("Release D"), "Release D"),
    "e": ("d", page_note("Release E"), "Release E"),
    "badmig": ("main", _bad_migration, "A migration that fails"),
    "badurls": ("main", _bad_urls, "urls.py with a syntax error"),
    "badsettings": ("main", _bad_settings, "Settings that raise on import"),
    "badhealth": ("main", _bad_health, "Health check answers 500"),
}


@pytest.fixture(scope="module")
def commits(sb, d12) -> dict[str, str]:
    """The test branches pushed to the source repository; branch -> commit (main included)."""
    bare = sb.source.repo_path("example_app")
    result = push_branches(bare, BRANCHES, author="Update Tests")
    assert git(bare, "rev-parse", "refs/heads/main") == result["main"]
    return result


# -- the server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runner(sb, tmp_path_factory) -> Runner:
    return Runner(sb, tmp_path_factory.mktemp("update-settings"))


@pytest.fixture(scope="module")
def upd(sb, d12_image, commits):
    """A server from the snapshot of the deployed d12: revision A serves."""
    server = sb.add_server(SERVER, os="debian12", image=d12_image)
    try:
        wait_for(server.http_port, "/healthz/", seconds=60)
        yield server
    finally:
        sb.remove_server(SERVER)


def version(server) -> str:
    return http_get(server.http_port, "/version/").body.strip()


def current(sb) -> str:
    return sh(sb, SERVER, f"readlink {BASE}/current").stdout.strip()


def lock_exists(sb) -> bool:
    return sh(sb, SERVER, f"test -e {BASE}/deploy.lock", ok=False).returncode == 0


def live_slot(sb) -> str:
    upstream = sh(sb, SERVER, f"cat /etc/nginx/{APP}-upstream.conf").stdout
    match = re.search(rf"/run/{APP}/([ab])\.sock", upstream)
    assert match, upstream
    return match.group(1)


def manage(sb, code: str) -> str:
    return sh(sb, SERVER, f"{APP}-manage shell -c {shlex.quote(code)}").stdout.strip()


def sql(sb, query: str) -> str:
    return sh(sb, SERVER, f"sqlite3 {DB} {shlex.quote(query)}").stdout.strip()


def customer_columns(sb) -> set[str]:
    return set(sql(sb, "select name from pragma_table_info('sales_customer')").split())


def static_css(server) -> str:
    home = http_get(server.http_port, "/")
    match = re.search(r'href="(/static/sales/site\.[0-9a-f]{12}\.css)"', home.body)
    assert match, "no hashed site.css in the page"
    return match.group(1)


def grand_total(run: Run) -> list[str]:
    """The Grand total row of pyinfra's results: hosts, success, error, no change."""
    rows = [line for line in run.output.splitlines() if "Grand total" in line]
    assert rows, run.explain()
    return rows[-1].split("Grand total", 1)[1].split()


def update(runner, branch: str, *args: str, **settings) -> Run:
    return runner.run(SERVER, "update.py", *args, settings={"revision": branch, **settings})


def assert_a_serves(sb, upd, commits, before: str) -> None:
    assert version(upd) == commits["main"]
    assert http_get(upd.http_port, "/").status == 200
    assert current(sb) == before
    assert not lock_exists(sb), sh(sb, SERVER, f"cat {BASE}/deploy.lock", ok=False).stdout


# -- failed updates: A keeps serving ----------------------------------------------------------


def test_failing_migration_keeps_the_old_release(sb, upd, runner, commits):
    before = current(sb)
    assert before.endswith(commits["main"][:12])
    run = update(runner, "badmig")
    assert run.returncode != 0, run.explain()
    assert "0003_explodes" in run.output, run.explain()
    assert_a_serves(sb, upd, commits, before)
    backup = f"{BASE}/shared/backups/before-{commits['badmig'][:12]}.sqlite3"
    sh(sb, SERVER, f"test -s {backup}")
    assert "0003_explodes" not in sql(sb, "select name from django_migrations where app='sales'")
    assert "update" in sh(sb, SERVER, f"tail -n 1 {BASE}/shared/audit.log").stdout
    assert "failed" in sh(sb, SERVER, f"tail -n 1 {BASE}/shared/audit.log").stdout


@pytest.mark.parametrize("branch, reason", [
    ("badurls", "SyntaxError"),
    ("badsettings", "settings broken on purpose"),
], ids=["urls_syntax_error", "settings_raise"])
def test_app_that_does_not_import_keeps_the_old_release(sb, upd, runner, commits, branch, reason):
    before = current(sb)
    run = update(runner, branch)
    assert run.returncode != 0, run.explain()
    assert reason in run.output, run.explain()
    assert_a_serves(sb, upd, commits, before)


def test_unhealthy_release_keeps_the_old_release(sb, upd, runner, commits):
    before = current(sb)
    slot = live_slot(sb)
    # The project's own health URL gates the switch when health_check_path names it (the
    # deploy's own check answers before the project's views).
    run = update(runner, "badhealth", health_timeout=15, health_check_path="/healthz/")
    assert run.returncode != 0, run.explain()
    assert "health check failed" in run.output and "500" in run.output, run.explain()
    assert_a_serves(sb, upd, commits, before)
    assert live_slot(sb) == slot


# -- A -> B, rollback, the no-op update -----------------------------------------------------


def test_update_to_b_keeps_data_and_media(sb, upd, runner, commits, pytestconfig):
    manage(sb, "from sales.models import Customer; Customer.objects.create(name='Row from A')")
    media = f"{BASE}/shared/media/contracts/contract-a.txt"
    sh(sb, SERVER, f"mkdir -p {BASE}/shared/media/contracts && printf 'signed under A\\n' > {media} "
                   f"&& chown -R {APP}:{APP} {BASE}/shared/media/contracts")
    assert http_get(upd.http_port, "/media/contracts/contract-a.txt").status == 200
    release_a = current(sb)

    run = update(runner, "b")
    note(pytestconfig, f"update A -> B (code and migration): {run.seconds:.1f}s")
    assert run.returncode == 0, run.explain()
    MEASURED["update"] = run.seconds
    assert "new migrations: 0003_customer_loyalty_tier.py" in run.output, run.explain()

    assert version(upd) == commits["b"]
    assert 'id="release-note">Release B<' in http_get(upd.http_port, "/").body
    assert current(sb).endswith(commits["b"][:12])
    assert sh(sb, SERVER, f"readlink {BASE}/previous").stdout.strip() == release_a
    sh(sb, SERVER, f"test -f {release_a}/.djdeploy-complete")  # A's release is kept
    shown = sh(sb, SERVER, f"{APP}-manage showmigrations sales").stdout
    assert "[X] 0003_customer_loyalty_tier" in shown, shown
    assert "loyalty_tier" in customer_columns(sb)
    assert sql(sb, "select count(*) from sales_customer where name='Row from A'") == "1"
    media_get = http_get(upd.http_port, "/media/contracts/contract-a.txt")
    assert (media_get.status, media_get.body) == (200, "signed under A\n")
    assert http_get(upd.http_port, "/customers/").status == 200
    assert not lock_exists(sb)
    assert sh(sb, SERVER, f"tail -n 1 {BASE}/shared/audit.log").stdout.rstrip().endswith(
        f"update {commits['main'][:12]} -> {commits['b'][:12]} ok")


def test_rollback_returns_to_a_quickly(sb, upd, runner, commits, pytestconfig):
    run = runner.run(SERVER, "rollback.py")
    note(pytestconfig, f"rollback B -> A: {run.seconds:.1f}s "
                       f"({run.seconds / MEASURED['update']:.2f}x the update it undoes)")
    assert run.returncode == 0, run.explain()
    assert version(upd) == commits["main"]
    assert current(sb).endswith(commits["main"][:12])
    assert "Migrations are not undone" in run.output and "0003_customer_loyalty_tier" in run.output
    assert "loyalty_tier" in customer_columns(sb)  # B's migration stays applied
    assert http_get(upd.http_port, "/").status == 200
    assert http_get(upd.http_port, "/customers/").status == 200  # A runs on the newer schema
    # Quick means it builds nothing: the release it returns to is still on the server, so
    # going back costs a fraction of the update that built the release it leaves.
    assert "Poetry" not in run.output and "poetry sync" not in run.output, run.explain()
    assert run.seconds < 0.75 * MEASURED["update"], \
        f"rollback {run.seconds:.1f}s vs update {MEASURED['update']:.1f}s in the same run"


def test_rollback_with_restore_backup(sb, upd, runner, commits, pytestconfig):
    again = update(runner, "b")
    assert again.returncode == 0, again.explain()
    assert version(upd) == commits["b"]
    manage(sb, "from sales.models import Customer; "
               "Customer.objects.create(name='Row after B', loyalty_tier='gold')")
    assert sql(sb, "select count(*) from sales_customer where name='Row after B'") == "1"

    run = runner.run(SERVER, "rollback.py", settings={"restore_backup": True})
    note(pytestconfig, f"rollback B -> A restoring the backup: {run.seconds:.1f}s")
    assert run.returncode == 0, run.explain()
    assert "will be restored" in run.output, run.explain()
    assert version(upd) == commits["main"]
    # The database is the backup taken before the first update to B.
    assert sql(sb, "select count(*) from sales_customer where name='Row after B'") == "0"
    assert sql(sb, "select count(*) from sales_customer where name='Row from A'") == "1"
    assert "loyalty_tier" not in customer_columns(sb)
    assert "0003" not in sql(sb, "select name from django_migrations where app='sales'")
    assert http_get(upd.http_port, "/customers/").status == 200

    # Updating to B again applies its migration again.
    back = update(runner, "b")
    assert back.returncode == 0, back.explain()
    assert version(upd) == commits["b"]
    assert "loyalty_tier" in customer_columns(sb)
    assert http_get(upd.http_port, "/customers/").status == 200


def test_update_without_a_new_revision_changes_nothing(sb, upd, runner, commits, pytestconfig):
    before = current(sb)
    run = update(runner, "b")
    note(pytestconfig, f"no-op update: {run.seconds:.1f}s "
                       f"({run.seconds / MEASURED['update']:.2f}x a real update)")
    assert run.returncode == 0, run.explain()
    assert "already serves; nothing to update" in run.output, run.explain()
    total = grand_total(run)
    assert total[1] == "-", run.explain()  # no operation changed anything
    assert current(sb) == before
    assert run.seconds < 0.5 * MEASURED["update"], \
        f"no-op update {run.seconds:.1f}s vs a real update {MEASURED['update']:.1f}s in the same run"


# -- under load, at once, killed ------------------------------------------------------------


def test_update_under_load_has_no_downtime(sb, upd, runner, commits, pytestconfig):
    paths = ["/", static_css(upd)]
    # 20 clients, each waiting 50 ms between requests (a busy office, not a benchmark: with
    # no pause the clients alone saturate two cores and the latency measures the queue).
    def load() -> Load:
        return Load(upd.http_port, paths, clients=20, seconds=180, max_requests=100_000,
                    pause=0.05, timeout=15)

    with load() as before:
        time.sleep(10)
    baseline = before.result
    with load() as during:
        time.sleep(1)
        run = update(runner, "c")
        time.sleep(1)
    result = during.result
    limit = stall_limit(baseline.worst)
    note(pytestconfig, f"load before the update: {baseline.summary()}")
    note(pytestconfig, f"update B -> C under load ({run.seconds:.1f}s): {result.summary()}; "
                       f"worst {result.worst * 1000:.0f} ms against {limit * 1000:.0f} ms allowed "
                       f"(load average {os.getloadavg()[0]:.1f})")
    assert run.returncode == 0, run.explain()
    assert version(upd) == commits["c"]
    assert baseline.failed == 0 and not baseline.odd, baseline.summary()
    assert result.served > 100, result.summary()
    assert result.failed == 0, f"{result.summary()}; {result.errors}"
    assert not result.odd, f"answers other than 200: {result.summary()}"  # static files too
    assert result.worst < limit, \
        f"a request waited {result.worst:.2f}s during the switch, {baseline.worst:.2f}s before it"


def test_two_updates_at_once(sb, upd, runner, commits, pytestconfig):
    winner, loser = race(runner, SERVER, "update.py", {"revision": "d"})
    note(pytestconfig, f"two updates at once: winner {winner.seconds:.1f}s, "
                       f"refused after {loser.seconds:.1f}s")
    assert "locked by" in loser.output, loser.explain()
    assert loser.seconds < winner.seconds / 2, "the refused update did not fail fast"
    assert version(upd) == commits["d"]
    assert not lock_exists(sb)


def test_killed_update_converges_on_the_next_run(sb, upd, runner, commits, pytestconfig):
    seen: list[str] = []
    stop = threading.Event()
    check = (f"c=$(readlink -f {BASE}/current); "
             f"if [ -f \"$c/.djdeploy-complete\" ]; then echo \"ok $c\"; else echo \"INCOMPLETE $c\"; fi")

    def watch():
        while not stop.is_set():
            answer = sb.exec(SERVER, check).stdout.strip()
            if answer:  # an exec the busy container engine answered with nothing saw nothing
                seen.append(answer)
            stop.wait(0.2)

    delay = random.uniform(1, 8)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        started = runner.start(SERVER, "update.py", settings={"revision": "e"})
        time.sleep(delay)
        started.proc.send_signal(signal.SIGKILL)
        killed = started.wait(60)
        note(pytestconfig, f"update killed after {delay:.1f}s (rc {killed.returncode})")
        again = update(runner, "e")
        note(pytestconfig, f"update after the kill: {again.seconds:.1f}s")
        assert again.returncode == 0, killed.explain() + "\n\n" + again.explain()
    finally:
        stop.set()
        watcher.join(10)
    assert seen and all(s.startswith("ok ") for s in seen), [s for s in seen if not s.startswith("ok ")]
    assert version(upd) == commits["e"]
    assert current(sb).endswith(commits["e"][:12])
    assert 'id="release-note">Release E<' in http_get(upd.http_port, "/").body
    assert not lock_exists(sb)
    # Exactly one slot serves after it all.
    slot = live_slot(sb)
    other = "b" if slot == "a" else "a"
    states = sh(sb, SERVER, f"systemctl is-active {APP}@{slot}.service {APP}@{other}.service",
                ok=False).stdout.split()
    assert states[0] == "active", states


# -- status ---------------------------------------------------------------------------------


def test_status_reports_the_live_release(sb, upd, runner, commits):
    run = runner.run(SERVER, "status.py")
    assert run.returncode == 0, run.explain()
    out = run.output
    assert f"revision {commits['e'][:12]}" in out, out
    assert f"live slot {live_slot(sb)}" in out, out
    assert re.search(r"^health\s+ok\s*$", out, re.MULTILINE), out
    checks = [line for line in out.splitlines() if re.match(r"^\s+(ok|FAIL)\s+(R\d|B\d)", line)]
    assert len(checks) == 5, out
    assert all(line.split()[0] == "ok" for line in checks), "\n".join(checks)
