"""Turns the server list and settings of `inventory.py` into pyinfra hosts, validated first."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from .settings import SettingsError, validate

# A JSON file of settings that override inventory.py's, for one run (tests, one-off changes).
OVERRIDES = "DJDEPLOY_SETTINGS"


@functools.cache
def _sandbox():
    from sandbox import Sandbox

    sandbox = Sandbox()
    return sandbox, sandbox.servers()


def _sandbox_hosts(role: str = "app") -> tuple[list[tuple[str, dict]], dict]:
    sandbox, servers = _sandbox()
    servers = [server for server in servers if server.role == role]
    if role != "app":
        return [(server.name, _sandbox_connection(server)) for server in servers], \
            sandbox.deploy_settings() if servers else {}
    if not servers:
        raise SystemExit(
            "No servers: list yours in inventory.py (SERVERS), or start local test servers "
            "with `python -m sandbox up`."
        )
    hosts = [
        (server.name, {**_sandbox_connection(server),
                       "server_names": ["localhost", "127.0.0.1", server.name]})
        for server in servers
    ]
    return hosts, sandbox.deploy_settings()


def _sandbox_connection(server) -> dict:
    return {
        "ssh_hostname": server.ssh_host,
        "ssh_port": server.ssh_port,
        "ssh_user": server.ssh_user,
        "ssh_key": str(server.ssh_key),
        "ssh_known_hosts_file": "/dev/null",
        "ssh_strict_host_key_checking": "no",
    }


def hosts(servers: list, settings: dict) -> list[tuple[str, dict]]:
    """(name, data) for each server: the settings merged and validated, or one clear error."""
    defaults: dict = {}
    if not servers:
        servers, defaults = _sandbox_hosts()
    return _validated(servers, settings, defaults)


def backup_hosts(servers: list, app_servers: list, settings: dict) -> list[tuple[str, dict]]:
    """(name, data) for each backup server; with no app servers listed either, the sandbox's
    backup servers."""
    defaults: dict = {}
    if not servers and not app_servers:
        servers, defaults = _sandbox_hosts(role="backup")
    return _validated(servers, settings, defaults)


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
