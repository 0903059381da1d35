"""Turns the server list and settings of `inventory.py` into pyinfra hosts, validated first."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from .roles import GROUPS
from .settings import SettingsError, validate

# A JSON file of settings that override inventory.py's, for one run (tests, one-off changes).
OVERRIDES = "DJDEPLOY_SETTINGS"


@functools.cache
def _sandbox():
    from sandbox import Sandbox

    sandbox = Sandbox()
    return sandbox, sandbox.servers()


def _sandbox_hosts() -> tuple[list[tuple[str, dict]], dict]:
    sandbox, servers = _sandbox()
    if not servers:
        raise SystemExit(
            "No servers: list yours in inventory.py (SERVERS), or start local test servers "
            "with `python -m sandbox up` (or `--roles lb,db,app,app` for a fleet)."
        )
    hosts = [
        (server.name, {
            "ssh_hostname": server.ssh_host,
            "ssh_port": server.ssh_port,
            "ssh_user": server.ssh_user,
            "ssh_key": str(server.ssh_key),
            "ssh_known_hosts_file": "/dev/null",
            "ssh_strict_host_key_checking": "no",
            "roles": list(server.roles),
            "private_address": server.address or server.name,
            "server_names": ["localhost", "127.0.0.1", server.name],
            **server.settings,
        })
        for server in servers
    ]
    return hosts, sandbox.deploy_settings()


def groups(servers: list, settings: dict) -> dict[str, list[tuple[str, dict]]]:
    """The servers (name, data), settings merged and validated, in one pyinfra group per role
    (`app_servers`, `db_servers`, `lb_servers`, `backup_servers`); a server without `roles`
    is an app server. With no servers listed: the local test servers."""
    defaults: dict = {}
    if not servers:
        servers, defaults = _sandbox_hosts()
    result: dict[str, list] = {group: [] for group in GROUPS.values()}
    for name, data in _validated(servers, settings, defaults):
        for role in data.get("roles") or ["app"]:
            result[GROUPS[role]].append((name, data))
    return result


def _validated(servers: list, settings: dict, defaults: dict) -> list[tuple[str, dict]]:
    overrides = {}
    if os.environ.get(OVERRIDES):
        overrides = json.loads(Path(os.environ[OVERRIDES]).read_text())
    result = []
    for entry in servers:
        name, data = (entry, {}) if isinstance(entry, str) else entry
        merged = {**defaults, **data, **settings, **overrides}
        # Per-server values win over the shared settings.
        merged.update({k: v for k, v in data.items() if k in settings})
        try:
            validate(merged, where=name)
        except SettingsError as error:
            raise SystemExit(f"Settings error, nothing was changed. {error}") from None
        result.append((name, {"_sudo": True, **merged}))
    return result
