"""Where each server stands, changing nothing:

    pyinfra inventory.py status.py

Current release and revision, Gunicorn slots and nginx, health, pending migrations, the last
audit log entries, the latest backups, and the runbook's own checks (R3-R8).
"""

from pyinfra import host, state

from operations import app, backup, release, roles
from operations.settings import from_host


def mark(ok: bool) -> str:
    return "ok  " if ok else "FAIL"


s = from_host(host)
fleet = roles.fleet_of(state, s)
s = fleet.settings_for(host, s)

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
