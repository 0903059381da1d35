"""Nginx in front of Gunicorn (runbook B7, B9): one site, TLS, and a config that is tested
before it replaces a working one."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pyinfra import host
from pyinfra.api import OperationError, operation

from . import maintenance
from .app import Layout, release_info
from .common import FileDigests, PathStates, config_file, render, sh
from .settings import Settings

SITES = "/etc/nginx/sites-available"
ENABLED = "/etc/nginx/sites-enabled"
WEB_GROUP = "www-data"


def tls_paths(s: Settings) -> tuple[str, str]:
    return f"/etc/ssl/certs/{s.app_name}.crt", f"/etc/ssl/private/{s.app_name}.key"


def upstream_path(s: Settings) -> str:
    return f"/etc/nginx/{s.app_name}-upstream.conf"


def served_from(lay: Layout, root: str) -> str:
    """Where nginx finds a folder: one the project keeps inside a release is reached through
    `current`, so the site config does not change with every release."""
    prefix = lay.releases + "/"
    if not root.startswith(prefix):
        return root
    _, _, inside = root[len(prefix):].partition("/")
    return f"{lay.current}/{inside}".rstrip("/")


def apply_command(path: str, new: str, enabled: str | None) -> str:
    """Move `new` over `path` only if `nginx -t` accepts it; otherwise put the old one back."""
    link = f"ln -sfn {sh(path)} {sh(enabled)} && " if enabled else ""
    old = path + ".djdeploy-old"
    return (
        f"{{ cp -a {sh(path)} {sh(old)} 2>/dev/null || true; }} && mv -f {sh(new)} {sh(path)} && {link}"
        f"if nginx -t -q; then rm -f {sh(old)}; "
        "if systemctl is-active -q nginx; then systemctl reload nginx; else systemctl start nginx; fi; "
        f"else if [ -e {sh(old)} ]; then mv -f {sh(old)} {sh(path)}; else rm -f {sh(path)}; fi; "
        f"echo 'nginx rejected the new {path}; the working config stays' >&2; exit 1; fi"
    )


@operation()
def tls(s: Settings):
    """
    The site's certificate and key: uploaded from the controller (key readable by root only)
    or, for internal sites, a self-signed certificate made on the server once.

    + s: settings
    """
    cert, key = tls_paths(s)
    if s.tls == "off":
        host.noop("TLS is off")
        return
    if s.tls == "files":
        for name, local in (("tls_certificate", s.tls_certificate), ("tls_key", s.tls_key)):
            if not Path(local).is_file():
                raise OperationError(f"{name}: {local} is not a file on the controller")
        yield from config_file._inner(path=cert, content=Path(s.tls_certificate).read_text())
        yield from config_file._inner(path=key, content=Path(s.tls_key).read_text(), mode=0o600,
                                      secret=True)
        return
    if key in host.get_fact(PathStates, paths=[key]):
        host.noop("self-signed certificate exists")
        return
    names = [n for n in (s.server_names or [host.name]) if n != "_" and "*" not in n]
    alt = ",".join(f"DNS:{n}" for n in names)
    yield ("umask 077 && " + sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                               "-days", "825", "-subj", f"/CN={names[0] if names else host.name}",
                               "-addext", f"subjectAltName={alt}", "-keyout", key, "-out", cert)
           + " 2>/dev/null && " + sh("chmod", "644", cert))


@operation()
def site(s: Settings):
    """
    The site config from its template, the distribution's default site removed, and an
    upstream pointing at slot `a` until a release takes over; applied only if `nginx -t`
    accepts it.

    + s: settings
    """
    lay = Layout(s)
    cert, key = tls_paths(s)
    paths = release_info(s).get("paths") or {}
    static_root = served_from(lay, paths.get("static", f"{lay.shared}/static"))
    media_root = served_from(lay, paths.get("media", f"{lay.shared}/media"))
    content = render(
        "nginx-site.conf.j2", app_name=s.app_name, http_port=s.http_port, https_port=s.https_port,
        tls=s.tls != "off", tls_certificate=cert, tls_key=key,
        server_names=s.server_names or [host.name], client_max_body_size=s.client_max_body_size,
        static_url=paths.get("static_url", "/static/"), media_url=paths.get("media_url", "/media/"),
        static_root=static_root.rstrip("/"), media_root=media_root.rstrip("/"),
        timeout=s.gunicorn_timeout, maintenance=maintenance.nginx_context(s),
    )
    path = f"{SITES}/{s.app_name}.conf"
    upstream = upstream_path(s)
    present = host.get_fact(FileDigests, paths=[path, upstream])
    states = host.get_fact(PathStates, paths=[f"{ENABLED}/default", f"{ENABLED}/{s.app_name}.conf"])
    if upstream not in present:
        yield from config_file._inner(path=upstream,
                                      content=render("nginx-upstream.conf.j2", app_name=s.app_name, slot="a"))
    changed = False
    if present.get(path, {}).get("sha256") != hashlib.sha256(content.encode()).hexdigest():
        changed = True
    if f"{ENABLED}/default" in states or f"{ENABLED}/{s.app_name}.conf" not in states:
        changed = True
    if not changed:
        host.noop("nginx site is up to date")
        return
    new = path + ".djdeploy-new"
    yield from config_file._inner(path=new, content=content)
    yield sh("rm", "-f", f"{ENABLED}/default")
    yield apply_command(path, new, f"{ENABLED}/{s.app_name}.conf")
