"""First install, the runbook's 建置作業 (B1-B9), safe to re-run:

    pyinfra inventory.py deploy.py        (add --dry for a preview)

Each step checks the server and changes only what differs (R8), so a second run changes nothing.
"""

from pyinfra import host

from operations import app, database, gunicorn, nginx, python_env, system
from operations.settings import from_host

s = from_host(host)
app.planned_commit(s)

packages = [*python_env.BUILD_PACKAGES, "nginx", "openssl", *s.apt_packages]
if s.database == "postgresql":
    packages.append("postgresql")

system.ca_certificates(name="Trust the extra CA certificates", paths=s.extra_ca_certificates)
system.packages(name="Debian packages: build tools, git, nginx (B1, B7)", present=packages)
system.tools(name="The deploy's scripts: health gate, release build")

python_env.pyenv(name=f"pyenv {s.pyenv_ref} in {s.pyenv_root} (R4)",
                 git_url=s.pyenv_git_url, ref=s.pyenv_ref, root=s.pyenv_root)
python_env.python(name=f"CPython {s.python_version} built by pyenv (R3, B1)", s=s)
python_env.shared(name=f"CPython {s.python_version}: artifact into the cache", kind="cpython", s=s)
python_env.from_artifact(name=f"CPython {s.python_version} from the artifact (R3, B1)",
                         kind="cpython", s=s)
python_env.poetry(name=f"Poetry {s.poetry_version} (R5)", s=s)
python_env.shared(name=f"Poetry {s.poetry_version}: artifact into the cache", kind="poetry", s=s)
python_env.from_artifact(name=f"Poetry {s.poetry_version} from the artifact (R5)", kind="poetry",
                         s=s)

app.account(name=f"System user {s.app_name}", s=s)
app.layout(name=f"Release layout in {s.base_dir}", s=s)
db = database.postgresql(name="PostgreSQL role and database", s=s)
env = app.environment(name="Environment: database, run mode, secret key (B3)", s=s)
app.source(name=f"Source code of {s.revision} (B2)", s=s)
app.release(name="Release: code, .venv in the project root, Poetry install, static files, checks "
                 "(B2, B4, R6, R7)", s=s)
units = gunicorn.units(name="Gunicorn systemd units (B8)", s=s)
conf = gunicorn.config(name="gunicorn.conf.py (B8)", s=s)
app.migrate(name="Database schema: manage.py migrate (B5)", s=s, _run_once=s.migrate_once)
nginx.tls(name="TLS certificate", s=s)
nginx.site(name="Nginx site: static files, proxy to Gunicorn (B7)", s=s)
served = gunicorn.serve(name="Gunicorn serving the release, health-gated (B6, B9)", s=s)
gunicorn.restarted(name="Gunicorn restarted for changed settings", s=s,
                   _if=lambda: (units.did_change() or conf.did_change() or env.did_change()
                                or db.did_change()) and not served.did_change())
app.manage_wrapper(name=f"{s.app_name}-manage command", s=s)
