"""First install, the runbook's 建置作業 (B1-B9), safe to re-run:

    pyinfra inventory.py deploy.py        (add --dry for a preview)

Each step checks the server and changes only what differs (R8), so a second run changes nothing.
Every server does the steps of its roles: one server alone is the runbook's layout (the app with
its own database, nginx facing the clients); a fleet adds its database server (PostgreSQL and the
shared media), its load balancer (HAProxy) and backup servers.
"""

from pyinfra import host, state

from operations import (app, backup, database, firewall, fleetrun, gunicorn, haproxy, logs,
                        maintenance, media, nginx, python_env, roles, system)
from operations.settings import from_host

s = from_host(host)
fleet = roles.fleet_of(state, s)
s = fleet.settings_for(host, s)
is_app, is_db, is_lb = roles.is_app_server(host), roles.is_db_server(host), roles.is_lb_server(host)

packages = [*logs.PACKAGES, *(firewall.PACKAGES if s.firewall else [])]
if is_app:
    fleetrun.keep_fleet_release(fleet, s)
    app.planned_commit(s)
    app.planned_project(s)
    packages += [*python_env.BUILD_PACKAGES, "nginx", "openssl", *s.apt_packages]
    if s.database == "postgresql" and fleet.db is None:
        packages.append("postgresql")
    if s.nodejs:
        packages += ["nodejs", "npm"]
    if fleet.shared_media:
        packages.append("sshfs")
    if fleet.db is not None:  # pg_dump of the fleet's database, before migrations and nightly
        packages.append("postgresql-client")
if is_db:
    packages += ["postgresql", "python3"]
if is_lb:
    packages += ["haproxy", "openssl", "curl", "socat"]  # curl, socat: checks during updates
if s.backups and (is_app or is_db):
    packages += ["borgbackup", "rsync"]
if roles.is_backup_server(host):
    packages.append("borgbackup")

system.ca_certificates(name="Trust the extra CA certificates", paths=s.extra_ca_certificates)
system.packages(name="Debian packages (B1, B7)", present=sorted(set(packages)))

if is_app and fleet.shared_media:
    media.key(name="Shared media: this app server's key", s=s)

if fleet.several:
    roles.phase(name="Every server has its packages", title="packages installed")
if is_db:
    database.server(name="PostgreSQL for the fleet: private address, TLS, the app servers only",
                    s=s, address=roles.address_of(host), clients=fleet.app_addresses())
    if fleet.shared_media:
        media.storage(name="Shared media: SFTP-only storage for the app servers", s=s,
                      apps=fleet.apps)
    # Before the app servers need it: an app server added to the fleet reaches PostgreSQL.
    firewall.rules(name="Firewall of the database server: SSH, PostgreSQL for the app servers",
                   s=s, fleet=fleet)

if fleet.several:
    roles.phase(name="The database server is ready", title="database and shared media ready")
if is_app:
    system.tools(name="The deploy's scripts: health gate, release build, environment, backup")
    app.source(name=f"Source code of {s.revision} (B2)", s=s)
    app.project_checked(name="The Django project and the Python it accepts", s=s)

    python_env.pyenv(name=f"pyenv {s.pyenv_ref} in {s.pyenv_root} (R4)",
                     git_url=s.pyenv_git_url, ref=s.pyenv_ref, root=s.pyenv_root)
    python_env.python(name=f"CPython {s.python_version} built by pyenv (R3, B1)", s=s)
    python_env.shared(name=f"CPython {s.python_version}: artifact into the cache", kind="cpython",
                      s=s)
    python_env.from_artifact(name=f"CPython {s.python_version} from the artifact (R3, B1)",
                             kind="cpython", s=s)
    python_env.poetry(name=f"Poetry {s.poetry_version} (R5)", s=s)
    python_env.shared(name=f"Poetry {s.poetry_version}: artifact into the cache", kind="poetry", s=s)
    python_env.from_artifact(name=f"Poetry {s.poetry_version} from the artifact (R5)",
                             kind="poetry", s=s)

    app.account(name=f"System user {s.app_name}", s=s)
    app.layout(name=f"Release layout in {s.base_dir}", s=s)
    if fleet.shared_media:
        media.mounted(name="Shared media mounted from the database server", s=s,
                      storage=fleet.db, storage_address=roles.address_of(fleet.db))
    if fleet.db is not None:
        db = database.connection(name="Database: the fleet's PostgreSQL, over TLS", s=s,
                                 db_host=fleet.db, address=roles.address_of(fleet.db))
    else:
        db = database.postgresql(name="PostgreSQL role and database", s=s)
    env = app.environment(name="Environment: database, run mode, secret key (B3)", s=s)
    app.release(name="Release: code, .venv in the project root, Poetry install, static files, checks "
                     "(B2, B4, R6, R7)", s=s)
    units = gunicorn.units(name="Gunicorn systemd units (B8)", s=s)
    conf = gunicorn.config(name="gunicorn.conf.py (B8)", s=s)
    if fleet.runs_once(host, s):
        app.migrate(name="Database schema: manage.py migrate (B5)", s=s)
    nginx.tls(name="TLS certificate", s=s)
    maintenance.page(name="Maintenance page (shown during a restore)", s=s)
    nginx.site(name="Nginx site: static files, proxy to Gunicorn (B7)", s=s)
    served = gunicorn.serve(name="Gunicorn serving the release, health-gated (B6, B9)", s=s)
    gunicorn.restarted(name="Gunicorn restarted for changed settings", s=s,
                       _if=lambda: (units.did_change() or conf.did_change() or env.did_change()
                                    or db.did_change()) and not served.did_change())
    app.manage_wrapper(name=f"{s.app_name}-manage command", s=s)
    backup.schedule(name=f"Backups: timer ({s.backup_schedule}), off-server copy", s=s,
                    takes=roles.takes_backups(host, s, fleet))
    logs.rotation(name="Log rotation: audit log (kept whole), backup log", s=s)

if fleet.several:
    roles.phase(name="The app servers serve", title="app servers done")
if is_lb:
    haproxy.certificate(name="Load balancer: TLS certificate", s=s)
    haproxy.balancer(name=f"Load balancer: HAProxy in front of {len(fleet.apps)} app server(s)",
                     s=s, backends=haproxy.backends(s, fleet))

if roles.is_backup_server(host):
    backup.receiver(name="Backup server: a restricted repository per site", s=s,
                    keys=backup.client_keys(state.inventory))

if not is_db:
    firewall.rules(name="Firewall: SSH and the site open, the rest closed", s=s, fleet=fleet)

if fleet.several:
    roles.phase(name="Every server is deployed", title="every server deployed")
if is_lb:
    haproxy.serving(name="The load balancer sends requests to every app server", s=s,
                    backends=haproxy.backends(s, fleet))
