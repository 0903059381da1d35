"""Finding the Django project in a repository: data in, what the deploy serves out."""

import pytest

from operations.project import ProjectError, accepts, check_python, find, has_gunicorn
from operations.settings import validate

REPO = {"repo_url": "git://example.internal/site.git"}

MANAGE = 'import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "{}")\n'
WSGI = "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', '{}')\napplication = None\n"
POETRY = '[tool.poetry]\nname = "x"\n[tool.poetry.dependencies]\npython = "^3.10"\ndjango = "^5.2"\ngunicorn = "^23"\n'


def settings(**values):
    return validate({**REPO, **values})


def project(files: dict[str, str], **values):
    return find(sorted(files), files, settings(**values))


def test_startproject_layout():
    found = project({
        "manage.py": MANAGE.format("mysite.settings"),
        "mysite/settings.py": 'WSGI_APPLICATION = "mysite.wsgi.application"\n',
        "mysite/wsgi.py": WSGI.format("mysite.settings"),
        "pyproject.toml": POETRY,
    })
    assert (found.subdir, found.settings_module, found.wsgi_app) == ("", "mysite.settings", "mysite.wsgi:application")
    assert found.python == "^3.10" and found.gunicorn and not found.gunicorn_conf


def test_settings_package_serves_what_wsgi_py_says():
    """cookiecutter-django: manage.py defaults to local settings, wsgi.py to production."""
    found = project({
        "manage.py": MANAGE.format("config.settings.local"),
        "config/settings/__init__.py": "",
        "config/settings/base.py": 'WSGI_APPLICATION = "config.wsgi.application"\n',
        "config/settings/local.py": "from .base import *  # noqa\n",
        "config/settings/production.py": "from .base import *  # noqa\nDEBUG = False\n",
        "config/wsgi.py": WSGI.format("config.settings.production"),
        "pyproject.toml": POETRY,
    })
    assert found.settings_module == "config.settings.production"
    assert found.wsgi_app == "config.wsgi:application"
    assert "config/wsgi.py" in found.origin["settings_module"]


def test_manage_py_in_a_subfolder_and_pyproject_at_the_root():
    found = project({
        "pyproject.toml": POETRY,
        "README.md": "",
        "src/manage.py": MANAGE.format("shopsite.settings"),
        "src/shopsite/settings.py": "ROOT_URLCONF = 'shopsite.urls'\n",  # no WSGI_APPLICATION
        "src/shopsite/wsgi.py": WSGI.format("shopsite.settings"),
        "node_modules/x/manage.py": "",
        "gunicorn.conf.py": "",
    })
    assert (found.subdir, found.poetry_dir) == ("src", "")
    assert found.wsgi_app == "shopsite.wsgi:application"
    assert not found.gunicorn_conf  # the root's is not the project folder's


def test_a_gunicorn_conf_of_the_projects_own_is_said():
    found = project({
        "manage.py": MANAGE.format("mysite.settings"),
        "mysite/settings.py": 'WSGI_APPLICATION = "mysite.wsgi.application"\n',
        "gunicorn.conf.py": "timeout = 120\n",
        "pyproject.toml": POETRY,
    })
    assert found.gunicorn_conf and "its gunicorn.conf.py applies first" in found.describe()


@pytest.mark.parametrize("manage", [
    # a dict of defaults the script sets one by one
    'import os\nDEFAULTS = {\n    "DJANGO_SETTINGS_MODULE": "portal.settings",\n    "X": "1",\n}\n'
    'for k, v in DEFAULTS.items():\n    os.environ.setdefault(k, v)\n',
    'import os\nos.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"\n',
    # a manage.py that leaves it to the environment: wsgi.py names it
    "import sys\nfrom django.core.management import execute_from_command_line\n",
], ids=["dict_of_defaults", "assignment", "only_wsgi_py"])
def test_settings_module_named_other_ways(manage):
    found = project({
        "manage.py": manage,
        "portal/settings.py": "DEBUG = False\n",  # no WSGI_APPLICATION
        "portal/wsgi.py": WSGI.format("portal.settings"),
        "pyproject.toml": POETRY,
    })
    assert (found.settings_module, found.wsgi_app) == ("portal.settings", "portal.wsgi:application")


def test_an_empty_settings_package_names_its_modules():
    """The environment chooses the module where the project runs (DJANGO_SETTINGS_MODULE)."""
    files = {
        "manage.py": MANAGE.format("site.settings"),
        "site/settings/__init__.py": '"""Settings: pick one with DJANGO_SETTINGS_MODULE."""\n# none here\n',
        "site/settings/base.py": 'WSGI_APPLICATION = "site.wsgi.application"\n',
        "site/settings/dev.py": "from .base import *\n",
        "site/settings/production.py": "from .base import *\n",
        "site/wsgi.py": "from django.core.wsgi import get_wsgi_application\n",
        "pyproject.toml": POETRY,
    }
    with pytest.raises(ProjectError) as error:
        project(files)
    assert "base, dev, production" in str(error.value)
    assert "settings_module" in str(error.value) and "'site.settings.production'" in str(error.value)
    assert project(files, settings_module="site.settings.production").wsgi_app == "site.wsgi:application"
    # A package that chooses for itself is used as it is.
    files["site/settings/__init__.py"] = "from .production import *\n"
    assert project(files).settings_module == "site.settings"


def test_settings_win_over_what_is_found():
    found = project({
        "manage.py": MANAGE.format("mysite.settings"),
        "mysite/settings.py": 'WSGI_APPLICATION = "mysite.wsgi.application"\n',
        "pyproject.toml": POETRY,
    }, settings_module="mysite.prod", wsgi_app="mysite.asgi_wsgi:app")
    assert (found.settings_module, found.wsgi_app) == ("mysite.prod", "mysite.asgi_wsgi:app")


@pytest.mark.parametrize("files, words", [
    ({"pyproject.toml": POETRY}, ["project_subdir", "no manage.py"]),
    ({"a/manage.py": "", "b/manage.py": "", "pyproject.toml": POETRY}, ["several manage.py", "a/manage.py"]),
    ({"manage.py": "import os\n", "pyproject.toml": POETRY}, ["settings_module"]),
    ({"manage.py": MANAGE.format("mysite.settings"), "pyproject.toml": POETRY}, ["wsgi_app"]),
    ({"manage.py": MANAGE.format("m.settings"), "m/settings.py": 'WSGI_APPLICATION = "m.wsgi.application"'},
     ["pyproject.toml"]),
], ids=["no_manage", "two_manage", "no_settings", "no_wsgi", "no_pyproject"])
def test_what_cannot_be_found_names_the_setting(files, words):
    with pytest.raises(ProjectError) as error:
        project(files)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("constraint, version, ok", [
    ("^3.10", "3.10.6", True),
    ("^3.10", "3.11.2", True),
    ("^3.10", "4.0.0", False),
    ("^3.12", "3.11.2", False),
    ("~3.10", "3.10.6", True),
    ("~3.10", "3.11.2", False),
    (">=3.10,<3.14", "3.11.2", True),
    (">= 3.8, < 3.11", "3.11.2", False),
    (">=3.8 <3.12", "3.11.2", True),
    ("3.10.*", "3.10.6", True),
    ("3.10", "3.10.6", True),
    ("3.10", "3.11.2", False),
    ("^3.8 || ^4.0", "3.11.2", True),
    ("~=3.10", "3.11.2", True),
    ("*", "3.11.2", True),
    ("", "3.10.6", True),
    ("not a version", "3.10.6", None),
])
def test_python_constraints_poetry_and_pep440(constraint, version, ok):
    assert accepts(constraint, version) is ok


def test_python_mismatch_names_both():
    found = project({
        "manage.py": MANAGE.format("m.settings"),
        "m/settings.py": 'WSGI_APPLICATION = "m.wsgi.application"',
        "pyproject.toml": '[project]\nname = "m"\nrequires-python = ">=3.12"\n',
    })
    with pytest.raises(ProjectError) as error:
        check_python(found, "3.11.2")
    assert "3.11.2" in str(error.value) and ">=3.12" in str(error.value)
    assert "requires-python" in str(error.value)


@pytest.mark.parametrize("pyproject, groups, extras, expected", [
    (POETRY, [], [], True),
    ('[project]\ndependencies = ["django>=5", "gunicorn>=22"]\n', [], [], True),
    ('[project]\ndependencies = ["django>=5"]\n', [], [], False),
    ('[project]\ndependencies = ["django"]\n[project.optional-dependencies]\nserver = ["gunicorn"]\n',
     [], ["server"], True),
    ('[project]\ndependencies = ["django"]\n[project.optional-dependencies]\nserver = ["gunicorn"]\n',
     [], [], False),
    ('[tool.poetry.dependencies]\ndjango = "*"\n[tool.poetry.group.prod.dependencies]\ngunicorn = "*"\n',
     ["prod"], [], True),
    ('[tool.poetry.dependencies]\ndjango = "*"\n[tool.poetry.group.dev.dependencies]\ngunicorn = "*"\n',
     [], [], False),
    ('[tool.poetry.dependencies]\ngunicorn = {version = "*", optional = true}\n'
     '[tool.poetry.extras]\nweb = ["gunicorn"]\n', [], ["web"], True),
])
def test_gunicorn_among_the_dependencies(pyproject, groups, extras, expected):
    assert has_gunicorn(pyproject, groups, extras) is expected
