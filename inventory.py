"""The servers to deploy to, and their settings.

Leave SERVERS empty to use the local test servers (`python -m sandbox up`, or
`python -m sandbox up --roles lb,db,app,app` for a fleet). For real servers, list them below;
every setting and its default is in README.md ("Settings").
"""

from operations.inventory import groups

# Your servers: a name or address, how pyinfra logs in (a user that may sudo) and, for several
# servers, what each does (`roles`: app, db, lb, backup; without: app, the one-server layout)
# and the address the others reach it at (`private_address`; default: its name).
SERVERS = [
    # ("app1.example.internal", {"ssh_user": "deploy"}),
    #
    # A fleet: a load balancer, a database server, two app servers, a backup server.
    # ("lb1.example.internal", {"roles": ["lb"]}),
    # ("db1.example.internal", {"roles": ["db"], "private_address": "10.0.0.5"}),
    # ("app1.example.internal", {"roles": ["app"], "private_address": "10.0.0.11"}),
    # ("app2.example.internal", {"roles": ["app"], "private_address": "10.0.0.12"}),
    # ("backup1.example.internal", {"roles": ["backup"]}),
]

# Settings for all servers; a value in a server's own dict above wins.
SETTINGS = {
    # "repo_url": "git@git.example.internal:sales/bizsite.git",
    # "revision": "v1.4.0",
    # "server_names": ["bizsite.example.internal"],
    # "database": "postgresql",
}

_groups = groups(SERVERS, SETTINGS)
app_servers = _groups["app_servers"]
db_servers = _groups["db_servers"]
lb_servers = _groups["lb_servers"]
backup_servers = _groups["backup_servers"]
