"""The release's gunicorn.conf.py, with and without a gunicorn.conf.py of the project's own."""

from __future__ import annotations

from types import SimpleNamespace

from operations.app import gunicorn_conf
from operations.settings import validate


def load(text: str) -> dict:
    namespace: dict = {"__file__": "gunicorn.conf.py"}
    exec(compile(text, "gunicorn.conf.py", "exec"), namespace)
    return namespace


def test_the_projects_own_config_applies_first_and_the_deploys_wins(tmp_path):
    own = tmp_path / "project.gunicorn.conf.py"
    own.write_text("import os\ncalls = []\ntimeout = 120\nmax_requests = 500\n"
                   "def child_exit(server, worker):\n    calls.append('child_exit')\n"
                   "def post_worker_init(worker):\n    calls.append('project')\n")
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text("def wrap(app):\n    return ('wrapped', app)\n")
    s = validate({"repo_url": "git://example.internal/x.git", "gunicorn_timeout": 30,
                  "wsgi_app": "site.wsgi:application"})
    conf = load(gunicorn_conf(s, "c0ffee", str(tmp_path), str(own)).replace(
        f"{tmp_path}/.djdeploy/djdeploy_wsgi.py", str(wrapper)))
    assert conf["max_requests"] == 500 and "child_exit" in conf  # the project's settings, hooks
    assert conf["timeout"] == 30 and conf["wsgi_app"] == "site.wsgi:application"  # the deploy's
    worker = SimpleNamespace(wsgi="app")
    conf["post_worker_init"](worker)
    assert worker.wsgi == ("wrapped", "app")
    conf["child_exit"](None, worker)
    assert conf["calls"] == ["project", "child_exit"]


def test_a_release_built_before_keeps_no_copy_of_it(tmp_path):
    s = validate({"repo_url": "git://example.internal/x.git", "wsgi_app": "site.wsgi:application"})
    conf = load(gunicorn_conf(s, "c0ffee", str(tmp_path), str(tmp_path / "missing.py")))
    assert conf["timeout"] == 30


def test_without_a_config_of_the_projects_own(tmp_path):
    s = validate({"repo_url": "git://example.internal/x.git", "wsgi_app": "site.wsgi:application"})
    text = gunicorn_conf(s, "c0ffee", str(tmp_path))
    assert "_project" not in text
    assert load(text)["preload_app"] is True
