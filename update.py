"""Update to a new revision, the runbook's 更新作業 (U1-U5), without downtime:

    pyinfra inventory.py update.py        (add --dry for a preview)

The new release is built beside the running one and checked (Django's deploy checks, the WSGI
app imports, Gunicorn accepts its config), the database backed up and migrated,
then started in the idle Gunicorn slot and switched to only once it answers healthy. Any
failure leaves the previous release serving, releases the lock and exits non-zero.

A fleet (several servers) moves all its app servers together, all or nothing: see
operations/fleetrun.py.
"""

from pyinfra import host, state

from operations import app, fleetrun, gunicorn, release, roles, system
from operations.common import Stop
from operations.settings import from_host

s = from_host(host)
fleet = roles.fleet_of(state, s)
s = fleet.settings_for(host, s)

if fleet.several:
    fleetrun.run(state, s, fleet, "update")
elif roles.is_app_server(host):
    from_rev = host.get_fact(release.CurrentRevision, base=s.base_dir)
    if not from_rev:
        raise Stop(f"{host.name}: nothing is deployed yet; run deploy.py first")
    to_rev = app.planned_commit(s)
    release.describe(s, from_rev, to_rev)
    if to_rev != from_rev:
        app.planned_project(s)

    if to_rev != from_rev:
        if refusal := release.lock_refusal(s):
            raise Stop(refusal)
        state.add_callback_handler(release.ReleaseOnFailure(s, "update", from_rev, to_rev or s.revision))
        release.locked(name="Take the deploy lock", s=s, action=f"update to {s.revision}",
                       break_lock=s.break_lock)
        system.tools(name="The deploy's scripts: health gate, release build, environment")
        app.source(name=f"Fetch {s.revision} (U2)", s=s)
        app.project_checked(name="The Django project and the Python it accepts", s=s)
        app.release(name="Build the release beside the running one: .venv, Poetry, static files, "
                         "pre-flight checks (U2, U3)", s=s)
        gunicorn.config(name="gunicorn.conf.py of the release", s=s)
        gunicorn.units(name="Gunicorn systemd units: what the release writes into", s=s)
        release.backup(name="Back up the database", s=s)
        app.migrate(name="Migrate the database (U4)", s=s)
        gunicorn.serve(name="Start the release in the idle slot, health-gated switch (U1, U5)", s=s)
        release.pruned(name=f"Keep the last {s.keep_releases} releases", s=s)
        release.unlocked(name="Release the lock, write the audit log", s=s, action="update",
                         from_rev=from_rev, to_rev=to_rev or s.revision)
