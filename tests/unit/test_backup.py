"""Backups without a server: the retention rules, naming, choosing the backup a restore takes,
the database copy and its checks, the firewall's rules, and the new settings."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from operations import backup, firewall
from operations.roles import Fleet
from operations.settings import SettingsError, validate

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("djdeploy_backup", ROOT / "files/djdeploy_backup.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

BASE = {"repo_url": "https://git.example/app.git"}


def stamps(*times: datetime) -> dict[str, datetime]:
    return {f"app1-{t.strftime(tool.STAMP)}": t for t in times}


def at(day: str, hour: int = 2) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=timezone.utc)


# -- retention --------------------------------------------------------------------------------


def test_daily_keeps_the_newest_of_each_day():
    times = stamps(at("2026-03-10", 2), at("2026-03-10", 14), at("2026-03-09"), at("2026-03-08"))
    kept = tool.to_keep(times, daily=2, weekly=0, monthly=0)
    assert kept == {"app1-20260310T140000Z", "app1-20260309T020000Z"}


def test_days_without_a_backup_do_not_count():
    times = stamps(at("2026-03-10"), at("2026-03-05"), at("2026-03-01"))
    assert tool.to_keep(times, daily=3, weekly=0, monthly=0) == set(times)


def test_weekly_and_monthly_count_beyond_the_daily_ones():
    # 60 nightly backups ending on Tuesday 2026-03-31.
    end = at("2026-03-31")
    times = stamps(*(end - timedelta(days=n) for n in range(60)))
    kept = sorted(tool.to_keep(times, daily=7, weekly=2, monthly=1))
    daily = [f"app1-{(end - timedelta(days=n)).strftime(tool.STAMP)}" for n in range(7)]
    assert set(daily) <= set(kept)
    # The 7 days reach back to Wednesday 03-25 (ISO week 13); week 13's newest (Sunday 03-29)
    # is kept already, so the weekly rule takes the Sundays of weeks 12 and 11.
    assert "app1-20260322T020000Z" in kept and "app1-20260315T020000Z" in kept
    # March's newest is kept already: the monthly rule takes February's last backup.
    assert "app1-20260228T020000Z" in kept
    assert len(kept) == 7 + 2 + 1


def test_the_newest_backup_is_always_kept():
    times = stamps(at("2026-03-10"), at("2026-01-01"))
    assert "app1-20260310T020000Z" in tool.to_keep(times, daily=1, weekly=0, monthly=0)


def test_nothing_to_keep_from_nothing():
    assert tool.to_keep({}, daily=7, weekly=4, monthly=6) == set()


def test_backup_time_reads_only_this_servers_names():
    assert tool.backup_time("app1-20260310T020000Z", "app1") == at("2026-03-10")
    assert tool.backup_time("app1-old-20260310T020000Z", "app1") is None
    assert tool.backup_time("app2-20260310T020000Z", "app1") is None
    assert tool.backup_time("app1-before-restore", "app1") is None


# -- choosing the backup to restore -------------------------------------------------------------


LISTING = {
    "server": {"backups": ["app1-20260309T020000Z", "app1-20260310T020000Z"]},
    "backup_server": {"backups": ["app1-20260308T020000Z", "app1-20260309T020000Z",
                                  "app1-20260310T020000Z", "app2-20260311T020000Z"]},
}


def test_latest_prefers_the_servers_copy():
    assert backup.choose(LISTING, "app1", "", "auto") == ("app1-20260310T020000Z", "server")


def test_a_name_only_the_backup_server_has():
    assert backup.choose(LISTING, "app1", "app1-20260308T020000Z", "auto") == \
        ("app1-20260308T020000Z", "backup_server")


def test_restore_from_the_backup_server_only():
    assert backup.choose(LISTING, "app1", "", "backup_server") == \
        ("app1-20260310T020000Z", "backup_server")


def test_a_new_server_restores_another_servers_backup_by_name():
    listing = {"server": {"backups": []}, **{k: v for k, v in LISTING.items() if k != "server"}}
    assert backup.choose(listing, "app3", "app2-20260311T020000Z", "auto") == \
        ("app2-20260311T020000Z", "backup_server")
    with pytest.raises(ValueError, match="no backup of app3"):
        backup.choose(listing, "app3", "", "auto")


def test_an_unknown_name_and_an_unreachable_server_say_so():
    listing = {"server": {"backups": []},
               "backup_server": {"backups": [], "error": "borg list failed: Connection closed"}}
    with pytest.raises(ValueError, match="no backup named x-1.*Connection closed"):
        backup.choose(listing, "app1", "x-1", "auto")


# -- the database copy ------------------------------------------------------------------------


def make_db(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("create table t (x text)")
        db.executemany("insert into t values (?)", [("row %d" % i,) for i in range(2000)])
    db.close()


def test_dump_is_a_verified_copy(tmp_path):
    live, out = tmp_path / "db.sqlite3", tmp_path / "copy.sqlite3"
    make_db(live)
    tool.dump_database("sqlite", str(live), str(out))
    with sqlite3.connect(out) as db:
        assert db.execute("select count(*) from t").fetchone() == (2000,)
    db.close()
    assert out.stat().st_mode & 0o777 == 0o600


def test_a_damaged_database_is_refused(tmp_path):
    path = tmp_path / "db.sqlite3"
    make_db(path)
    data = bytearray(path.read_bytes())
    data[:16] = b"not a database!!"
    path.write_bytes(bytes(data))
    with pytest.raises(tool.Failure, match="not a sound SQLite database"):
        tool.verify_database("sqlite", str(path))


def test_a_missing_database_is_a_clear_failure(tmp_path):
    with pytest.raises(tool.Failure, match="no SQLite database at"):
        tool.dump_database("sqlite", str(tmp_path / "none.sqlite3"), str(tmp_path / "out"))


@pytest.mark.parametrize("where", ["local", "remote"])
def test_a_postgresql_dump_goes_back_exactly_in_one_transaction(tmp_path, monkeypatch, where):
    """What psql is given: the app's role (this server's database), every object it owns
    dropped, then the dump's SQL; one transaction that stops at the first error."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    fakes = {"pg_restore": 'echo "CREATE TABLE from_the_dump (id integer);"',
             "psql": f'echo "$@" > {tmp_path}/argv; cat > {tmp_path}/script; echo "$PGUSER" > {tmp_path}/user',
             "runuser": f'echo "$@" > {tmp_path}/runuser; shift 3; exec "$@"'}
    for name, body in fakes.items():
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    dump = tmp_path / "before.dump"
    dump.write_bytes(b"PGDMP")
    if where == "local":
        tool.load_exact(str(dump), local="shop")
        assert (tmp_path / "runuser").read_text().startswith("-u postgres -- psql")
        assert "-d shop" in (tmp_path / "argv").read_text()
    else:
        env = tmp_path / "database.env"
        env.write_text("DATABASE_URL=postgres://shop:secret@10.0.0.5:5432/shop?sslmode=verify-full\n")
        tool.load_exact(str(dump), env_file=str(env))
        assert (tmp_path / "user").read_text().strip() == "shop"
        assert "secret" not in (tmp_path / "argv").read_text()
    argv = (tmp_path / "argv").read_text().split()
    assert "--single-transaction" in argv and "ON_ERROR_STOP=1" in argv
    script = (tmp_path / "script").read_text().splitlines()
    expected = ['SET ROLE "shop";'] if where == "local" else []
    assert script == expected + ["DROP OWNED BY CURRENT_USER;", "CREATE TABLE from_the_dump (id integer);"]
    assert not (tmp_path / "before.dump.sql").exists()  # the plain SQL is not left behind


def test_borgs_error_line_is_kept_and_its_traceback_dropped():
    stderr = ("Data integrity error: Segment entry checksum mismatch [segment 2, offset 8]\n"
              "Traceback (most recent call last):\n  File \"/usr/lib/borg.py\", line 1\n"
              "borg.helpers.errors.IntegrityError: Data integrity error: ...\n"
              "Platform: Linux x\nBorg: 1.2.4\n")
    assert tool.tool_message(stderr) == \
        "Data integrity error: Segment entry checksum mismatch [segment 2, offset 8]"


# -- firewall ---------------------------------------------------------------------------------


class Server:
    """A pyinfra host as the firewall's rules see it: a name and its roles."""

    def __init__(self, *roles: str):
        self.name, self.data, self.groups = "web1", {"roles": list(roles)}, []


ALONE = Fleet()  # one server: no database server, no load balancer


def test_firewall_opens_ssh_and_the_site_only():
    s = validate({**BASE})
    rules = firewall.ruleset(s, [22], Server("app"), ALONE)
    assert "tcp dport { 22, 80 } accept" in rules
    assert "5432" not in rules  # SQLite: no database port
    assert "policy drop" in rules and "ct state established,related accept" in rules
    assert "delete table inet djdeploy" in rules  # reloading replaces only our table


def test_firewall_database_port_only_from_the_app_servers():
    s = validate({**BASE, "database": "postgresql", "tls": "self-signed",
                  "database_clients": ["10.0.0.11", "10.0.1.0/24", "fd00::11"],
                  "firewall_open_ports": [9100]})
    rules = firewall.ruleset(s, [2222], Server("app"), ALONE)
    assert "tcp dport { 80, 443, 2222, 9100 } accept" in rules
    assert "ip saddr { 10.0.0.11, 10.0.1.0/24 } tcp dport 5432 accept" in rules
    assert "ip6 saddr { fd00::11 } tcp dport 5432 accept" in rules
    # One server: no clients listed, the database is reached over loopback only.
    alone = firewall.ruleset(validate({**BASE, "database": "postgresql"}), [22], Server("app"), ALONE)
    assert "5432" not in alone and "iif lo accept" in alone


def test_a_backup_server_opens_ssh_only():
    rules = firewall.ruleset(validate({**BASE}), [22], Server("backup"), ALONE)
    assert "tcp dport { 22 } accept" in rules


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("settings, words", [
    ({"backup_server": "backup1.example"}, ["backup_ssh_key"]),
    ({"backup_server": "no spaces allowed"}, ["backup_server"]),
    ({"backup_passphrase": "pass-9"}, ["backup_passphrase", "(hidden)"]),
    ({"backup_keep_daily": 0}, ["backup_keep_daily"]),
    ({"restore_from": "tape"}, ["restore_from", "'backup_server'"]),
    ({"database_clients": ["app2.example"]}, ["database_clients"]),
    ({"firewall_open_ports": [70000]}, ["firewall_open_ports"]),
])
def test_bad_backup_and_firewall_settings(settings, words):
    with pytest.raises(SettingsError) as error:
        validate({**BASE, **settings})
    for word in words:
        assert word in str(error.value)
    assert "pass-9" not in str(error.value)  # a passphrase is never shown


def test_backup_server_parts():
    s = validate({**BASE, "backup_server": "keeper@10.0.0.5:2222", "backup_ssh_key": "k"})
    assert backup.backup_server(s) == ("keeper", "10.0.0.5", 2222)
    assert backup.remote_repository(s) == "ssh://keeper@10.0.0.5:2222/srv/djdeploy-backups/bizsite"
    plain = validate({**BASE, "backup_server": "backup1", "backup_ssh_key": "k"})
    assert backup.backup_server(plain) == ("djbackup", "backup1", 22)


def test_the_backup_key_reaches_only_the_sites_repository():
    line = backup.authorized_line(validate({**BASE}), "ssh-ed25519 AAAAkey")
    assert line.startswith('restrict,command="borg serve --restrict-to-repository '
                           '/srv/djdeploy-backups/bizsite" ssh-ed25519 AAAAkey ')
