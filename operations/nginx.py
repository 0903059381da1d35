"""Nginx in front of Gunicorn (runbook B7, B9): one site, TLS, and a config that is tested
before it replaces a working one."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pyinfra import host
from pyinfra.api import OperationError, operation

from . import maintenance
from .app import Layout, release_info
from .common import FileDigests, PathStates, config_file, render, sh
from .settings import Settings

SITES = "/etc/nginx/sites-available"
ENABLED = "/etc/nginx/sites-enabled"
CATCHALL = "/etc/nginx/conf.d/djdeploy-catchall"


def tls_paths(s: Settings) -> tuple[str, str]:
    return f"/etc/ssl/certs/{s.app_name}.crt", f"/etc/ssl/private/{s.app_name}.key"


def upstream_path(s: Settings) -> str:
    return f"/etc/nginx/{s.app_name}-upstream.conf"


def in_release(lay: Layout, root: str) -> str | None:
    """A folder the project keeps inside its release, as a path relative to the release."""
    prefix = lay.releases + "/"
    if not root.startswith(prefix):
        return None
    _, _, inside = root[len(prefix):].partition("/")
    return inside.rstrip("/")


def apply_command(files: dict[str, str], enabled: str | None = None) -> str:
    """Move each new file over its path ({path: new}) only if `nginx -t` accepts them all;
    otherwise put every old one back. `enabled`: a link to the first path to make too."""
    first = next(iter(files))
    save = " && ".join(f"{{ cp -a {sh(path)} {sh(path + '.djdeploy-old')} 2>/dev/null || true; }} && "
                       f"mv -f {sh(new)} {sh(path)}" for path, new in files.items())
    link = f" && ln -sfn {sh(first)} {sh(enabled)}" if enabled else ""
    drop = " ".join(sh(path + ".djdeploy-old") for path in files)
    back = "; ".join(f"if [ -e {sh(path + '.djdeploy-old')} ]; then mv -f {sh(path + '.djdeploy-old')} "
                     f"{sh(path)}; else rm -f {sh(path)}; fi" for path in files)
    return (
        f"{save}{link} && if nginx -t -q; then rm -f {drop}; "
        "if systemctl is-active -q nginx; then systemctl reload nginx; else systemctl start nginx; fi; "
        f"else {back}; echo 'nginx rejected the new {' and '.join(files)}; the working config stays' >&2; "
        "exit 1; fi"
    )


def catchall_paths(s: Settings) -> dict[str, str]:
    """The server that drops requests for unknown host names, one per port, shared by every
    site of the server: path -> content."""
    ports = {s.http_port: False}
    if s.nginx_tls:
        ports[s.https_port] = True
    return {f"{CATCHALL}-{port}.conf": render("nginx-catchall.conf.j2", port=port, tls=tls)
            for port, tls in ports.items()}


@operation()
def tls(s: Settings):
    """
    The site's certificate and key: uploaded from the controller (key readable by root only)
    or, for internal sites, a self-signed certificate made on the server once.

    + s: settings
    """
    cert, key = tls_paths(s)
    if not s.nginx_tls:
        host.noop("TLS is off" if s.tls == "off" else "the load balancer ends TLS")
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
    static_root = paths.get("static") or f"{lay.shared}/static"
    media_root = paths.get("media") or f"{lay.shared}/media"
    static_url = paths.get("static_url") or "/static/"
    media_url = paths.get("media_url", "/media/")
    # Uploads the project keeps inside its release are linked to shared/media by the build.
    if paths.get("media_in_release") or in_release(lay, media_root) is not None:
        media_root = f"{lay.shared}/media"
    content = render(
        "nginx-site.conf.j2", app_name=s.app_name, http_port=s.http_port, https_port=s.https_port,
        tls=s.nginx_tls, tls_certificate=cert, tls_key=key, base=lay.base,
        balancers=list(s.balancers),
        server_names=s.server_names or [host.name], client_max_body_size=s.client_max_body_size,
        static_url=static_url, static_url_re=re.escape(static_url),
        static_in_release=in_release(lay, static_root), static_root=static_root.rstrip("/"),
        media_url=media_url if media_url.startswith("/") and media_url != "/" else "",
        media_root=media_root.rstrip("/"), timeout=s.gunicorn_timeout,
        maintenance=maintenance.nginx_context(s),
    )
    path = f"{SITES}/{s.app_name}.conf"
    upstream = upstream_path(s)
    wanted = {path: content, **catchall_paths(s)}
    present = host.get_fact(FileDigests, paths=[*wanted, upstream])
    states = host.get_fact(PathStates, paths=[f"{ENABLED}/default", f"{ENABLED}/{s.app_name}.conf"])
    if upstream not in present:
        yield from config_file._inner(path=upstream,
                                      content=render("nginx-upstream.conf.j2", app_name=s.app_name, slot="a"))
    stale = {p: c for p, c in wanted.items()
             if present.get(p, {}).get("sha256") != hashlib.sha256(c.encode()).hexdigest()}
    relink = f"{ENABLED}/default" in states or f"{ENABLED}/{s.app_name}.conf" not in states
    if not stale and not relink:
        host.noop("nginx site is up to date")
        return
    stale.setdefault(path, content)  # the site first: the link points at it
    stale = {path: stale.pop(path), **stale}
    for target, text in stale.items():
        yield from config_file._inner(path=target + ".djdeploy-new", content=text)
    yield sh("rm", "-f", f"{ENABLED}/default")
    yield apply_command({p: p + ".djdeploy-new" for p in stale}, f"{ENABLED}/{s.app_name}.conf")
