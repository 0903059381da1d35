"""Base image: a minimal Debian tree from debootstrap, configured like a fresh server."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import docker.errors

from .engine import Engine, cache_dir, file_lock, require_root
from .errors import SandboxError
from .hostinfo import SUITES, AptMirrors, image_inputs_hash, read_apt_mirrors

IMAGE_REPO = "djdeploy-base"

# What a fresh server has.  Deliberately no nginx, git, compilers or python3:
# the deploy installs those itself.  curl/iproute2/procps are for assertions.
INCLUDE = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "sudo",
    "ca-certificates",
    "tzdata",
    "iproute2",
    "curl",
    "procps",
]

DEPLOY_UID = 1000

# Runs inside the debootstrap tree (chroot) with SUITE, MIRROR, SECURITY set.
CONFIGURE_SCRIPT = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive

# deploy user: key-only login, passwordless sudo
useradd --create-home --uid 1000 --user-group --shell /bin/bash deploy
printf 'deploy ALL=(ALL:ALL) NOPASSWD:ALL\n' > /etc/sudoers.d/deploy
chmod 0440 /etc/sudoers.d/deploy
passwd --lock root >/dev/null

# sshd: keys only, no root login
mkdir -p /etc/ssh/sshd_config.d
cat > /etc/ssh/sshd_config.d/10-sandbox.conf <<'EOF'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
EOF

# host keys are generated at first boot, so every server gets its own
rm -f /etc/ssh/ssh_host_*
cat > /etc/systemd/system/ssh-hostkeys-firstboot.service <<'EOF'
[Unit]
Description=Generate SSH host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target ssh.service
EOF
mkdir -p /etc/systemd/system/multi-user.target.wants /etc/systemd/system/ssh.service.wants
ln -sf /etc/systemd/system/ssh-hostkeys-firstboot.service /etc/systemd/system/multi-user.target.wants/
ln -sf /etc/systemd/system/ssh-hostkeys-firstboot.service /etc/systemd/system/ssh.service.wants/

# timezone
ln -sf /usr/share/zoneinfo/Etc/UTC /etc/localtime
echo Etc/UTC > /etc/timezone

# units that make no sense in a container
for unit in getty@tty1.service console-getty.service systemd-remount-fs.service \
            serial-getty@console.service systemd-modules-load.service; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done

# apt sources: the same mirror as the controller
rm -f /etc/apt/sources.list
{
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$MIRROR" "$SUITE" "$SUITE"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [ -n "$SECURITY" ]; then
        printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$SECURITY" "$SUITE"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
} > /etc/apt/sources.list.d/debian.sources

# a fresh identity per server; no stale package lists
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/* /var/log/*.log /var/cache/debconf/*-old
"""


def image_tag(os_name: str, mirrors: AptMirrors) -> str:
    suite = SUITES[os_name]
    digest = image_inputs_hash(suite, mirrors.main, mirrors.security, INCLUDE, CONFIGURE_SCRIPT)
    return f"{os_name}-{digest}"


def _run(cmd: list[str], logfile: Path, what: str, **kw) -> None:
    with open(logfile, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=out, **kw)
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace").splitlines()[-8:]
        raise SandboxError(f"{what} failed (log {logfile}): " + " | ".join(tail))


def build_rootfs_tar(os_name: str, mirrors: AptMirrors, tag: str, log=print) -> Path:
    """Debootstrap + configure a tree and pack it as a tar in the cache."""
    images = cache_dir() / "images"
    images.mkdir(parents=True, exist_ok=True)
    tar = images / f"{tag}.tar"
    if tar.exists():
        return tar
    require_root("building the base image (debootstrap)")
    if shutil.which("debootstrap") is None:
        raise SandboxError("debootstrap is missing: apt-get install debootstrap")
    suite = SUITES[os_name]
    tree = cache_dir() / "rootfs" / tag
    logfile = images / f"{tag}.log"
    logfile.write_text("")
    if tree.exists():
        shutil.rmtree(tree)
    tree.parent.mkdir(parents=True, exist_ok=True)
    log(f"building base image {IMAGE_REPO}:{tag}: debootstrap {suite} from {mirrors.main} "
        f"(about a minute; log {logfile})")
    start = time.monotonic()
    _run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", suite,
         str(tree), mirrors.main],
        logfile,
        "debootstrap",
    )
    _run(
        ["chroot", str(tree), "/bin/sh", "-c", CONFIGURE_SCRIPT],
        logfile,
        "configuring the base image",
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "SUITE": suite,
            "MIRROR": mirrors.main,
            "SECURITY": mirrors.security or "",
        },
    )
    tmp = tar.with_suffix(".tar.tmp")
    _run(["tar", "--numeric-owner", "-C", str(tree), "-cf", str(tmp), "."], logfile, "tar")
    tmp.rename(tar)
    shutil.rmtree(tree)
    for old in images.glob(f"{os_name}-*.tar"):
        if old != tar:  # an older build of the same OS: its inputs changed
            old.unlink(missing_ok=True)
    log(f"base image tree built in {time.monotonic() - start:.0f}s")
    return tar


def ensure_base_image(engine: Engine, os_name: str, log=print) -> str:
    """Return the tag of the base image for os_name, building/importing it if needed."""
    if os_name not in SUITES:
        raise SandboxError(f"unknown os {os_name!r}: choose one of {', '.join(SUITES)}")
    mirrors = read_apt_mirrors()
    tag = image_tag(os_name, mirrors)
    ref = f"{IMAGE_REPO}:{tag}"
    try:
        engine.client.images.get(ref)
        return ref
    except docker.errors.ImageNotFound:
        pass
    with file_lock(f"image-{tag}"):
        try:
            engine.client.images.get(ref)
            return ref
        except docker.errors.ImageNotFound:
            pass
        tar = build_rootfs_tar(os_name, mirrors, tag, log=log)
        log(f"importing {ref}")
        out = engine.client.api.import_image_from_file(
            str(tar),
            repository=ref,
            changes=['CMD ["/sbin/init"]', "STOPSIGNAL SIGRTMIN+3"],
        )
        try:
            engine.client.images.get(ref)
        except docker.errors.ImageNotFound:
            image_id = None
            for line in str(out).splitlines():
                try:
                    image_id = json.loads(line).get("id") or image_id
                except ValueError:
                    continue
            if not image_id:
                raise SandboxError(f"importing {tar} as {ref} did not produce an image") from None
            engine.client.images.get(image_id).tag(IMAGE_REPO, tag)
    return ref
