"""Uploads shared by the app servers of a fleet: the storage server (the db server) keeps them
in one folder that a dedicated user may reach by SFTP only; each app server mounts it at
`shared/media` with sshfs (FUSE) under a systemd mount unit, with a key of its own and the
storage server's host key pinned. (The same mount unit with `Type=nfs` mounts an NFS export.)"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase, operation

from .common import PathStates, config_file, render, sh
from .settings import Settings


HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"


def media_user(s: Settings) -> str:
    return f"{s.app_name}media"


def storage_root(s: Settings) -> str:
    return f"/srv/{s.app_name}-media"


def key_path(s: Settings) -> str:
    return f"{s.config_dir}/media_key"


def mount_unit(s: Settings) -> tuple[str, str]:
    """The mount point and its unit's name (systemd names a mount unit after its path)."""
    where = f"/srv/{s.app_name}/shared/media"
    return where, _escape(where) + ".mount"


def _escape(path: str) -> str:
    """systemd-escape --path for the simple paths the deploy uses (letters, digits, _ and /)."""
    return path.strip("/").replace("-", "\\x2d").replace("/", "-")


class PublicKey(FactBase):
    """
    A public key file's text (an app server's media key, or the storage server's host key).
    """

    def command(self, path: str) -> str:
        return f"cat {sh(path)} 2>/dev/null || true"

    def process(self, output):
        return output[0].strip() if output else ""


class UnitActive(FactBase):
    """
    Whether a systemd unit is active.
    """

    def command(self, unit: str) -> str:
        return f"systemctl is-active {sh(unit)} || true"

    def process(self, output):
        return bool(output) and output[0].strip() == "active"


class Uid(FactBase):
    """
    The numeric uid and gid of a user, or empty.
    """

    default = tuple

    def command(self, user: str) -> str:
        return f"id -u {sh(user)} 2>/dev/null && id -g {sh(user)} 2>/dev/null || true"

    def process(self, output):
        return (output[0].strip(), output[1].strip()) if len(output) >= 2 else ()


def public_key(text: str) -> str:
    """`type key` of a public key line, without its comment."""
    return " ".join(text.split()[:2])


@operation()
def storage(s: Settings, apps: list):
    """
    The storage side of the shared media: a user that may only use SFTP, chrooted to the
    site's media folder, logging in with the app servers' keys only.

    + s: settings
    + apps: the app servers (their public keys are read when this runs)
    """
    app_keys = [public_key(h.get_fact(PublicKey, path=key_path(s) + ".pub")) for h in apps]
    user, root = media_user(s), storage_root(s)
    have = host.get_fact(PathStates, paths=[root, f"{root}/media"])
    if not host.get_fact(Uid, user=user):
        yield sh("useradd", "--system", "--user-group", "--home-dir", root, "--no-create-home",
                 "--shell", "/usr/sbin/nologin", user)
    if root not in have:
        # sshd's chroot must be root's and not writable by others.
        yield sh("install", "-d", "-o", "root", "-g", "root", "-m", "755", root)
    if f"{root}/media" not in have:
        yield sh("install", "-d", "-o", user, "-g", user, "-m", "755", f"{root}/media")
    keys = f"/etc/ssh/djdeploy-{user}.keys"
    changed = False
    for command in config_file._inner(path=keys, content="".join(k + "\n" for k in sorted(app_keys) if k)):
        changed = True
        yield command
    conf = f"/etc/ssh/sshd_config.d/djdeploy-{user}.conf"
    for command in config_file._inner(path=conf, content=render("sshd-media.conf.j2", user=user,
                                                                root=root, keys=keys)):
        changed = True
        yield command
    if changed:
        yield "sshd -t && systemctl reload ssh"


@operation()
def key(s: Settings):
    """
    The app server's own key for the shared media (made here; only its public half travels).

    + s: settings
    """
    if key_path(s) in host.get_fact(PathStates, paths=[key_path(s)]):
        host.noop("the media key exists")
        return
    yield (f"mkdir -p {sh(s.config_dir)} && " + sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "",
                                                   "-C", f"{s.app_name}-media@{host.name}",
                                                   "-f", key_path(s)))


@operation()
def mounted(s: Settings, storage, storage_address: str):
    """
    `shared/media` mounted from the storage server by a systemd mount unit (sshfs), at boot
    and now; files appear as the app's. The storage server's host key is pinned (read from it
    through the deploy's own connection: no trust on first use).

    + s: settings
    + storage: the storage server (pyinfra host)
    + storage_address: its private address
    """
    host_key = public_key(storage.get_fact(PublicKey, path=HOST_KEY))
    where, unit = mount_unit(s)
    ids = host.get_fact(Uid, user=s.app_name)
    if not ids or not host_key:
        host.noop("mounted once the app user and the storage server exist")
        return
    changed = False
    known = f"{s.config_dir}/media_known_hosts"
    for command in config_file._inner(path=known, content=f"{storage_address} {host_key}\n"):
        changed = True
        yield command
    content = render("media.mount.j2", app_name=s.app_name, what=f"{media_user(s)}@{storage_address}:/media",
                     where=where, key=key_path(s), known_hosts=known, uid=ids[0], gid=ids[1])
    for command in config_file._inner(path=f"/etc/systemd/system/{unit}", content=content):
        changed = True
        yield command
    if changed:
        yield f"systemctl daemon-reload && systemctl enable -q {unit} && systemctl restart {unit}"
    elif not host.get_fact(UnitActive, unit=unit):
        yield f"systemctl start {unit}"
    else:
        host.noop(f"{where} is mounted from {storage_address}")
