"""The servers to deploy to, and their settings.

Leave SERVERS empty to use the local test servers (`python -m sandbox up`). For real servers,
list them below; every setting and its default is in README.md ("Settings").
"""

from operations.inventory import backup_hosts, hosts

# Your servers: a name or address, and how pyinfra logs in (a user that may sudo).
SERVERS = [
    # ("app1.example.internal", {"ssh_user": "deploy"}),
    # ("app2.example.internal", {"ssh_user": "deploy", "ssh_port": 2222}),
]

# Settings for all servers; a value in a server's own dict above wins.
SETTINGS = {
    # "repo_url": "git@git.example.internal:sales/bizsite.git",
    # "revision": "v1.4.0",
    # "server_names": ["bizsite.example.internal"],
    # "database": "postgresql",
}

# Backup servers (optional): deploy.py sets them up to keep the site's backups; point the
# app servers at one with the `backup_server` and `backup_ssh_key` settings.
BACKUP_SERVERS = [
    # ("backup1.example.internal", {"ssh_user": "deploy"}),
]

app_servers = hosts(SERVERS, SETTINGS)
backup_servers = backup_hosts(BACKUP_SERVERS, SERVERS, SETTINGS)
