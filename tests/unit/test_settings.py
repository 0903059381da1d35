"""The settings schema: defaults deploy the example app, bad values get one clear message."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from operations.settings import SCHEMA, SettingsError, markdown_table, validate

ROOT = Path(__file__).resolve().parents[2]
REPO = {"repo_url": "git://example.internal/bizsite.git"}


def test_defaults_are_the_runbook():
    s = validate(REPO)
    assert s.python_version == "3.10.6"
    assert s.base_dir == "/srv/bizsite"
    assert s.python_bin == "/opt/pyenv/versions/3.10.6/bin/python"
    assert s.database == "sqlite" and s.tls == "off" and s.source_mode == "git"


@pytest.mark.parametrize("data, message", [
    ({"python_version": "abc"}, "python_version: 'abc' is not allowed; allowed: a version like 3.10.6"),
    ({"app_name": "my app"}, "app_name: 'my app' is not allowed; allowed: lower-case letters"),
    ({"repo_url": ""}, "repo_url: '' is not allowed; allowed: a non-empty git URL or path"),
    ({"http_port": 70000}, "http_port: 70000 is not allowed; allowed: a port number from 1 to 65535"),
    ({"http_port": "80"}, "http_port: '80' is not a whole number"),
    ({"pyhton_version": "3.10.6"}, "pyhton_version: unknown setting (did you mean 'python_version'?)"),
    ({"database": "mysql"}, "database: 'mysql' is not allowed; allowed: one of 'sqlite', 'postgresql', 'url'"),
    ({"database": "url"}, "database_url: empty"),
    ({"tls": "files"}, "tls_certificate, tls_key: both are needed"),
    ({"server_names": ["*.example.com"]}, "server_names:"),
    ({"keep_releases": 1}, "keep_releases: 1 is not allowed"),
    ({"env": {"BAD NAME": "x"}}, "env:"),
    ({"poetry_build_constraints": {"pyyaml": "<3"}}, "poetry_build_constraints: {'pyyaml': '<3'} is not allowed; "
     "allowed: a mapping of package name to a mapping of build requirement to version constraint"),
])
def test_bad_values_name_the_setting_and_what_is_allowed(data, message):
    with pytest.raises(SettingsError) as error:
        validate({**REPO, **data}, where="web1")
    assert str(error.value).startswith("web1: ")
    assert message in str(error.value)


def test_secret_values_are_not_repeated_in_errors():
    with pytest.raises(SettingsError) as error:
        validate({**REPO, "database_url": 12345})
    assert "12345" not in str(error.value) and "(hidden)" in str(error.value)


def test_connection_keys_are_allowed():
    validate({**REPO, "ssh_user": "deploy", "ssh_port": 2222, "_sudo": True})


def test_every_setting_documented_in_the_table():
    table = markdown_table()
    for setting in SCHEMA:
        assert f"`{setting.name}`" in table
        assert setting.help


def test_inventory_rejects_bad_settings_before_connecting(tmp_path):
    """`pyinfra inventory.py deploy.py` with a bad value stops at the inventory, naming it."""
    overrides = tmp_path / "settings.json"
    overrides.write_text(json.dumps({"python_version": "abc"}))
    env = {**os.environ, "DJDEPLOY_SETTINGS": str(overrides)}
    code = (
        "import runpy, sys; sys.path.insert(0, '.');"
        "from operations.inventory import groups;"
        "groups([('web1.example.internal', {})], {'repo_url': 'git://x/y.git'})"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "Settings error, nothing was changed. web1.example.internal: python_version: 'abc'" in result.stderr
