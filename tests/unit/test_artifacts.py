"""Artifacts on the controller: keys and names, the cache, and who builds what in a run."""

from __future__ import annotations

import hashlib
import json

import pytest

from operations import artifacts
from operations.artifacts import ArtifactError, Cache, Need, Role, assign
from operations.python_env import cpython_key, poetry_key, spec
from operations.settings import validate

BOOKWORM = {"os": "debian", "os_version": "12", "codename": "bookworm", "arch": "amd64"}
TRIXIE = {"os": "debian", "os_version": "13", "codename": "trixie", "arch": "amd64"}
COMMIT = "f6a5b409e9fd1ad78aa4350ddc1fc5fc3d0fa666"
SETTINGS = validate({"repo_url": "git://example.internal/bizsite.git", "python_version": "3.11.2",
                     "python_build_env": {"_PYTHON_BUILD_FORCE_SKIP_XZ": "1"}})


def settings(**changes):
    return validate({**SETTINGS.values, **changes})


# -- keys and names ------------------------------------------------------------------------------


def test_name_is_readable_and_carries_the_key():
    key = cpython_key(SETTINGS, BOOKWORM, COMMIT)
    name = artifacts.artifact_name(key)
    assert name.startswith("cpython-3.11.2-debian12-amd64-") and len(name.rsplit("-", 1)[1]) == 16
    assert artifacts.artifact_name(dict(reversed(list(key.items())))) == name  # order-free


@pytest.mark.parametrize("change", [
    {"python_version": "3.11.9"},
    {"pyenv_root": "/usr/local/pyenv"},
    {"python_build_env": {"PYTHON_CONFIGURE_OPTS": "--enable-optimizations"}},
    {"apt_packages": ["tk-dev"]},  # a header package changes which modules get built
], ids=["version", "root", "build_env", "dev_package"])
def test_what_shapes_the_build_changes_the_key(change):
    assert cpython_key(settings(**change), BOOKWORM, COMMIT) != cpython_key(SETTINGS, BOOKWORM, COMMIT)


def test_what_does_not_shape_the_build_keeps_the_key():
    same = settings(apt_packages=["htop"], python_build_mirror_url="http://mirror.internal/py",
                    poetry_version="2.5.0", revision="v2")
    assert cpython_key(same, BOOKWORM, COMMIT) == cpython_key(SETTINGS, BOOKWORM, COMMIT)


def test_platform_and_pyenv_commit_change_the_key():
    base = artifacts.artifact_name(cpython_key(SETTINGS, BOOKWORM, COMMIT))
    assert artifacts.artifact_name(cpython_key(SETTINGS, TRIXIE, COMMIT)) != base
    assert artifacts.artifact_name(cpython_key(SETTINGS, BOOKWORM, "0" * 40)) != base
    arm = {**BOOKWORM, "arch": "arm64"}
    assert artifacts.artifact_name(cpython_key(SETTINGS, arm, COMMIT)).startswith("cpython-3.11.2-debian12-arm64-")


def test_poetry_key_follows_its_interpreter():
    key = poetry_key(SETTINGS, BOOKWORM, COMMIT)
    assert key["python_key"] == artifacts.key_hash(cpython_key(SETTINGS, BOOKWORM, COMMIT))
    assert key["venv"] == "/opt/poetry/venv" and key["python"] == SETTINGS.python_bin
    assert poetry_key(SETTINGS, BOOKWORM, "0" * 40) != key
    assert poetry_key(settings(poetry_version="2.5.0"), BOOKWORM, COMMIT) != key
    assert artifacts.artifact_name(key).startswith("poetry-2.5.1-debian12-amd64-")


def test_specs_prove_the_tree_by_running_it():
    cpython = spec(SETTINGS, BOOKWORM, "cpython")
    assert cpython.tree == "/opt/pyenv/versions/3.11.2"
    assert cpython.check[0] == "/opt/pyenv/versions/3.11.2/bin/python"
    assert all(m in cpython.check[2] for m in ("ssl", "sqlite3", "ctypes", "lzma", "bz2", "readline"))
    poetry = spec(SETTINGS, BOOKWORM, "poetry")
    assert poetry.tree == "/opt/poetry/venv" and poetry.check == ("/opt/poetry/venv/bin/poetry", "--version")


# -- the cache -----------------------------------------------------------------------------------


def store(cache: Cache, key: dict, content: bytes = b"archive", **extra) -> dict:
    name = artifacts.artifact_name(key)
    incoming = cache.incoming(name, "web1")
    incoming.write_bytes(content)
    manifest = {"name": name, "kind": key["kind"], "key": key, "archive": name + artifacts.SUFFIX,
                "archive_sha256": hashlib.sha256(content).hexdigest(), "size": len(content),
                "pyenv_ref": "v2.6.30", "built_by": "web1", "built_at": "2026-01-01T00:00:00Z",
                **extra}
    cache.add(incoming, manifest)
    return manifest


def test_cache_takes_an_archive_in_with_its_manifest(tmp_path):
    cache = Cache(tmp_path)
    key = cpython_key(SETTINGS, BOOKWORM, COMMIT)
    manifest = store(cache, key)
    assert cache.manifest(manifest["name"]) == manifest
    assert cache.archive(manifest["name"]).read_bytes() == b"archive"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [manifest["name"] + ".json", manifest["name"] + ".tar.zst"])  # nothing left over
    assert json.loads((tmp_path / f"{manifest['name']}.json").read_text())["archive_sha256"]


def test_cache_refuses_a_download_with_another_sha256(tmp_path):
    cache = Cache(tmp_path)
    name = artifacts.artifact_name(cpython_key(SETTINGS, BOOKWORM, COMMIT))
    incoming = cache.incoming(name, "web1")
    incoming.write_bytes(b"changed on the way")
    with pytest.raises(ArtifactError, match="sha256"):
        cache.add(incoming, {"name": name, "archive_sha256": "0" * 64})
    assert list(tmp_path.iterdir()) == [] and cache.manifest(name) is None


def test_a_manifest_without_its_archive_is_no_artifact(tmp_path):
    cache = Cache(tmp_path)
    manifest = store(cache, cpython_key(SETTINGS, BOOKWORM, COMMIT))
    cache.archive(manifest["name"]).unlink()
    assert cache.manifest(manifest["name"]) is None


def test_cache_setting(tmp_path):
    assert Cache.of("") is None
    assert Cache.of(str(tmp_path)).folder == tmp_path
    relative = Cache.of(".artifacts").folder
    assert relative.is_absolute() and relative.name == ".artifacts"
    assert (relative.parent / "deploy.py").is_file()  # the project folder


def test_predicted_commit_comes_from_an_artifact_of_the_same_ref(tmp_path):
    cache = Cache(tmp_path)
    store(cache, cpython_key(SETTINGS, BOOKWORM, COMMIT))
    unknown = cpython_key(SETTINGS, BOOKWORM, None)
    assert cache.predicted_commit(unknown, "v2.6.30") == COMMIT
    assert cache.predicted_commit(unknown, COMMIT[:10]) == COMMIT  # a commit as the ref
    assert cache.predicted_commit(unknown, "v2.6.31") is None
    assert cache.predicted_commit(cpython_key(SETTINGS, TRIXIE, None), "v2.6.30") is None
    assert cache.predicted_commit(cpython_key(settings(python_version="3.12.1"), BOOKWORM, None),
                                  "v2.6.30") is None


def test_predicted_commit_is_the_newest(tmp_path):
    cache = Cache(tmp_path)
    store(cache, cpython_key(SETTINGS, BOOKWORM, "1" * 40), built_at="2026-01-01T00:00:00Z")
    store(cache, cpython_key(SETTINGS, BOOKWORM, "2" * 40), built_at="2026-02-01T00:00:00Z")
    assert cache.predicted_commit(cpython_key(SETTINGS, BOOKWORM, None), "v2.6.30") == "2" * 40


# -- who builds, who receives --------------------------------------------------------------------


def test_one_builder_per_platform_the_others_receive():
    roles = assign([Need("web1", "d12", True), Need("web2", "d12", True), Need("web3", "d13", True),
                    Need("web4", "d12", True), Need("web5", "d13", True)])
    assert roles == {
        "web1": Role("build", share=True, receivers=2),
        "web2": Role("receive", builder="web1"),
        "web3": Role("build", share=True, receivers=1),
        "web4": Role("receive", builder="web1"),
        "web5": Role("receive", builder="web3"),
    }


def test_a_cached_artifact_serves_every_server_it_fits():
    roles = assign([Need("web1", "d12", True, cached="cpython-x"), Need("web2", "d12", True, cached="cpython-x")])
    assert roles == {"web1": Role("receive", cached="cpython-x"), "web2": Role("receive", cached="cpython-x")}


def test_without_a_cache_every_server_builds_its_own():
    roles = assign([Need("web1", "d12", False), Need("web2", "d12", False)])
    assert roles == {"web1": Role("build"), "web2": Role("build")}


def test_plan_lines_say_where_each_tree_comes_from():
    cpython = spec(SETTINGS, BOOKWORM, "cpython")
    key = cpython_key(SETTINGS, BOOKWORM, None)
    build = artifacts.describe(cpython, Role("build", share=True, receivers=2), key, "")
    assert build == ("CPython 3.11.2: compiled here (debian 12 (bookworm) amd64, pyenv v2.6.30), "
                     "then packed into the cache for 2 other server(s) of this run")
    assert artifacts.describe(cpython, Role("receive", builder="web1"), key, "") == (
        "CPython 3.11.2: from the artifact web1 builds in this run (debian 12 (bookworm) amd64, "
        "pyenv v2.6.30)")
    assert artifacts.describe(cpython, Role("receive", cached="cpython-3.11.2-x"), key, "") == (
        "CPython 3.11.2: from artifact cpython-3.11.2-x in the cache")
    url = artifacts.describe(spec(SETTINGS, BOOKWORM, "poetry"), Role("build"), key,
                             "https://user:pw@mirror.internal/artifacts")
    assert url.startswith("Poetry 2.5.1: from https://mirror.internal/artifacts if it has the "
                          "artifact, else installed with pip here")
    assert "pw" not in url


def test_urls_with_credentials_are_hidden():
    assert artifacts.shown_url("https://mirror.internal/a") == "https://mirror.internal/a"
    hidden = artifacts.shown_url("https://u:secret@mirror.internal/a")
    assert "secret" not in str(hidden) and hidden.unmask() == "https://u:secret@mirror.internal/a"
    assert artifacts.safe_url("https://u:secret@mirror.internal:8443/a") == "https://mirror.internal:8443/a"


def test_differences_name_the_fields():
    built = cpython_key(SETTINGS, BOOKWORM, "1" * 40)
    wanted = cpython_key(SETTINGS, BOOKWORM, "2" * 40)
    assert artifacts.differences(built, wanted) == f"pyenv_commit {'1' * 40!r} (needed {'2' * 40!r})"


def test_artifact_settings_are_validated():
    from operations.settings import SettingsError
    with pytest.raises(SettingsError, match="artifact_url: 'ftp://x' is not allowed; allowed: empty or an http"):
        settings(artifact_url="ftp://x")
    assert settings(artifact_cache="").artifact_cache == ""


def test_platform_fact_always_has_its_fields():
    fact = artifacts.Platform()
    assert fact.process([]) == {"os": "", "os_version": "", "codename": "", "arch": ""}
    assert fact.process(['{"os":"debian","os_version":"13","codename":"trixie","arch":"arm64"}']) == {
        "os": "debian", "os_version": "13", "codename": "trixie", "arch": "arm64"}
