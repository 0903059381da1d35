"""The servers to deploy to, and their settings.

Leave SERVERS empty to use the local test servers (`python -m sandbox up`). For real servers,
list them below; every setting and its default is in README.md ("Settings").
"""

from operations.inventory import hosts

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

app_servers = hosts(SERVERS, SETTINGS)
