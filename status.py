"""Where each server stands, changing nothing:

    pyinfra inventory.py status.py

Current release and revision, Gunicorn slots and nginx, health, pending migrations, the last
audit log entries, the latest backups, and the runbook's own checks (R3-R8).

A fleet gets one table first (server, role, release, live slot, health on the server and from
the load balancer, the load balancer's view of it, database reachable, pending migrations),
and the run exits non-zero when the app servers serve different releases or one is unhealthy.
"""

from pyinfra import host, logger, state

from operations import app, backup, database, fleetrun, haproxy, release, roles
from operations.common import Stop
from operations.settings import from_host


def mark(ok: bool) -> str:
    return "ok  " if ok else "FAIL"


def fleet_table(fleet, s):
    """One line per server of the fleet; the problems that make the fleet not whole."""
    view = {}
    if fleet.lb is not None:
        ls = from_host(fleet.lb)
        view = fleet.lb.get_fact(haproxy.BalancerView, app=s.app_name,
                                 servers=[(h.name, roles.address_of(h)) for h in fleet.apps],
                                 port=ls.http_port, path=ls.health_path,
                                 host_header=haproxy.check_host(ls, fleet.lb.name))
    rows, problems, releases = [], [], {}
    header = ("server", "role", "release", "live", "health", "from lb", "in haproxy", "database", "pending")
    for h in [*fleet.lbs, *fleet.dbs, *fleet.apps, *fleet.backups]:
        kind = ",".join(sorted(roles.roles_of(h)))
        if not roles.is_app_server(h):
            if h.name not in [r[0] for r in rows]:
                rows.append((h.name, kind, "", "", "", "", "", "", ""))
            continue
        hs = fleetrun.server_settings(h, fleet)
        st = h.get_fact(release.Status, base=hs.base_dir, app=hs.app_name, subdir=hs.project_subdir,
                        pyenv_root=hs.pyenv_root, version=hs.python_version,
                        health=hs.health_path, python=hs.python_bin)
        db = (h.get_fact(database.Reachable, address=hs.database_server) if hs.database_server
              else "local")
        seen = view.get(h.name, {})
        healthy = st.get("health", "").endswith("ok")
        revision = st.get("revision", "")[:12]
        releases[h.name] = revision
        rows.append((h.name, kind, revision or "(none)", st.get("live") or "-",
                     "ok" if healthy else "FAIL", seen.get("health") or "-",
                     " ".join(filter(None, (seen.get("haproxy"), seen.get("check")))) or "-",
                     db, st.get("pending") or "?"))
        if not healthy:
            problems.append(f"{h.name} is not healthy ({st.get('health') or 'no answer'})")
        if fleet.lb is not None and seen.get("haproxy") != "UP":
            problems.append(f"{h.name} is {seen.get('haproxy') or 'unknown'} in the load balancer")
    if len(set(releases.values())) > 1:
        problems.append("the app servers serve different releases ("
                        + ", ".join(f"{n} {r or '(none)'}" for n, r in releases.items())
                        + "): run update.py or rollback.py")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return lines, problems


s = from_host(host)
fleet = roles.fleet_of(state, s)
s = fleet.settings_for(host, s)

# Once per run (the servers' code runs side by side; nothing here waits between the test and
# the mark).
if fleet.several and not getattr(state, "djdeploy_fleet_table", False):
    state.djdeploy_fleet_table = True
    lines, problems = fleet_table(fleet, s)
    print(f"== fleet {s.app_name} ==\n" + "\n".join(lines))
    if problems:
        raise Stop(f"fleet {s.app_name} is not whole: " + "; ".join(problems))
    logger.info(f"fleet {s.app_name}: every app server healthy on one release")

if roles.is_app_server(host):
    revision = host.get_fact(release.CurrentRevision, base=s.base_dir)
    s = app.effective(s, revision) if revision else s
    st = host.get_fact(release.Status, base=s.base_dir, app=s.app_name, subdir=s.project_subdir,
                       pyenv_root=s.pyenv_root, version=s.python_version,
                       health=s.health_path, python=s.python_bin)

    healthy = st.get("health", "").endswith("ok")
    lines = [
        f"== {host.name} ==",
        f"release     {st.get('current') or '(none)'}  revision {st.get('revision', '')[:12] or '-'}",
        f"gunicorn    live slot {st.get('live') or '-'}; slot a {st['slots']['a']}, slot b {st['slots']['b']}",
        f"nginx       {st.get('nginx')}",
        f"health      {mark(healthy)} {'' if healthy else st.get('health', '')}",
        f"migrations  {st.get('pending') or '?'} pending",
        "runbook checks (R3-R8):",
        f"  {mark(st.get('python', '').endswith(s.python_version))} R3 Python {s.python_version}: {st.get('python') or 'missing'}",
        f"  {mark(s.pyenv_root in st.get('venv', ''))} R4/R6/R7 .venv in the project root made by venv from pyenv: {st.get('venv') or 'missing'}",
        f"  {mark(bool(st.get('poetry')))} R5 Poetry: {st.get('poetry') or 'missing'}",
        f"  {mark(bool(st.get('gunicorn')))} B8 Gunicorn runs with gunicorn.conf.py: {st.get('gunicorn') or 'not running'}",
        f"  {mark(st.get('nginx_t', '').strip().endswith('ok'))} B7 nginx -t passes",
        "audit log (last entries):",
        *(f"  {line}" for line in (st.get("audit") or "(empty)").splitlines()),
        "backups:",
    ]
    listing = host.get_fact(backup.Backups, python=s.python_bin, config=backup.Paths(s).config)
    for where in ("server", "backup_server"):
        if where in listing:
            mine = sorted(n for n in listing[where]["backups"] if n.startswith(f"{host.name}-"))
            lines.append(f"  {backup.where_name(where)}: {len(mine)} kept, latest "
                         f"{mine[-1] if mine else '(none)'}" + (f"; {listing[where]['error']}"
                                                               if listing[where].get("error") else ""))
    if not listing:
        lines.append("  (not set up: deploy.py)")
    print("\n".join(lines))
