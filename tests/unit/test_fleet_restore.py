"""A fleet's restore in pieces: its preview, the maintenance page taken down and put up on each
app server (run here in a shell against a folder shaped like a server's, with systemctl
recording and the health gate replaced), HAProxy's page when no app server is up, and the
wait at the end of a fleet's deploy until HAProxy sends requests to every app server."""

import logging
import os
import subprocess
from pathlib import Path

import pytest

from operations import fleetrestore, haproxy, maintenance, release
from operations.common import render
from operations.settings import validate

S = validate({"repo_url": "x", "app_name": "shop", "server_names": ["shop.example.internal"]})


class Named:
    def __init__(self, name):
        self.name = name


def test_the_preview_names_the_backup_every_server_and_phase(caplog):
    apps = [fleetrestore.App(n, S, "c" * 40, "a") for n in ("app1", "app2")]
    plan = fleetrestore.RestorePlan(apps=apps, lb=Named("lb1"), backup="app1-20261127T020000Z",
                                    where="backup_server")
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        fleetrestore.describe(plan)
    text = caplog.text
    assert "fleet restore of app1-20261127T020000Z (the backup server's copy) onto cccccccccccc" in text
    assert "1. lock the fleet on app1" in text
    assert "3. maintenance page on, the app stopped: app1, app2" in text
    assert "/srv/shop/shared/backups/db-before-restore.dump" in text
    assert "load the backup in one transaction, migrate to cccccccccccc: app1" in text
    assert "the load balancer lb1 sees each app server healthy" in text
    assert "the previous database goes back if it was replaced" in text


@pytest.fixture()
def server(tmp_path: Path, monkeypatch):
    """/srv/shop under tmp_path; systemctl records its arguments; the health gate answers
    from HEALTHY (`socket`, `nginx`: the checks that pass)."""
    base = tmp_path / "srv"
    base.mkdir()
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "calls"
    (bin_ / "systemctl").write_text(f'#!/bin/sh\necho "systemctl $*" >> {log}\n')
    (bin_ / "systemctl").chmod(0o755)
    monkeypatch.setattr(fleetrestore.gunicorn, "health_command",
                        lambda s, commit, slot=None: f'case " $HEALTHY " in *" {"socket" if slot else "nginx"} "*) true;; *) false;; esac')

    def run(command: str, healthy: str = "socket nginx"):
        command = command.replace("/srv/shop", str(base))
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                                env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}",
                                     "HEALTHY": healthy})
        return result, (log.read_text() if log.exists() else "")
    return base, run


def test_down_shows_the_page_then_stops_both_slots(server):
    base, run = server
    result, calls = run(fleetrestore.down_command(S))
    assert result.returncode == 0, result.stderr
    assert (base / "maintenance").exists()
    assert calls == "systemctl stop shop@a.service shop@a.socket shop@b.service shop@b.socket\n"


def test_up_starts_the_live_slot_and_takes_the_page_away(server):
    base, run = server
    (base / "maintenance").touch()
    result, calls = run(fleetrestore.up_command(S, "c" * 40, "b"))
    assert result.returncode == 0, result.stderr
    assert calls == "systemctl start shop@b.socket shop@b.service\n"
    assert not (base / "maintenance").exists()


@pytest.mark.parametrize("healthy", ["", "socket"])
def test_up_takes_the_page_away_even_when_unhealthy_and_fails(server, healthy):
    base, run = server
    (base / "maintenance").touch()
    result, _ = run(fleetrestore.up_command(S, "c" * 40, "a"), healthy=healthy)
    assert result.returncode != 0
    assert not (base / "maintenance").exists()


def test_put_back_only_when_the_database_was_replaced(server):
    base, run = server
    command = fleetrestore.put_back_command(S).replace(S.python_bin, "echo ran")
    result, _ = run(command)
    assert result.stdout.strip() == "the database was not replaced"
    (base / "shared" / "backups").mkdir(parents=True)
    (base / "shared" / "backups" / "restore-replaced").write_text("app1-x\n")
    result, _ = run(command)
    assert result.stdout.startswith("ran ") and result.stdout.rstrip().endswith("put-back")


def test_haproxy_answers_with_the_maintenance_page_when_no_server_is_up():
    page = haproxy.error_page(S)
    head, body = page.split("\r\n\r\n", 1)
    lines = head.split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    assert f"Retry-After: {maintenance.RETRY_AFTER}" in lines
    assert f"Content-Length: {len(body.encode())}" in lines
    assert "維護" in body and "under maintenance or restarting" in body
    assert "資料還原" not in body  # that is the restore's own page, on the app servers
    config = haproxy.config_text(S, [haproxy.Backend("app1", "10.0.0.11", 80)])
    assert f"errorfile 503 {haproxy.error_page_path(S)}" in config
    # An app server's 503 (its maintenance page) is passed on, not retried on another server.
    (retry_on,) = [line.split()[1:] for line in config.splitlines() if line.strip().startswith("retry-on")]
    assert "502" in retry_on and "503" not in retry_on
    restore_page = render("maintenance.html.j2", app_name="shop", restoring=True)
    assert "資料還原" in restore_page and "restoring its data" in restore_page


def test_the_backup_script_replaces_only_a_fleets_postgresql(tmp_path):
    script = Path(__file__).parents[2] / "files" / "djdeploy_backup.py"
    staging = tmp_path / "staging"
    (staging / "backups" / "dump").mkdir(parents=True)
    (staging / "backups" / "dump" / "BACKUP.json").write_text(
        '{"name": "app1-x", "file": "db.sqlite3", "database": "sqlite", "sha256": ""}')
    config = tmp_path / "backup.json"
    config.write_text('{"app": "shop", "shared": "%s", "staging": "%s", "source": "/x/db.sqlite3", '
                      '"lock": "%s/lock", "log": null}' % (tmp_path, staging, tmp_path))
    result = subprocess.run(["python3", str(script), "--config", str(config), "replace",
                             "--migrate", "true"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "replace is for a fleet's PostgreSQL" in result.stderr


# -- the load balancer serving every app server ------------------------------------------------


def stat_line(server: str, state: str) -> str:
    fields = ["shop_app", server] + [""] * 15 + [state] + [""] * 20
    return ",".join(fields)


@pytest.fixture()
def balancer(tmp_path: Path):
    """socat answers `show stat` from the file STAT; curl answers the status in CODE."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "socat").write_text('#!/bin/sh\ncat "$STAT"\n')
    (bin_ / "curl").write_text('#!/bin/sh\nprintf %s "$CODE"\n')
    for tool in ("socat", "curl"):
        (bin_ / tool).chmod(0o755)
    stat = tmp_path / "stat"

    def run(states: dict, code: str = "200", timeout: int = 1):
        stat.write_text("".join(stat_line(n, st) + "\n" for n, st in states.items()))
        command = haproxy.serving_command(S, [("app1", "10.0.0.11"), ("app2", "10.0.0.12")],
                                          "shop.example.internal", timeout)
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                              env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}",
                                   "STAT": str(stat), "CODE": code})
    return run


def test_the_deploy_ends_when_every_app_server_is_up(balancer):
    result = balancer({"app1": "UP", "app2": "UP"})
    assert result.returncode == 0, result.stderr
    assert "every app server is UP in HAProxy: app1, app2" in result.stdout


def test_a_server_not_up_is_named_after_the_wait(balancer):
    result = balancer({"app1": "UP", "app2": "DOWN"})
    assert result.returncode == 1
    assert "app2 (health 200, HAProxy DOWN)" in result.stderr and "app1 (" not in result.stderr
    result = balancer({"app1": "UP"}, code="503")
    assert "app1 (health 503, HAProxy UP) app2 (health 503, HAProxy none)" in result.stderr


# -- the guard: undo only what this run did ---------------------------------------------------


class Output:
    def __init__(self, lines):
        self.stdout_lines, self.stderr_lines = lines, []


class FakeHost:
    def __init__(self, name, answers):
        self.name, self.answers, self.commands = name, answers, []

    def run_shell_command(self, command, _sudo=False):
        self.commands.append(command)
        for start, (ok, lines) in self.answers.items():
            if command.startswith(start):
                return ok, Output(lines)
        return True, Output([])


class FakeState:
    def __init__(self, hosts, failed):
        self.hosts = {h.name: h for h in hosts}
        self.failed_hosts = [self.hosts[n] for n in failed]
        self.inventory = self

    def get_host(self, name):
        return self.hosts[name]


def guarded(lock_lines, caplog):
    app1 = FakeHost("app1", {"cat ": (True, lock_lines), "test -f": (False, [])})
    app2 = FakeHost("app2", {})
    apps = [fleetrestore.App(n, S, "c" * 40, "a") for n in ("app1", "app2")]
    plan = fleetrestore.RestorePlan(apps=apps, lb=None, backup="app1-x", where="server")
    state = FakeState([app1, app2], ["app2"])
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        assert fleetrestore.Guard(plan)(state) is True
        assert fleetrestore.Guard(plan)(state) is True  # once only
    return app1, app2


def test_the_guard_changes_nothing_when_another_run_holds_the_lock(caplog):
    app1, app2 = guarded(['{"by": "someone", "pid": 1,'], caplog)
    assert "fleet restore stopped on app2 before it held the fleet's lock" in caplog.text
    assert len(app1.commands) == 1 and app2.commands == []


def test_the_guard_starts_every_server_and_releases_the_lock(caplog):
    app1, app2 = guarded([f'{{"by": "me", "pid": {release.RUN["pid"]},'], caplog)
    assert "fleet restore of app1-x failed on app2" in caplog.text
    assert "app1: serving; app2: serving" in caplog.text and "database" not in caplog.text
    assert any("systemctl start shop@a.socket" in c for c in app2.commands)
    assert any("restore app1-x from server onto cccccccccccc failed" in c for c in app2.commands)


def test_the_balancer_view_and_the_wait_for_one_server_read_the_same_answers(balancer, tmp_path):
    balancer({"app1": "UP", "app2": "DOWN"})  # writes the stat file
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
           "STAT": str(tmp_path / "stat"), "CODE": "200"}
    view = haproxy.BalancerView()
    command = view.command("shop", [("app1", "10.0.0.11"), ("app2", "10.0.0.12")], 80,
                           "/_djdeploy/health", "shop.example.internal")
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env).stdout
    seen = view.process(out.splitlines())
    assert seen["app1"]["haproxy"] == "UP" and seen["app2"]["haproxy"] == "DOWN", out
    assert seen["app1"]["health"] == "200", out
    # The wait for one server: curl answers the version with the same CODE, so it never names
    # the revision and the wait ends with what it saw.
    (sees,) = list(haproxy.sees._inner(S, "app2", "10.0.0.12", "200", 1))
    result = subprocess.run(["sh", "-c", sees], capture_output=True, text=True, env=env)
    assert result.returncode == 1 and "health 200, version 200, HAProxy DOWN" in result.stderr, result
    (sees,) = list(haproxy.sees._inner(S, "app1", "10.0.0.11", "200", 1))
    result = subprocess.run(["sh", "-c", sees], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "app1: healthy on 200, UP in HAProxy" in result.stdout, result
