"""Back to the previous good release (or `rollback_to`), health-gated like an update:

    pyinfra inventory.py rollback.py

Migrations are not undone: the release you return to runs on the newer schema. Set
`restore_backup: true` to also restore the database backup taken before the update being undone.
"""

from pyinfra import host, logger, state

from operations import app, fleetrun, gunicorn, release, roles
from operations.common import Stop
from operations.settings import from_host

s = from_host(host)
fleet = roles.fleet_of(state, s)
s = fleet.settings_for(host, s)

if fleet.several:  # every app server, all or nothing: operations/fleetrun.py
    fleetrun.run(state, s, fleet, "rollback")
elif roles.is_app_server(host):
    from_rev = host.get_fact(release.CurrentRevision, base=s.base_dir)
    subdir = app.effective(s, from_rev).project_subdir if from_rev else s.project_subdir
    target = host.get_fact(release.RollbackTarget, base=s.base_dir, subdir=subdir,
                           commit=s.rollback_to)
    if not target:
        wanted = s.rollback_to or "the release before the current one"
        raise Stop(f"{host.name}: no complete release to roll back to ({wanted})")
    to_rev = target["commit"]
    kept = ", ".join(m.rsplit("/", 1)[-1] for m in target["kept_migrations"]) or "none"
    logger.info(f"{host.name}: roll back {from_rev[:12]} -> {to_rev[:12]}. Migrations are not undone; "
                f"still applied from {from_rev[:12]}: {kept}"
                + ("; the database backup taken before it will be restored" if s.restore_backup else ""))

    if refusal := release.lock_refusal(s):
        raise Stop(refusal)
    state.add_callback_handler(release.ReleaseOnFailure(s, "rollback", from_rev, to_rev))
    release.locked(name="Take the deploy lock", s=s, action=f"rollback to {to_rev[:12]}",
                   break_lock=s.break_lock)
    if s.restore_backup:
        release.restored(name=f"Restore the database backup taken before {from_rev[:12]}", s=s,
                         undoing=from_rev)
    gunicorn.config(name="gunicorn.conf.py of the release", s=s, commit=to_rev)
    gunicorn.serve(name=f"Serve {to_rev[:12]} again, health-gated", s=s, commit=to_rev)
    release.unlocked(name="Release the lock, write the audit log", s=s, action="rollback",
                     from_rev=from_rev, to_rev=to_rev)
