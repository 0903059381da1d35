"""The server's firewall (nftables, a table of its own): SSH and the web ports open, the database
port only from the app servers, everything else closed. A new rule set is checked first, and a
timer armed before it applies puts the old one back unless a new SSH connection from the
controller gets through."""

from __future__ import annotations

import hashlib
import ipaddress
import socket

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, operation

from .common import JsonState, config_file, render, sh
from .roles import (Fleet, database_clients, database_port, holds_database, is_app_server,
                    is_lb_server)
from .settings import Settings

RULES = "/etc/djdeploy/firewall.nft"
UNIT = "djdeploy-firewall.service"
REVERT = "djdeploy-firewall-revert"  # the transient timer that undoes an unconfirmed change
REVERT_SECONDS = 60
PACKAGES = ["nftables"]


class FirewallState(JsonState):
    """
    The applied rule file's digest, whether its table is loaded, whether the boot unit is
    enabled, and the ports sshd listens on.
    """

    def command(self, rules: str, unit: str) -> str:
        return (
            f"d=$(sha256sum {sh(rules)} 2>/dev/null | cut -c1-64); "
            "if nft list table inet djdeploy >/dev/null 2>&1; then t=true; else t=false; fi; "
            f"e=$(systemctl is-enabled {unit} 2>/dev/null); "
            "p=$(sshd -T 2>/dev/null | awk '$1==\"port\"{print $2}' | paste -sd, -); "
            "printf '{\"sha256\":\"%s\",\"loaded\":%s,\"enabled\":\"%s\",\"ssh_ports\":[%s]}\\n' "
            "\"$d\" \"$t\" \"$e\" \"$p\""
        )


def open_ports(s: Settings, ssh_ports: list[int], faces_clients: bool) -> list[int]:
    """TCP ports open to everyone: SSH, and where clients arrive (the load balancer, or a
    single server's nginx) the site's ports."""
    ports = set(ssh_ports or [22]) | set(s.firewall_open_ports)
    if faces_clients:
        ports.add(s.http_port)
        if s.tls != "off":
            ports.add(s.https_port)
    return sorted(ports)


def _split(sources: list[str]) -> tuple[list[str], list[str]]:
    v4 = [c for c in sources if ipaddress.ip_network(c, strict=False).version == 4]
    v6 = [c for c in sources if ipaddress.ip_network(c, strict=False).version == 6]
    return v4, v6


def ruleset(s: Settings, ssh_ports: list[int], server, fleet: Fleet) -> str:
    """This server's rules, from its roles in the fleet: app servers behind a load balancer
    take web traffic from it only; the database port is open to the app servers only."""
    behind_lb = is_app_server(server) and fleet.lb is not None
    faces_clients = is_lb_server(server) or (is_app_server(server) and not behind_lb)
    restricted = []
    if behind_lb:
        restricted.append((s.http_port, *_split(fleet.lb_addresses()), "web, from the load balancer"))
    port = database_port(s) if holds_database(server, s, fleet) else None
    if port:
        clients = database_clients(s, fleet)
        if clients:
            restricted.append((port, *_split(clients), "database, from the app servers"))
    return render("firewall.nft.j2", open_ports=open_ports(s, ssh_ports, faces_clients),
                  restricted=restricted)


def arm_revert(had_rules: bool, seconds: int = REVERT_SECONDS) -> str:
    """A timer that, unless stopped within `seconds`, puts back the previous rules (or removes
    the table of ours when there were none)."""
    undo = f"nft -f {sh(RULES)}" if had_rules else "nft delete table inet djdeploy"
    return (f"systemctl stop {REVERT}.timer {REVERT}.service 2>/dev/null; "
            f"systemctl reset-failed {REVERT}.service {REVERT}.timer 2>/dev/null; "
            + sh("systemd-run", "--quiet", f"--unit={REVERT}", f"--on-active={seconds}",
                 "--timer-property=AccuracySec=1s", "/bin/sh", "-c", undo))


def _new_connection(state, host) -> bool:
    """From the controller, a new TCP connection to the server's SSH port must reach sshd."""
    address = host.data.get("ssh_hostname") or host.name
    port = int(host.data.get("ssh_port") or 22)
    try:
        with socket.create_connection((address, port), timeout=10) as conn:
            conn.settimeout(10)
            if conn.recv(64).startswith(b"SSH-"):
                return True
    except OSError as error:
        logger.error(f"{host.name}: no new SSH connection through the new firewall: {error}")
    # Undo at once over the connection still open; the timer would do it anyway.
    host.run_shell_command(f"systemctl start {REVERT}.service", _sudo=True)
    logger.error(f"{host.name}: the firewall change was reverted")
    return False


@operation()
def rules(s: Settings, fleet: Fleet):
    """
    The firewall's rules loaded and kept across reboots, or removed with `firewall` off.
    A change is checked with `nft -c`, a timer that restores the previous rules is armed, the
    rules applied (one transaction; established connections stay), and the timer disarmed
    only once a new SSH connection from the controller gets through.

    + s: settings
    + fleet: the site's servers (who may reach which port)
    """
    have = host.get_fact(FirewallState, rules=RULES, unit=UNIT)
    if not s.firewall:
        if have["loaded"] or have["sha256"] or have["enabled"] in ("enabled", "disabled"):
            yield (f"systemctl disable -q {UNIT} 2>/dev/null; nft delete table inet djdeploy 2>/dev/null; "
                   + sh("rm", "-f", RULES, f"/etc/systemd/system/{UNIT}") + " && systemctl daemon-reload")
        else:
            host.noop("the firewall is off")
        return
    content = ruleset(s, have["ssh_ports"], host, fleet)
    unit = render("firewall.service.j2", rules=RULES)
    unit_changes = list(config_file._inner(path=f"/etc/systemd/system/{UNIT}", content=unit))
    if hashlib.sha256(content.encode()).hexdigest() == have["sha256"] and have["loaded"]:
        if not unit_changes and have["enabled"] == "enabled":
            host.noop("firewall rules are loaded")
            return
    else:
        new = RULES + ".new"
        yield from config_file._inner(path=new, content=content, mode=0o600)
        yield f"nft -c -f {sh(new)}"
        yield arm_revert(bool(have["sha256"]))
        yield f"nft -f {sh(new)}"
        yield FunctionCommand(_new_connection, (), {})
        yield f"systemctl stop {REVERT}.timer && mv -f {sh(new)} {sh(RULES)}"
    yield from unit_changes
    if unit_changes:
        yield "systemctl daemon-reload"
    yield f"systemctl enable -q {UNIT} && systemctl start {UNIT}"
