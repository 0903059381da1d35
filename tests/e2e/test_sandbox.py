"""The sandbox itself: one real server, reached over SSH, plus the source server."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from sandbox import Sandbox, Server
from sandbox.source import PYTHON_SHA256

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sb():
    state = Path("/tmp") / f"sandbox-e2e-{uuid.uuid4().hex[:8]}"
    sandbox = Sandbox(state_dir=state)
    try:
        yield sandbox
    finally:
        sandbox.down()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def server(sb: Sandbox) -> Server:
    servers = sb.up(servers=1, os="debian12")
    assert [s.name for s in servers] == ["sandbox-1"]
    return servers[0]


def ssh(server: Server, *cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(server.ssh_command(*cmd), capture_output=True, text=True,
                          timeout=60, **kw)


def test_server_facts(server: Server):
    assert server.ssh_host == "127.0.0.1" and server.ssh_user == "deploy"
    assert server.address and server.ssh_port and server.http_port and server.https_port
    assert Path(server.ssh_key).stat().st_mode & 0o777 == 0o600


def test_ssh_login_and_systemd(server: Server):
    res = ssh(server, "systemctl", "is-system-running")
    assert res.stdout.strip() == "running", res.stdout + res.stderr
    assert ssh(server, "hostname").stdout.strip() == server.name


def test_passwordless_sudo(server: Server):
    res = ssh(server, "sudo -n true && sudo -n id -u")
    assert res.returncode == 0 and res.stdout.strip() == "0", res.stderr


def test_password_and_root_logins_refused(sb: Sandbox, server: Server):
    base = ["ssh", "-p", str(server.ssh_port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"]
    res = subprocess.run(
        base + ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
                "deploy@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 255 and "password" not in res.stderr.split("(")[-1]
    res = subprocess.run(base + ["-i", server.ssh_key, "root@127.0.0.1", "true"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 255
    conf = sb.exec(server.name, "sshd -T").stdout.lower()
    assert "passwordauthentication no" in conf and "permitrootlogin no" in conf


def test_controller_ca_is_trusted(sb: Sandbox, server: Server):
    url = sb.deploy_settings()["package_index_url"]
    res = ssh(server, f"curl -sS -o /dev/null -w '%{{http_code}}' {url.rstrip('/')}/")
    assert res.stdout == "200", res.stderr


def test_source_server_from_the_server(sb: Sandbox, server: Server):
    settings = sb.deploy_settings()
    tarball = f"{settings['python_build_mirror_url']}/{PYTHON_SHA256}"
    res = sb.exec(server.name, f"curl -sSf {tarball} | sha256sum")
    assert res.stdout.split()[0] == PYTHON_SHA256, res.stderr
    res = sb.exec(server.name, f"curl -sSf -o /dev/null {sb.source.file_url('python/Python-3.11.2.tgz')}")
    assert res.returncode == 0, res.stderr
    # git is not in the base image (the deploy installs it): install it for this check
    res = sb.exec(
        server.name,
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
        "apt-get install -y -qq --no-install-recommends git >/dev/null",
    )
    assert res.returncode == 0, res.stderr
    res = sb.exec(
        server.name,
        f"rm -rf /tmp/p /tmp/a && git clone -q {settings['pyenv_git_url']} /tmp/p && "
        f"git -C /tmp/p cat-file -e {settings['pyenv_ref']} && "
        f"test -x /tmp/p/plugins/python-build/bin/python-build && "
        f"git clone -q -b {settings['revision']} {settings['repo_url']} /tmp/a",
    )
    assert res.returncode == 0, res.stderr


def test_pushed_commits_are_served(sb: Sandbox, server: Server, tmp_path: Path):
    repo = sb.source.repo_path("example_app")
    work = tmp_path / "w"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["clone", "-q", str(repo), str(work)], check=True)
    (work / "PUSHED").write_text("x\n")
    subprocess.run(git + ["-C", str(work), "add", "PUSHED"], check=True)
    subprocess.run(git + ["-C", str(work), "commit", "-qm", "pushed"], check=True)
    subprocess.run(git + ["-C", str(work), "push", "-q", "origin", "main"], check=True)
    res = sb.exec(server.name, f"git ls-remote {sb.source.git_url('example_app')} main")
    head = subprocess.run(git + ["-C", str(work), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    assert res.stdout.split()[:1] == [head]
    sb.source.reset_repo("example_app")
    res = sb.exec(server.name, f"git ls-remote {sb.source.git_url('example_app')} main")
    assert res.stdout.split()[:1] != [head]


def test_restart_is_a_real_reboot(sb: Sandbox, server: Server):
    # a unit whose stop action leaves a mark proves an orderly systemd shutdown
    unit = (
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
        "ExecStop=/bin/sh -c \"date >> /var/tmp/stopped\"\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    res = sb.exec(
        server.name,
        f"printf '{unit}' > /etc/systemd/system/stopmark.service && "
        "systemctl daemon-reload && systemctl enable --now -q stopmark.service && "
        "rm -f /var/tmp/stopped && touch /run/marker",
    )
    assert res.returncode == 0, res.stderr
    after = sb.restart(server.name)
    assert after.ssh_port == server.ssh_port and after.failed_units == []
    assert sb.exec(server.name, "test -s /var/tmp/stopped").returncode == 0
    assert sb.exec(server.name, "test -e /run/marker").returncode == 1  # fresh /run
    assert ssh(server, "systemctl", "is-system-running").stdout.strip() == "running"


def test_up_is_idempotent(sb: Sandbox, server: Server):
    again = sb.up(servers=1, os="debian12")
    assert [s.container for s in again] == [server.container]


def test_down_removes_everything(sb: Sandbox, server: Server):
    git_pid = sb.source.info()["git_pid"]
    sb.down()
    assert sb.servers() == []
    assert not sb.source.running()
    assert not Path(f"/proc/{git_pid}").exists() or \
        "Z" in Path(f"/proc/{git_pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
