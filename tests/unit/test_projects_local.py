"""The real-world project fixtures in tests/projects stay deployable as they are: checked offline."""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from poetry.core.constraints.version import Version
from poetry.core.factory import Factory

from sandbox.hostinfo import package_index_url

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = ROOT / "tests" / "projects"
POETRY = Path(sys.executable).with_name("poetry")

# folder: (manage.py folder, settings module, WSGI application, marker, where gunicorn comes from, lock-version)
LAYOUTS = {
    "a_whitenoise": ("", "newsroom.settings", "newsroom.wsgi:application", "project-a", "main", "2.1"),
    "b_settings_package": ("", "config.settings.production", "config.wsgi:application", "project-b", "main", "2.1"),
    "c_src_layout": ("src", "mysite.settings", "mysite.wsgi:application", "project-c", "main", "2.0"),
    "d_minimal": ("", "minisite.settings", "minisite.wsgi:application", "project-d", None, "2.1"),
    "e_pep621": ("", "librarysite.settings", "librarysite.wsgi:application", "project-e", "server", "2.1"),
    "f_postgres_parts": ("", "clinic.settings", "clinic.wsgi:application", "project-f", "main", "2.1"),
    "g_frontend": ("", "dashboard.settings", "dashboard.wsgi:application", "project-g", "main", "2.1"),
}
# The Python the product installs by default and the one the test servers build.
PYTHONS = ["3.10.6", "3.11.2"]
# What running the projects leaves behind (build output, collectstatic, uploads, databases, local settings).
GENERATED = re.compile(r"(^|/)(\.env|\.venv|node_modules|staticfiles|media|public|dist|__pycache__)(/|$)"
                       r"|^tests/projects/d_minimal/static/|\.sqlite3$")


def tracked_files() -> list[str]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "tests/projects"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def lock(name: str) -> dict:
    return tomllib.loads((PROJECTS / name / "poetry.lock").read_text())


def test_every_layout_has_a_folder_and_nothing_else():
    folders = {p.name for p in PROJECTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders == set(LAYOUTS)


@pytest.mark.parametrize("name", LAYOUTS)
def test_project_has_the_files_a_deployment_looks_for(name):
    subdir, settings, wsgi, marker, _, _ = LAYOUTS[name]
    project = PROJECTS / name
    for required in ("pyproject.toml", "poetry.lock", "README.md", ".gitignore"):
        assert (project / required).is_file(), required
    code = project / subdir
    assert (code / "manage.py").is_file()
    assert (code / (settings.replace(".", "/") + ".py")).is_file()
    module, attribute = wsgi.split(":")
    assert f"{attribute} = get_wsgi_application()" in (code / (module.replace(".", "/") + ".py")).read_text()
    assert list(code.glob("**/migrations/0001_initial.py"))
    pages = [p.read_text() for p in code.glob("**/templates/**/*.html")]
    assert any(f'<h1 id="project">{marker}</h1>' in page for page in pages)
    assert any("{% static " in page for page in pages)


@pytest.mark.parametrize("name", LAYOUTS)
def test_lock_file_matches_pyproject(name):
    result = subprocess.run([str(POETRY), "check", "--lock", "--no-interaction"], cwd=PROJECTS / name,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lock(name)["metadata"]["lock-version"] == LAYOUTS[name][5]


@pytest.mark.parametrize("name", LAYOUTS)
def test_python_constraint_accepts_the_product_and_test_pythons(name):
    package = Factory().create_poetry(PROJECTS / name).package
    for python in PYTHONS:
        assert package.python_constraint.allows(Version.parse(python)), python


@pytest.mark.parametrize("name", LAYOUTS)
def test_gunicorn_comes_from_main_an_extra_or_nowhere(name):
    data = lock(name)
    entry = next((p for p in data["package"] if p["name"] == "gunicorn"), None)
    source = LAYOUTS[name][4]
    if source is None:
        assert entry is None
    elif source == "main":
        assert entry and not entry["optional"]
    else:
        assert entry and entry["optional"] and data["extras"][source] == ["gunicorn"]


def test_dev_group_stays_out_of_main():
    packages = {p["name"]: p for p in lock("e_pep621")["package"]}
    assert packages["pytest"]["groups"] == ["dev"]


def test_no_generated_or_secret_file_is_committed():
    committed = tracked_files()
    assert not [f for f in committed if GENERATED.search(f)]
    assert "tests/projects/b_settings_package/.env.example" in committed


def test_no_registry_host_name_is_committed():
    hosts = {urlsplit(package_index_url()).hostname}
    if shutil.which("npm"):
        npm = subprocess.run(["npm", "config", "get", "registry"], capture_output=True, text=True).stdout
        hosts.add(urlsplit(npm.strip()).hostname)
    hosts.discard(None)
    assert hosts
    for path in tracked_files():
        text = (ROOT / path).read_text(errors="replace")
        assert not [h for h in hosts if h in text], path


def test_npm_lock_has_no_download_addresses():
    data = json.loads((PROJECTS / "g_frontend" / "package-lock.json").read_text())
    assert data["lockfileVersion"] in (2, 3)
    assert not [name for name, p in data["packages"].items() if "resolved" in p]
    scripts = json.loads((PROJECTS / "g_frontend" / "package.json").read_text())["scripts"]
    assert "build" in scripts
