"""Gunicorn under systemd (runbook B8, B9): two slots side by side, so a release is started and
health-checked before nginx sends it traffic, and the old one is stopped after it drains."""

from __future__ import annotations


from pyinfra import host
from pyinfra.api import operation

from .app import (COMPLETE, STATIC_MANIFEST, Layout, effective, found_project, release_files,
                  release_info, target_commit)
from .common import TOOLS, WEB_GROUP, JsonState, config_file, render, sh
from .nginx import apply_command, upstream_path
from .settings import Settings

HEALTH = TOOLS["health"]
SLOTS = ("a", "b")


def unit_paths(s: Settings) -> dict[str, str]:
    return {"service": f"/etc/systemd/system/{s.app_name}@.service",
            "socket": f"/etc/systemd/system/{s.app_name}@.socket"}


@operation()
def units(s: Settings):
    """
    The hardened template units `<app>@.service` and `<app>@.socket` (one instance per slot;
    the socket is 0660 for nginx's group only).

    + s: settings
    """
    s = effective(s)
    lay = Layout(s)
    # Besides data and media, what the project writes into while serving (django-compressor's
    # folder in shared/static), as the release build found it.
    writable = [p for p in (release_info(s).get("paths") or {}).get("writable", [])
                if p.startswith(f"{lay.shared}/")]
    context = dict(app_name=s.app_name, base=lay.base, subdir=s.project_subdir,
                   env_files=lay.env_files(), timeout=s.gunicorn_timeout,
                   postgresql=s.database == "postgresql", web_group=WEB_GROUP, writable=writable)
    paths = unit_paths(s)
    changed = False
    for kind, template in (("service", "gunicorn.service.j2"), ("socket", "gunicorn.socket.j2")):
        for command in config_file._inner(path=paths[kind], content=render(template, **context)):
            changed = True
            yield command
    if changed:
        yield "systemctl daemon-reload"


def target_release(s: Settings, commit: str | None = None) -> tuple[str | None, str]:
    lay = Layout(s)
    commit = commit or target_commit(s)
    return commit, (lay.release(commit) if commit else f"{lay.releases}/<{s.revision}>")


@operation()
def config(s: Settings, commit: str | None = None):
    """
    `gunicorn.conf.py` in the Django project root of the release (runbook B8) and the deploy's
    health and version wrapper beside it, kept in step with the settings after the release was
    built (a release built by an older deploy gets them too).

    + s: settings
    + commit: the release; default the target revision's
    """
    commit, rel = target_release(s, commit)
    if not commit:
        host.noop("written with the release")
        return
    yield from release_files(effective(s, commit), commit, rel, found_project(s, commit))


class Serving(JsonState):
    """
    Which release `current` and each slot point at, which slot nginx sends traffic to, and
    whether each slot's Gunicorn runs.
    """

    def command(self, base: str, app: str, upstream: str) -> str:
        b = sh(base)
        return (
            f"cur=$(readlink {b}/current); a=$(readlink {b}/slots/a); b=$(readlink {b}/slots/b); "
            f"live=$(sed -n 's|.*/run/{app}/\\([ab]\\)\\.sock.*|\\1|p' {sh(upstream)} 2>/dev/null); "
            f"sa=$(systemctl is-active {app}@a.service); sb=$(systemctl is-active {app}@b.service); "
            "printf '{\"current\":\"%s\",\"a\":\"%s\",\"b\":\"%s\",\"live\":\"%s\","
            "\"running\":{\"a\":\"%s\",\"b\":\"%s\"}}\\n' \"$cur\" \"$a\" \"$b\" \"$live\" \"$sa\" \"$sb\""
        )


def nginx_url(s: Settings) -> tuple[str, str, bool]:
    """Where the health gate reaches the site through nginx: URL, Host header, and whether the
    clients' requests are HTTPS (behind a load balancer, nginx itself speaks plain HTTP)."""
    names = [n for n in (s.server_names or [host.name]) if "*" not in n]
    if s.nginx_tls:
        return f"https://127.0.0.1:{s.https_port}", names[0], True
    return f"http://127.0.0.1:{s.http_port}", names[0], s.tls != "off"


def health_command(s: Settings, commit: str, slot: str | None = None) -> str:
    """The health gate, asking the slot's socket or nginx exactly as a browser's request through
    nginx would arrive: the site's name as Host, and `X-Forwarded-Proto: https` with TLS on."""
    url, name, https = nginx_url(s)
    args = ["--path", s.health_path, "--revision", commit, "--timeout", s.health_timeout,
            "--host", name] + (["--https"] if https else [])
    if slot:
        args += ["--socket", f"/run/{s.app_name}/{slot}.sock"]
    else:
        args += ["--url", url]
    return sh(s.python_bin, HEALTH, *args)


def set_current_command(lay: Layout, rel: str) -> str:
    """`current` -> rel, atomically; `previous` remembers what `current` was (rollback's default
    target, never pruned)."""
    return (f"prev=$(readlink {sh(lay.current)}); "
            f"if [ -n \"$prev\" ] && [ \"$prev\" != {sh(rel)} ]; then "
            f"ln -sfn \"$prev\" {sh(lay.base)}/previous.new && mv -T {sh(lay.base)}/previous.new {sh(lay.base)}/previous; fi; "
            f"ln -sfn {sh(rel)} {sh(lay.current)}.new && mv -T {sh(lay.current)}.new {sh(lay.current)}")


def other_slot(slot: str) -> str:
    return SLOTS[1 - SLOTS.index(slot)]


def start_commands(s: Settings, commit: str, rel: str, slot: str) -> list[str]:
    """The release started in `slot` and health-checked through its socket (not through
    nginx): two commands. A release that does not answer healthy is stopped, its journal
    printed, and the step fails."""
    lay = Layout(s)
    unit = f"{s.app_name}@{slot}"
    manifest = f"{lay.shared}/static/{STATIC_MANIFEST}"
    # Each step below is one command: a switch is a handful of round trips, not dozens.
    give_up = (f"{{ systemctl stop {unit}.service {unit}.socket; "
               f"journalctl -u {unit}.service -n 15 --no-pager -o cat >&2; exit 1; }}")
    return [
        " && ".join([
            f"{{ test -f {sh(rel + '/' + COMPLETE)} || {{ echo 'release {rel} is incomplete' >&2; exit 1; }}; }}",
            f"mkdir -p {sh(lay.base + '/slots')}",
            f"ln -sfn {sh(rel)} {sh(lay.base)}/slots/{slot}.new",
            f"mv -T {sh(lay.base)}/slots/{slot}.new {sh(lay.base)}/slots/{slot}",
            f"{{ [ ! -f {sh(rel + '/' + STATIC_MANIFEST)} ] || {{ cp {sh(rel + '/' + STATIC_MANIFEST)} "
            f"{sh(manifest + '.new')} && mv -f {sh(manifest + '.new')} {sh(manifest)}; }}; }}",
            f"systemctl stop {unit}.service",
            f"systemctl start {unit}.socket {unit}.service",
        ]),
        (f"{{ {health_command(s, commit, slot)} || {give_up}; }} && "
         f"systemctl enable -q {unit}.socket {unit}.service"),
    ]


def switch_parts(s: Settings, commit: str, rel: str, slot: str, live: str) -> tuple[str, list[str]]:
    """nginx pointed at `slot` (which runs the release) if `nginx -t` accepts it, then the
    health gate through nginx and `current` -> rel; a failed gate puts traffic back on `live`,
    stops `slot` and fails. The first command, and the parts of the second."""
    upstream = upstream_path(s)
    unit = f"{s.app_name}@{slot}"
    switch_to = render("nginx-upstream.conf.j2", app_name=s.app_name, slot=slot)
    back_to = render("nginx-upstream.conf.j2", app_name=s.app_name, slot=live)
    point = (f"printf %s {sh(switch_to)} > {sh(upstream + '.djdeploy-new')} && "
             + apply_command({upstream: upstream + ".djdeploy-new"}))
    revert = (f"{{ printf %s {sh(back_to)} > {sh(upstream)} && systemctl reload nginx; "
              f"systemctl stop {unit}.service {unit}.socket; systemctl disable -q {unit}.socket {unit}.service; "
              "echo 'traffic returned to the previous release' >&2; exit 1; }")
    return point, [f"{{ {health_command(s, commit)} || {revert}; }}",
                   f"{{ {set_current_command(Layout(s), rel)}; }}"]


def retire_parts(s: Settings, slot: str) -> list[str]:
    """Once nginx's old workers have drained, `slot` finishes its last requests in the
    background (the other one already serves)."""
    old = f"{s.app_name}@{slot}"
    return [sh(s.python_bin, HEALTH, "--drain", "10"),
            f"systemctl disable -q {old}.socket {old}.service",
            f"systemctl stop --no-block {old}.service {old}.socket"]


def serving_now(s: Settings) -> dict:
    return host.get_fact(Serving, base=Layout(s).base, app=s.app_name, upstream=upstream_path(s))


@operation()
def serve(s: Settings, commit: str | None = None):
    """
    The target release serving traffic, health-gated: it starts in the idle slot, must answer
    the health path and name its revision before nginx is switched to it, and again through
    nginx after; otherwise traffic stays on (or returns to) the previous release and the run
    fails. The old slot is stopped once nginx's old workers have drained.

    + s: settings
    + commit: the release to serve; default the target revision's
    """
    lay = Layout(s)
    commit, rel = target_release(s, commit)
    now = serving_now(s)
    live = now.get("live") or "a"
    live_ok = now.get("running", {}).get(live) == "active"
    set_current = set_current_command(lay, rel)
    if commit and now.get(live) == rel and live_ok:
        if now.get("current") == rel:
            host.noop(f"release {commit[:12]} serves in slot {live}")
        else:
            yield set_current
        return

    slot = live if not (live_ok and now.get(live)) else other_slot(live)
    yield from start_commands(s, commit or s.revision, rel, slot)
    if slot == live:
        yield health_command(s, commit or s.revision) + " && { " + set_current + "; }"
        return
    point, checked = switch_parts(s, commit or s.revision, rel, slot, live)
    yield point
    yield " && ".join(checked + retire_parts(s, live))


# -- a fleet's update, step by step: every app server starts the release, then they switch
# (canary first, then batches), then the old slots stop. Each step is idempotent, so a run
# that was stopped half way converges when run again.


@operation()
def started(s: Settings, commit: str | None = None):
    """
    The release running and healthy in the idle slot, not yet live (the live slot when nothing
    serves); a release that does not answer healthy is stopped and the step fails.

    + s: settings
    + commit: the release; default the target revision's
    """
    commit, rel = target_release(s, commit)
    now = serving_now(s)
    live = now.get("live") or "a"
    running = now.get("running", {})
    if commit and now.get(live) == rel and running.get(live) == "active":
        host.noop(f"release {commit[:12]} serves in slot {live}")
        return
    slot = other_slot(live) if running.get(live) == "active" and now.get(live) else live
    if commit and now.get(slot) == rel and running.get(slot) == "active":
        # Started by a run that stopped before its switch: checked again, not restarted.
        yield start_commands(s, commit, rel, slot)[1]
        return
    yield from start_commands(s, commit or s.revision, rel, slot)


@operation()
def switched(s: Settings, commit: str | None = None):
    """
    Traffic on the slot that runs the release (`started` before): nginx switched gracefully,
    the health gate through nginx, then `current` -> the release. A failed gate puts traffic
    back and fails. The old slot keeps running until `retired`, so the switch can be undone.

    + s: settings
    + commit: the release; default the target revision's
    """
    lay = Layout(s)
    commit, rel = target_release(s, commit)
    now = serving_now(s)
    live = now.get("live") or "a"
    if commit and now.get(live) == rel:
        if now.get("current") == rel:
            host.noop(f"release {commit[:12]} serves in slot {live}")
        else:  # a switch that stopped half way: nginx may not have loaded it yet
            yield (f"systemctl reload nginx && {health_command(s, commit)} && "
                   f"{{ {set_current_command(lay, rel)}; }}")
        return
    point, checked = switch_parts(s, commit or s.revision, rel, other_slot(live), live)
    yield point
    yield " && ".join(checked)


@operation()
def retired(s: Settings):
    """
    The slot that is not live disabled and stopped, once nginx's old workers have drained.

    + s: settings
    """
    now = serving_now(s)
    idle = other_slot(now.get("live") or "a")
    if now.get("running", {}).get(idle) in ("inactive", "failed", "unknown", None):
        host.noop(f"slot {idle} is stopped")
        return
    yield " && ".join(retire_parts(s, idle))


def switch_back_command(s: Settings, rel: str, live: str, was_current: str, was_previous: str) -> str:
    """What undoes this run's step on a server of a fleet whose run failed: traffic back on
    `live` (which still runs the release it ran) if nginx was switched away from it, `current`
    and `previous` as they were, and the slot this run started stopped. Changes nothing that
    this run did not do; fails when the old slot no longer runs."""
    lay = Layout(s)
    slot = other_slot(live)
    unit, old = f"{s.app_name}@{slot}", f"{s.app_name}@{live}"
    upstream = upstream_path(s)
    back_to = render("nginx-upstream.conf.j2", app_name=s.app_name, slot=live)
    relink = (f"ln -sfn {sh(was_current)} {sh(lay.current)}.new && mv -T {sh(lay.current)}.new {sh(lay.current)}"
              if was_current else "true")
    if was_previous:
        relink += (f" && ln -sfn {sh(was_previous)} {sh(lay.base)}/previous.new && "
                   f"mv -T {sh(lay.base)}/previous.new {sh(lay.base)}/previous")
    return (
        f"[ \"$(readlink {sh(lay.base)}/slots/{slot})\" = {sh(rel)} ] || {{ echo 'nothing started here'; exit 0; }}; "
        f"if grep -q '/run/{s.app_name}/{slot}\\.sock' {sh(upstream)}; then "
        f"systemctl is-active -q {old}.service || {{ echo 'slot {live} no longer runs: cannot switch back' >&2; exit 1; }}; "
        f"printf %s {sh(back_to)} > {sh(upstream)} && systemctl reload nginx && {relink} && "
        f"echo 'switched back to slot {live}'; fi; "
        f"systemctl disable -q {unit}.socket {unit}.service; systemctl stop --no-block {unit}.service {unit}.socket; "
        f"echo 'slot {slot} stopped'"
    )


@operation()
def restarted(s: Settings):
    """
    The live slot restarted (its config or units changed); connections wait in the socket.

    + s: settings
    """
    lay = Layout(s)
    now = host.get_fact(Serving, base=lay.base, app=s.app_name, upstream=upstream_path(s))
    live = now.get("live") or "a"
    yield f"systemctl restart {s.app_name}@{live}.service"
