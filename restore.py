"""Restore a backup (the latest of each server, or `restore_name`), from the server's copy or
the backup server's (`restore_from`):

    pyinfra inventory.py restore.py       (add --dry to see which backup would be restored)

The backup is fetched and verified first (a damaged one is refused and nothing changes); then,
under the deploy lock, the site shows the maintenance page (503, Retry-After) while the app is
stopped, the database and media replaced and migrated to the current release; the app starts
again health-gated and the page goes. A failure puts the previous data back. The audit log
records the restore; the data it replaced is kept until the next restore
(shared/data/db.sqlite3.before-restore or the database <app>_before_restore, and
shared/backups/media-before-restore).

On a fleet (a db server) the same is done for the whole fleet, in phases (operations/
fleetrestore.py): every app server shows the page and stops, the first app server replaces the
db server's database in one transaction (the replaced data kept as
shared/backups/db-before-restore.dump) and migrates it, every app server starts again.
"""

from pyinfra import host, logger, state

from operations import backup, fleetrestore, release, roles, system
from operations.common import Stop
from operations.settings import from_host

s = from_host(host)
fleet = roles.fleet_of(state, s)
s = fleet.settings_for(host, s)
if fleet.db is not None:
    fleetrestore.run(state, s, fleet)
elif roles.is_app_server(host):
    current = host.get_fact(release.CurrentRevision, base=s.base_dir)
    if not current:
        raise Stop(f"{host.name}: nothing is deployed yet; run deploy.py first")
    name, where = backup.chosen(host, s, s.restore_name, s.restore_from)
    logger.info(f"{host.name}: restore backup {name} from {backup.where_name(where)}; the data "
                "written since is replaced (and kept aside until the next restore)")

    if refusal := release.lock_refusal(s):
        raise Stop(refusal)
    state.add_callback_handler(release.ReleaseOnFailure(s, f"restore {name}", current, current))
    release.locked(name="Take the deploy lock", s=s, action=f"restore {name}",
                   break_lock=s.break_lock)
    system.tools(name="The deploy's scripts: health gate, release build, backup")
    backup.fetched(name=f"Fetch {name} and verify it (the site is untouched)", s=s, backup=name,
                   where=where)
    backup.restored(name="Swap it in under the maintenance page, health-gated", s=s,
                    commit=current)
    release.audited(name="Release the lock, write the audit log", s=s,
                    what=f"restore {name} from {where} onto {current[:12]}")
