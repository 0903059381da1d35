"""Backups, restore, disaster recovery and the firewall end to end, against two sandbox servers:
`bk`, made from the snapshot of the deployed d12 server (`d12_image`), and `bak`, a bare
Debian 12 server that deploy.py turns into the backup server. The tests run in file order:
deploy, the timer's backup, retention, backup.py, the firewall, a restore under load, a damaged
backup, and last the disaster: `bk` is destroyed and a bare server of the same name is
deployed and restored from the backup server."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shlex
import subprocess
import time

import pytest

from bench.load import Load

from .conftest import ROOT, Poller, Runner, http_get, note, sh, wait_for

pytestmark = pytest.mark.e2e

APP = "bizsite"
BASE = f"/srv/{APP}"
DB = f"{BASE}/shared/data/db.sqlite3"
REPO = f"{BASE}/shared/backups/borg"
REMOTE = f"/srv/djdeploy-backups/{APP}"
LOG = f"/var/log/djdeploy/{APP}-backup.log"
APP_SERVER, BACKUP_SERVER = "bk", "bak"
KEEP = {"backup_keep_daily": 2, "backup_keep_weekly": 1, "backup_keep_monthly": 1}
BORG_ENV = ("BORG_PASSPHRASE= BORG_BASE_DIR=/tmp/borg-test "
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes")

_spec = importlib.util.spec_from_file_location("djdeploy_backup", ROOT / "files/djdeploy_backup.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runner(sb, tmp_path_factory) -> Runner:
    return Runner(sb, tmp_path_factory.mktemp("backup-settings"))


@pytest.fixture(scope="module")
def servers(sb, d12_image, runner, tmp_path_factory, pytestconfig):
    """`bk` (deployed d12 snapshot) and the backup server `bak`, both deployed with backups to
    `bak`; yields the settings they were deployed with."""
    keys = tmp_path_factory.mktemp("backup-key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "djdeploy-backup",
                    "-f", str(keys / "backup")], check=True)
    bak = sb.add_server(BACKUP_SERVER, os="debian12", roles=["backup"])
    bk = sb.add_server(APP_SERVER, os="debian12", image=d12_image)
    try:
        wait_for(bk.http_port, "/healthz/", seconds=60)
        settings = {"backup_server": bak.address, "backup_ssh_key": str(keys / "backup"), **KEEP}
        run = deploy(runner, settings)
        note(pytestconfig, f"deploy of a backup server and an app server with backups: {run.seconds:.1f}s")
        assert run.returncode == 0, run.explain()
        yield settings
    finally:
        sb.remove_server(APP_SERVER)
        sb.remove_server(BACKUP_SERVER)


def deploy(runner, settings, *args):
    return runner.run(APP_SERVER, "deploy.py", "--limit", BACKUP_SERVER, *args, settings=settings,
                      timeout=1800)


def local_backups(sb) -> list[str]:
    out = sh(sb, APP_SERVER, f"{BORG_ENV} borg list --short {REPO}").stdout
    return sorted(out.split())


def remote_backups(sb) -> list[str]:
    out = sh(sb, BACKUP_SERVER, f"runuser -u djbackup -- env {BORG_ENV} borg list --short {REMOTE}").stdout
    return sorted(out.split())


def manage(sb, server: str, code: str) -> str:
    return sh(sb, server, f"{APP}-manage shell -c {shlex.quote(code)}").stdout.strip()


def customers(sb, server: str = APP_SERVER) -> set[str]:
    out = sh(sb, server, f"sqlite3 {DB} 'select name from sales_customer'").stdout
    return set(out.splitlines())


def add_customer(sb, name: str) -> None:
    manage(sb, APP_SERVER, f"from sales.models import Customer; Customer.objects.create(name={name!r})")


def put_media(sb, server: str, path: str, text: str) -> None:
    full = f"{BASE}/shared/media/{path}"
    sh(sb, server, f"mkdir -p $(dirname {full}) && printf %s {shlex.quote(text)} > {full} && "
                   f"chown -R {APP}:{APP} {BASE}/shared/media")


def log_tail(sb, lines: int = 5) -> str:
    return sh(sb, APP_SERVER, f"tail -n {lines} {LOG}").stdout


# -- set-up -----------------------------------------------------------------------------------


def test_deploy_sets_up_backups_firewall_and_log_rotation(sb, servers, runner, pytestconfig):
    again = deploy(runner, servers, "--json")
    assert again.returncode == 0, again.explain()
    results = again.json()["results"]
    busy = [op["name"] for op in results["operations"] if op["success"]]
    assert results["totals"]["success"] == 0, f"changed on a re-run: {busy}"
    note(pytestconfig, f"no-op re-run, app server and backup server: {again.seconds:.1f}s")

    assert sh(sb, APP_SERVER, f"systemctl is-enabled {APP}-backup.timer").stdout.strip() == "enabled"
    assert sh(sb, APP_SERVER, f"systemctl is-active {APP}-backup.timer").stdout.strip() == "active"
    assert sh(sb, APP_SERVER, f"stat -c '%U %a' /etc/{APP}/backup_ssh_key").stdout.strip() == "root 600"
    keys = sh(sb, BACKUP_SERVER, "cat /srv/djdeploy-backups/.ssh/authorized_keys").stdout
    assert keys.startswith(f'restrict,command="borg serve --restrict-to-repository {REMOTE}" ssh-ed25519 ')
    for name in (APP_SERVER, BACKUP_SERVER):
        assert "policy drop" in sh(sb, name, "nft list table inet djdeploy").stdout
        assert sh(sb, name, "systemctl is-enabled djdeploy-firewall.service").stdout.strip() == "enabled"
    rotation = sh(sb, APP_SERVER, f"cat /etc/logrotate.d/djdeploy-{APP}").stdout
    assert f"{BASE}/shared/audit.log" in rotation and "rotate -1" in rotation
    # The key reaches borg only, and only the site's repository: no shell.
    shell = sh(sb, APP_SERVER, f"ssh -i /etc/{APP}/backup_ssh_key -o BatchMode=yes "
                               "-o StrictHostKeyChecking=accept-new "
                               f"-o UserKnownHostsFile=/var/lib/djdeploy/borg/{APP}/known_hosts "
                               f"djbackup@{sb.server(BACKUP_SERVER).address} ls / </dev/null", ok=False)
    assert "etc" not in shell.stdout.split(), shell


# -- backups ----------------------------------------------------------------------------------


def test_timer_backup_is_verified_on_the_server_and_the_backup_server(sb, servers, pytestconfig):
    add_customer(sb, "Row before the nightly backup")
    put_media(sb, APP_SERVER, "contracts/nightly.txt", "signed before the nightly backup\n")
    started = time.monotonic()
    sh(sb, APP_SERVER, f"systemctl start {APP}-backup.service")  # what the timer starts
    note(pytestconfig, f"backup (timer's service, first one: both repositories made): "
                       f"{time.monotonic() - started:.1f}s")
    log = log_tail(sb)
    name = re.search(rf"backup ({APP_SERVER}-\d{{8}}T\d{{6}}Z) done", log).group(1)
    assert f"{name}: the server's copy written and verified" in log, log
    assert f"{name}: the backup server's copy written and verified" in log, log
    assert name in local_backups(sb) and name in remote_backups(sb)
    files = sh(sb, APP_SERVER, f"{BORG_ENV} borg list --short {REPO}::{name}").stdout.split()
    assert "backups/dump/db.sqlite3" in files and "media/contracts/nightly.txt" in files


def test_retention_removes_the_right_backups(sb, servers, pytestconfig):
    names = set(local_backups(sb))
    assert names == set(remote_backups(sb))
    started = time.monotonic()
    # Older backups, as the timer would have taken them on these days (oldest first).
    year = time.gmtime().tm_year - 1
    service = sh(sb, APP_SERVER, f"systemctl show -P ExecStart {APP}-backup.service").stdout
    command = re.search(r"argv\[\]=(.*?) ;", service).group(1)
    for day in ("01-20", "02-03", "02-04", "02-05"):
        when = f"{year}-{day}T02:30:00"
        sh(sb, APP_SERVER, f"{command} --at {when}")
        names.add(f"{APP_SERVER}-{when.replace('-', '').replace(':', '')}Z")
        times = {n: tool.backup_time(n, APP_SERVER) for n in names}
        names = tool.to_keep(times, daily=2, weekly=1, monthly=1)
    note(pytestconfig, f"4 dated backups with retention: {time.monotonic() - started:.1f}s")
    assert set(local_backups(sb)) == names
    assert set(remote_backups(sb)) == names
    # Spelled out, so that a change of the rules shows here: the daily rule keeps today's and
    # 02-05; February's week has its newest kept already, so the weekly rule keeps 01-20;
    # 02-03 and 02-04 went.
    dated = {n.split("-", 1)[1][4:8] for n in names if n.split("-", 1)[1].startswith(str(year))}
    assert dated == {"0205", "0120"}, names
    assert "retention removed" in log_tail(sb, 12)


def test_backup_py_now(sb, servers, runner, pytestconfig):
    add_customer(sb, "Row in backup.py's backup")
    put_media(sb, APP_SERVER, "contracts/on-demand.txt", "uploaded before backup.py\n")
    run = runner.run(APP_SERVER, "backup.py", settings=servers)
    note(pytestconfig, f"backup.py (database and media, two copies, verified): {run.seconds:.1f}s")
    assert run.returncode == 0, run.explain()
    name = re.search(rf"backup ({APP_SERVER}-\d{{8}}T\d{{6}}Z) done", run.output).group(1)
    assert name == local_backups(sb)[-1] == remote_backups(sb)[-1]


# -- firewall ---------------------------------------------------------------------------------


def test_firewall_closes_unlisted_ports(sb, servers):
    target = sb.server(APP_SERVER).address
    sh(sb, APP_SERVER, "systemd-run --unit=probe-8081 python3 -m http.server 8081")
    try:
        sh(sb, APP_SERVER, "for i in $(seq 50); do ss -ltn | grep -q ':8081 ' && exit 0; sleep 0.1; done; exit 1")
        assert "Directory listing" in sh(sb, APP_SERVER, "curl -s http://127.0.0.1:8081/").stdout
        refused = sh(sb, BACKUP_SERVER, f"curl -s -m 5 http://{target}:8081/", ok=False)
        assert refused.returncode == 7, refused  # 7: connection refused (a TCP reset)
        web = sh(sb, BACKUP_SERVER, f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: localhost' "
                                    f"http://{target}:80/healthz/")
        assert web.stdout == "200"
    finally:
        sh(sb, APP_SERVER, "systemctl stop probe-8081", ok=False)


def test_firewall_change_not_confirmed_is_reverted(sb, servers):
    """The revert timer the deploy arms before applying rules puts the last good ones back."""
    from operations.firewall import RULES, arm_revert

    target = sb.server(APP_SERVER).address
    url = f"http://{target}:80/healthz/"
    closed = sh(sb, APP_SERVER, f"sed 's/{{ 22, 80 }}/{{ 22 }}/' {RULES}").stdout
    assert "{ 22 }" in closed
    sh(sb, APP_SERVER, f"printf %s {shlex.quote(closed)} > /tmp/closed.nft && nft -c -f /tmp/closed.nft")
    sh(sb, APP_SERVER, arm_revert(True, seconds=3) + " && nft -f /tmp/closed.nft")
    assert sh(sb, BACKUP_SERVER, f"curl -s -m 3 -H 'Host: localhost' {url}", ok=False).returncode != 0
    time.sleep(5)
    web = sh(sb, BACKUP_SERVER, f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: localhost' {url}")
    assert web.stdout == "200"  # reverted: the rules of the file are back


# -- restore ----------------------------------------------------------------------------------


def test_restore_under_load_shows_the_maintenance_page(sb, servers, runner, pytestconfig):
    restore_point = local_backups(sb)[-1]
    expected = customers(sb)
    add_customer(sb, "Row after the backup")
    put_media(sb, APP_SERVER, "contracts/on-demand.txt", "changed after the backup\n")
    put_media(sb, APP_SERVER, "contracts/late.txt", "uploaded after the backup\n")
    port = sb.server(APP_SERVER).http_port
    load = Load(port, ["/", "/customers/"], clients=20, seconds=180, max_requests=100_000, pause=0.05)
    with Poller(lambda: http_get(port, "/", timeout=5)) as poller, load:
        time.sleep(1)
        run = runner.run(APP_SERVER, "restore.py", settings=servers)
        time.sleep(2)
    result = load.result
    statuses = dict(result.statuses)
    note(pytestconfig, f"restore.py under 20 clients ({run.seconds:.1f}s): {result.summary()}; "
                       f"the maintenance page for {poller.unavailable:.1f}s")
    note(pytestconfig, "restore phases: " + "; ".join(
        line.split(" ", 1)[1] for line in log_tail(sb, 3).splitlines() if "restore:" in line))
    assert run.returncode == 0, run.explain()
    assert f"restore backup {restore_point} from the server's copy" in run.output, run.explain()
    assert set(statuses) <= {200, 503}, f"{result.summary()}; {result.errors}"
    assert statuses.get(503, 0) > 0 and statuses.get(200, 0) > 0, result.summary()
    down = [s for s in poller.seen if s[0] != 200]
    assert down and all(s == (503, "30", True) for s in down), down[:5]
    assert poller.seen[-1][0] == 200 and poller.seen[0][0] == 200
    assert customers(sb) == expected
    assert http_get(port, "/media/contracts/on-demand.txt").body == "uploaded before backup.py\n"
    assert http_get(port, "/media/contracts/late.txt").status == 404
    assert http_get(port, "/customers/").status == 200
    audit = sh(sb, APP_SERVER, f"tail -n 1 {BASE}/shared/audit.log").stdout
    assert f"restore {restore_point} from server onto" in audit and audit.rstrip().endswith(" ok")
    assert sh(sb, APP_SERVER, f"test -e {BASE}/deploy.lock", ok=False).returncode != 0
    sh(sb, APP_SERVER, f"test -f {DB}.before-restore")  # the replaced data is kept


def test_log_rotation_keeps_the_whole_audit_log(sb, servers):
    audit = f"{BASE}/shared/audit.log"
    sh(sb, APP_SERVER, f"echo 'entry before the rotations' >> {audit}")
    before = sh(sb, APP_SERVER, f"cat {audit}").stdout.splitlines()
    rotate = f"logrotate -f /etc/logrotate.d/djdeploy-{APP}"
    sh(sb, APP_SERVER, rotate)
    sh(sb, APP_SERVER, f"echo 'entry after the first rotation' >> {audit}")
    sh(sb, APP_SERVER, f"sleep 1; {rotate}")  # a second rotation
    sh(sb, APP_SERVER, f"echo 'entry after the second rotation' >> {audit}")
    files = sh(sb, APP_SERVER, f"ls {audit}*").stdout.split()
    assert len(files) >= 2, files
    history = sh(sb, APP_SERVER, f"zcat -f {audit}-* {audit}").stdout.splitlines()
    assert history[:len(before)] == before
    assert "entry after the first rotation" in history and "entry after the second rotation" in history
    assert sh(sb, APP_SERVER, f"stat -c '%U %a' {audit}").stdout.strip() == "root 644"


CORRUPT = r"""
import json, os, subprocess, sys, zlib
repo, archive = sys.argv[1], sys.argv[2]
subprocess.run(["borg", "debug", "dump-archive", f"{repo}::{archive}", "/tmp/archive.json"], check=True)
items = json.load(open("/tmp/archive.json"))["_items"]
chunk = next(i for i in items if i.get("path", "").endswith("/db.sqlite3"))["chunks"][0][0]
key = bytes.fromhex(chunk.lstrip("\x7f"))
for folder, _, files in os.walk(os.path.join(repo, "data")):
    for name in files:
        path = os.path.join(folder, name)
        data = bytearray(open(path, "rb").read())
        at = data.find(key)
        while at >= 9:
            # A segment entry: crc32, size, tag 0 (put), the 32-byte key, then the data.
            size = int.from_bytes(data[at - 5:at - 1], "little")
            crc = int.from_bytes(data[at - 9:at - 5], "little")
            if data[at - 1] == 0 and zlib.crc32(data[at - 5:at - 9 + size]) & 0xFFFFFFFF == crc:
                where = at + 32 + (size - 41) // 2
                data[where] ^= 0xFF
                open(path, "wb").write(data)
                print(path, where)
                sys.exit(0)
            at = data.find(key, at + 1)
sys.exit("the database's chunk was not found")
"""


def test_damaged_backup_is_refused(sb, servers, runner):
    name = local_backups(sb)[-1]
    sh(sb, APP_SERVER, f"{BORG_ENV} python3 -c {shlex.quote(CORRUPT)} {REPO} {name}")
    before = sh(sb, APP_SERVER, f"sha256sum {DB}").stdout
    run = runner.run(APP_SERVER, "restore.py", settings={**servers, "restore_from": "server"})
    assert run.returncode != 0, run.explain()
    assert f"backup {name} (the server's copy) is damaged or unreadable, nothing was restored" \
        in run.output, run.explain()
    assert "Data integrity error" in run.output, run.explain()
    assert sh(sb, APP_SERVER, f"sha256sum {DB}").stdout == before
    assert http_get(sb.server(APP_SERVER).http_port, "/").status == 200
    assert sh(sb, APP_SERVER, f"test -e {BASE}/deploy.lock", ok=False).returncode != 0
    assert sh(sb, APP_SERVER, f"tail -n 1 {BASE}/shared/audit.log").stdout.rstrip().endswith("failed")
    # The backup server's copy of the same backup is sound; the damaged server copy goes (the
    # next backup makes a new one).
    sh(sb, APP_SERVER, f"rm -rf {REPO}")
    good = runner.run(APP_SERVER, "restore.py", "--dry", settings={**servers, "restore_from": "backup_server"},
                      yes=False)
    assert good.returncode == 0 and f"restore backup {name} from the backup server's copy" in good.output


# -- disaster recovery ------------------------------------------------------------------------


def test_disaster_recovery_on_a_bare_server(sb, servers, runner, pytestconfig):
    add_customer(sb, "Row in the last backup")
    put_media(sb, APP_SERVER, "contracts/last.txt", "the last upload\n")
    taken = runner.run(APP_SERVER, "backup.py", settings=servers)
    assert taken.returncode == 0, taken.explain()
    expected = customers(sb)
    media = sh(sb, APP_SERVER, f"cd {BASE}/shared/media && find . -type f | sort | xargs sha256sum").stdout

    sb.remove_server(APP_SERVER)  # the server is lost
    started = time.monotonic()
    bare = sb.add_server(APP_SERVER, os="debian12")
    booted = time.monotonic() - started
    first = runner.run(APP_SERVER, "deploy.py", settings=servers, timeout=1800)
    assert first.returncode == 0, first.explain()
    assert "Row in the last backup" not in customers(sb)  # a new, empty site
    restore = runner.run(APP_SERVER, "restore.py", settings=servers)
    total = time.monotonic() - started
    assert restore.returncode == 0, restore.explain()
    note(pytestconfig, f"disaster recovery, bare server to restored site: {total:.1f}s (server "
                       f"boot {booted:.1f}s, deploy.py {first.seconds:.1f}s, restore.py "
                       f"{restore.seconds:.1f}s)")
    assert "from the backup server's copy" in restore.output, restore.explain()
    assert customers(sb) == expected
    assert sh(sb, APP_SERVER, f"cd {BASE}/shared/media && find . -type f | sort | xargs sha256sum").stdout == media
    port = bare.http_port
    assert http_get(port, "/media/contracts/last.txt").body == "the last upload\n"
    wait_for(port, "/healthz/", seconds=10)
    assert http_get(port, "/customers/").status == 200
    digest = hashlib.sha256(http_get(port, "/customers/").body.encode()).hexdigest()
    assert digest  # the page renders from the restored rows
    assert "Row in the last backup" in http_get(port, "/customers/").body
