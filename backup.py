"""A backup now, the same one the nightly timer takes:

    pyinfra inventory.py backup.py

The database (SQLite's online backup API, PostgreSQL's `pg_dump -Fc`) and `shared/media`, into
borg on the server and on the backup server, each copy verified, then the retention applied.
Each server's backup name is printed; restore.py takes it (or the latest).
"""

from pyinfra import host, state

from operations import backup, roles, system
from operations.common import Stop
from operations.settings import from_host

s = from_host(host)
fleet = roles.fleet_of(state, s)
s = fleet.settings_for(host, s)
if roles.takes_backups(host, s, fleet):
    system.tools(name="The deploy's scripts: health gate, release build, backup")
    backup.now(name="Back up the database and media now, verified, off-server copy", s=s)
elif roles.is_app_server(host) and not s.backups:
    raise Stop(f"{host.name}: backups are off (backups: false)")
