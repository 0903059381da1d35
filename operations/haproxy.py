"""The load balancer of a fleet: Debian's HAProxy in front of the app servers' nginx, ending TLS,
checking each app server's health, and sending requests that meet a dead server to another."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pyinfra import host
from pyinfra.api import FactBase, OperationError, operation

from .common import FileDigests, JsonState, PathStates, config_file, render, sh
from .maintenance import RETRY_AFTER
from .roles import address_of
from .settings import Settings

CONFIG = "/etc/haproxy/haproxy.cfg"
CERTS = "/etc/haproxy/certs"
ERRORS = "/etc/haproxy/errors"


class ConfigHeader(FactBase):
    """
    The first line of a configuration file (empty when there is none).
    """

    def command(self, path: str) -> str:
        return f"head -n 1 {sh(path)} 2>/dev/null || true"

    def process(self, output):
        return output[0] if output else ""


@dataclass(frozen=True)
class Backend:
    name: str
    address: str
    port: int


def backends(s: Settings, fleet) -> list[Backend]:
    """The fleet's app servers as HAProxy reaches them: their nginx on the private network."""
    return [Backend(h.name, address_of(h), s.http_port) for h in fleet.apps]


def certificate_path(s: Settings) -> str:
    return f"{CERTS}/{s.app_name}.pem"


def check_host(s: Settings, lb_name: str = "") -> str:
    """The Host header of HAProxy's health checks: the site's first name (default: the load
    balancer's name, this host's when not given)."""
    return [n for n in (s.server_names or [lb_name or host.name]) if "*" not in n][0]


def asked_like_haproxy(host_header: str) -> str:
    """curl, asking an app server's nginx the way HAProxy does: the site's name as Host, the
    client's request marked HTTPS."""
    return f"curl -s --max-time 5 -H {sh('Host: ' + host_header)} -H 'X-Forwarded-Proto: https'"


def status_of(host_header: str, url: str) -> str:
    """Shell: the HTTP status `url` answers when asked the way HAProxy asks (000: no answer)."""
    return f"$({asked_like_haproxy(host_header)} -o /dev/null -w '%{{http_code}}' {sh(url)} 2>/dev/null)"


def error_page_path(s: Settings) -> str:
    return f"{ERRORS}/{s.app_name}-503.http"


def error_page(s: Settings) -> str:
    """HAProxy's answer when no app server is up (all of them restarting, or showing the
    maintenance page during a restore): the maintenance page, 503 with Retry-After, as a whole
    HTTP response."""
    body = render("maintenance.html.j2", app_name=s.app_name, restoring=False)
    head = ["HTTP/1.1 503 Service Unavailable", "Content-Type: text/html; charset=utf-8",
            f"Retry-After: {RETRY_AFTER}", "Cache-Control: no-store",
            f"Content-Length: {len(body.encode())}", "Connection: close"]
    return "\r\n".join(head) + "\r\n\r\n" + body


def config_text(s: Settings, backends: list[Backend]) -> str:
    # The page's digest is in the configuration, so a changed page reloads HAProxy too.
    page = hashlib.sha256(error_page(s).encode()).hexdigest()[:12]
    return render("haproxy.cfg.j2", app_name=s.app_name, http_port=s.http_port,
                  https_port=s.https_port, tls=s.tls != "off", certificate=certificate_path(s),
                  timeout=s.gunicorn_timeout, health_path=s.health_path, host_name=check_host(s),
                  servers=backends, error_page=error_page_path(s), error_page_digest=page)


@operation()
def certificate(s: Settings):
    """
    The site's certificate and key as HAProxy reads them (one PEM file, root only): from the
    controller's files, or for internal sites a self-signed one made on the load balancer once.

    + s: settings
    """
    pem = certificate_path(s)
    if s.tls == "off":
        host.noop("TLS is off")
        return
    if s.tls == "files":
        parts = []
        for name, local in (("tls_certificate", s.tls_certificate), ("tls_key", s.tls_key)):
            if not Path(local).is_file():
                raise OperationError(f"{name}: {local} is not a file on the controller")
            parts.append(Path(local).read_text().strip() + "\n")
        yield from config_file._inner(path=pem, content="".join(parts), mode=0o600, secret=True)
        return
    if pem in host.get_fact(PathStates, paths=[pem]):
        host.noop("self-signed certificate exists")
        return
    names = [n for n in (s.server_names or [host.name]) if "*" not in n]
    alt = ",".join(f"DNS:{n}" for n in names)
    key, crt = f"{pem}.key.new", f"{pem}.crt.new"
    yield (f"mkdir -p {CERTS} && chmod 700 {CERTS} && umask 077 && "
           + sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "825",
                "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={alt}",
                "-keyout", key, "-out", crt)
           + f" 2>/dev/null && cat {sh(crt)} {sh(key)} > {sh(pem)} && rm -f {sh(crt)} {sh(key)}")


@operation()
def balancer(s: Settings, backends: list[Backend]):
    """
    HAProxy's configuration for the site: replaced only when `haproxy -c` accepts the new one,
    then reloaded gracefully (connections in flight finish on the old workers).

    + s: settings
    + backends: the app servers (name, private address, nginx's HTTP port)
    """
    content = config_text(s, backends)
    have = host.get_fact(FileDigests, paths=[CONFIG]).get(CONFIG, {})
    if have.get("sha256") == hashlib.sha256(content.encode()).hexdigest():
        host.noop("HAProxy's configuration is up to date")
        return
    # Debian's own configuration, replaced the first time, is restarted away (a reload keeps
    # its runtime socket as it was); the deploy's own is reloaded gracefully.
    ours = host.get_fact(ConfigHeader, path=CONFIG).startswith("# HAProxy in front of")
    apply = "systemctl reload haproxy" if ours else "systemctl restart haproxy"
    new = f"{CONFIG}.djdeploy-new"
    yield from config_file._inner(path=error_page_path(s), content=error_page(s))
    yield from config_file._inner(path=new, content=content)
    yield (f"if haproxy -c -q -f {sh(new)}; then mv -f {sh(new)} {CONFIG} && "
           "systemctl enable -q haproxy && "
           f"if systemctl is-active -q haproxy; then {apply}; "
           "else systemctl start haproxy; fi; "
           f"else haproxy -c -f {sh(new)} >&2; rm -f {sh(new)}; "
           "echo 'HAProxy rejected the new configuration; the working one stays' >&2; exit 1; fi")


@operation(is_idempotent=False)
def sees(s: Settings, server: str, address: str, revision: str, timeout: int):
    """
    The load balancer reaches an app server and finds it healthy on `revision`: the health path
    and the deploy's version answer asked from here, the way HAProxy asks (the server's nginx,
    the site's name as Host), and HAProxy's own view of the server UP. Waits up to `timeout`
    seconds.

    + s: settings
    + server: the app server's name in HAProxy's backend
    + address, revision: where it is reached, the commit it must name
    + timeout: seconds
    """
    base = f"http://{address}:{s.http_port}"
    host_header = check_host(s)
    curl = asked_like_haproxy(host_header)
    yield (
        "command -v curl >/dev/null && command -v socat >/dev/null || "
        "{ echo 'the load balancer lacks curl or socat: run deploy.py first' >&2; exit 1; }; "
        f"end=$(( $(date +%s) + {int(timeout)} )); "
        "while :; do " + stat_reader(s.app_name)
        + f"code={status_of(host_header, base + s.health_path)}; "
        f"version=$({curl} {sh(base + '/_djdeploy/version')}); state=$(field {sh(server)} 18); "
        f"case \"$version\" in *{revision}*) [ \"$code\" = 200 ] && [ \"$state\" = UP ] && break;; esac; "
        "if [ $(date +%s) -ge $end ]; then "
        f"echo \"{server} seen from the load balancer: health $code, version $version, HAProxy $state "
        f"(wanted 200, {revision[:12]}, UP)\" >&2; exit 1; fi; sleep 0.5; done; "
        f"echo '{server}: healthy on {revision[:12]}, UP in HAProxy'"
    )


@operation()
def serving(s: Settings, backends: list[Backend], timeout: int = 60):
    """
    HAProxy sends requests to every app server: each one UP in HAProxy and its health path
    answering 200 when asked the way HAProxy asks. A deploy is done when the site is served
    by all its app servers, not when the last file is written. Waits up to `timeout` seconds.

    + s: settings
    + backends: the app servers
    + timeout: seconds
    """
    servers = [(b.name, b.address) for b in backends]
    view = host.get_fact(BalancerView, app=s.app_name, servers=servers, port=s.http_port,
                         path=s.health_path, host_header=check_host(s))
    if all(view.get(name, {}).get("haproxy") == "UP" and view.get(name, {}).get("health") == "200"
           for name, _ in servers):
        host.noop(f"every app server is UP: {', '.join(name for name, _ in servers)}")
        return
    yield serving_command(s, servers, check_host(s), timeout)


def stat_reader(app: str) -> str:
    """Shell: HAProxy's `show stat` read once into $stat; then `field SERVER N` prints field N
    (18: the state, 37: the last check) of the site's SERVER."""
    return ("stat=$(echo 'show stat' | socat stdio /run/haproxy/admin.sock 2>/dev/null); "
            "field() { printf '%s\\n' \"$stat\" | "
            f"awk -F, -v s=\"$1\" -v f=\"$2\" '$1 == \"{app}_app\" && $2 == s {{ print $f }}'; }}; ")


def serving_command(s: Settings, servers: list[tuple[str, str]], host_header: str,
                    timeout: int) -> str:
    """Wait until every app server is UP in HAProxy and answers its health path with 200."""
    checks = []
    for name, address in servers:
        url = f"http://{address}:{s.http_port}{s.health_path}"
        checks.append(
            f"code={status_of(host_header, url)}; state=$(field {sh(name)} 18); "
            f"[ \"$code\" = 200 ] && [ \"$state\" = UP ] || waiting=\"$waiting {name} (health $code, HAProxy ${{state:-none}})\"")
    return (
        f"end=$(( $(date +%s) + {int(timeout)} )); "
        "while :; do waiting=''; " + stat_reader(s.app_name)
        + "; ".join(checks) + "; "
        "[ -z \"$waiting\" ] && break; "
        "if [ $(date +%s) -ge $end ]; then "
        f"echo \"not serving through the load balancer after {int(timeout)}s:$waiting (wanted health 200, UP)\" >&2; "
        "exit 1; fi; sleep 0.5; done; "
        f"echo 'every app server is UP in HAProxy: {', '.join(name for name, _ in servers)}'"
    )


class BalancerView(JsonState):
    """
    The load balancer's view of each app server of the site: HAProxy's state of it and its last
    check, and the health path's status asked from the load balancer the way HAProxy asks.
    """

    def command(self, app: str, servers: list, port: int, path: str, host_header: str) -> str:
        stat = stat_reader(app)
        parts = []
        for name, address in servers:
            parts.append(
                f"code={status_of(host_header, f'http://{address}:{port}{path}')}; "
                f"printf '\"%s\":{{\"haproxy\":\"%s\",\"check\":\"%s\",\"health\":\"%s\"}}' {sh(name)} "
                f"\"$(field {sh(name)} 18)\" \"$(field {sh(name)} 37)\" \"$code\"")
        return stat + "printf '{'; " + "; printf ','; ".join(parts) + "; printf '}\\n'"
