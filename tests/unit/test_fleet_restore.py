"""A fleet's restore in pieces: its preview, the maintenance page taken down and put up on each
app server (run here in a shell against a folder shaped like a server's, with systemctl
recording and the health gate replaced), and HAProxy's page when no app server is up."""

import logging
import os
import subprocess
from pathlib import Path

import pytest

from operations import fleetrestore, haproxy, maintenance
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
