"""First install, the runbook's 建置作業 (B1-B9), safe to re-run:

    pyinfra inventory.py deploy.py        (add --dry for a preview)

Each step checks the server and changes only what differs (R8), so a second run changes nothing.
Backup servers (inventory.py's BACKUP_SERVERS) get what keeps the site's backups instead.
"""

from pyinfra import host, state

from operations import (app, backup, database, firewall, gunicorn, logs, maintenance, nginx,
                        python_env, roles, system)
from operations.settings import from_host

s = from_host(host)


if roles.is_app_server(host):
    app.planned_commit(s)
    app.planned_project(s)

    packages = [*python_env.BUILD_PACKAGES, "nginx", "openssl", *s.apt_packages]
    if s.database == "postgresql":
        packages.append("postgresql")
    if s.nodejs:
        packages += ["nodejs", "npm"]
    packages += ["borgbackup", "rsync", *logs.PACKAGES] if s.backups else logs.PACKAGES
    packages += firewall.PACKAGES if s.firewall else []

    system.ca_certificates(name="Trust the extra CA certificates", paths=s.extra_ca_certificates)
    system.packages(name="Debian packages: build tools, git, nginx (B1, B7)", present=packages)
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
    db = database.postgresql(name="PostgreSQL role and database", s=s)
    env = app.environment(name="Environment: database, run mode, secret key (B3)", s=s)
    app.release(name="Release: code, .venv in the project root, Poetry install, static files, checks "
                     "(B2, B4, R6, R7)", s=s)
    units = gunicorn.units(name="Gunicorn systemd units (B8)", s=s)
    conf = gunicorn.config(name="gunicorn.conf.py (B8)", s=s)
    app.migrate(name="Database schema: manage.py migrate (B5)", s=s, _run_once=s.migrate_once)
    nginx.tls(name="TLS certificate", s=s)
    maintenance.page(name="Maintenance page (shown during a restore)", s=s)
    nginx.site(name="Nginx site: static files, proxy to Gunicorn (B7)", s=s)
    served = gunicorn.serve(name="Gunicorn serving the release, health-gated (B6, B9)", s=s)
    gunicorn.restarted(name="Gunicorn restarted for changed settings", s=s,
                       _if=lambda: (units.did_change() or conf.did_change() or env.did_change()
                                    or db.did_change()) and not served.did_change())
    app.manage_wrapper(name=f"{s.app_name}-manage command", s=s)
    backup.schedule(name=f"Backups: timer ({s.backup_schedule}), off-server copy", s=s)
    logs.rotation(name="Log rotation: audit log (kept whole), backup log", s=s)

if roles.is_backup_server(host):
    system.packages(name="Debian packages: borg, firewall",
                    present=["borgbackup", *(firewall.PACKAGES if s.firewall else [])])
    backup.receiver(name="Backup server: a restricted repository per site", s=s,
                    keys=backup.client_keys(state.inventory))

firewall.rules(name="Firewall: SSH and the site open, the rest closed", s=s)
