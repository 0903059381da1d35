"""Build once, ship to many, end to end: CPython and Poetry built on the first server of a
platform fill the session's artifact cache (the sandbox keeps it in its state dir, empty at the
start), and every other bare server of that platform installs them instead of building.

Servers: d12 (the session's Debian 12 compile, conftest), a12 (bare, from the cache), u12 (bare,
from `artifact_url` only), tri-1..3 (bare, one run, an empty cache of their own: one compile),
bad12 (bare, a cache whose CPython archive has one byte changed: refused, compiled). The Debian 13
case (a Debian 12 artifact is not used) is test_deploy.py's test_debian13."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from .conftest import Runner, http_get, note, sh

pytestmark = pytest.mark.e2e

TREE = "/opt/pyenv/versions/3.11.2"
PYENV = "env PYENV_ROOT=/opt/pyenv /opt/pyenv/bin/pyenv"
FROM_ARTIFACT = re.compile(r"\[(\S+)\] CPython 3\.11\.2 from artifact (cpython-3\.11\.2-debian12-amd64-[0-9a-f]{16}) ")
COMPILED = re.compile(r"\[(\S+)\] CPython 3\.11\.2: (?:from \S+ if it has the artifact, else )?compiled here")


def cache_of(sb) -> Path:
    return Path(sb.state_dir) / "artifacts"


def manifests(cache: Path, pattern: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cache.glob(f"{pattern}*.json"))]


def file_stamps(sb, name: str, tree: str = TREE) -> str:
    """Every file of a tree with its mode, size and modification time (to the nanosecond)."""
    return sh(sb, name, f"cd {tree} && find . -type f -printf '%m %s %T@ %p\\n' | LC_ALL=C sort"
                        " | sha256sum").stdout.split()[0]


def built_here(sb, name: str) -> bool:
    """pyenv's python-build leaves its log in /tmp of every server it ran on."""
    return sh(sb, name, "ls /tmp/python-build.*.log", ok=False).returncode == 0


def assert_works(sb, name: str, server) -> None:
    """The runbook's view: pyenv lists the version, the interpreter has its modules, the site
    serves, and status.py's R3 check is ok."""
    assert "3.11.2" in sh(sb, name, f"{PYENV} versions --bare").stdout.split()
    sh(sb, name, f"{TREE}/bin/python -c 'import ssl, sqlite3, ctypes, lzma, bz2, readline'")
    assert sh(sb, name, "poetry --version").stdout.strip() == "Poetry (version 2.5.1)"
    assert http_get(server.http_port, "/healthz/").status == 200
    assert http_get(server.http_port, "/").status == 200
    leftovers = sh(sb, name, "ls -A /opt/pyenv/versions /opt/poetry").stdout
    assert ".djdeploy-artifact-" not in leftovers, leftovers


@pytest.fixture(scope="module")
def runner(sb, tmp_path_factory) -> Runner:
    return Runner(sb, tmp_path_factory.mktemp("artifact-settings"))


def test_first_server_fills_the_cache(sb, d12):
    """The bare d12 compiled (the cache was empty) and its CPython and Poetry are in the cache,
    each with a manifest of its key and sha256."""
    out = d12.first.output
    assert COMPILED.search(out), out[-3000:]
    assert re.search(r"\[d12\] CPython 3\.11\.2: packed into the cache as cpython-3\.11\.2-debian12-amd64-", out)
    assert re.search(r"\[d12\] Poetry 2\.5\.1: packed into the cache as poetry-2\.5\.1-debian12-amd64-", out)
    assert built_here(sb, "d12")
    cache = cache_of(sb)
    [cpython] = manifests(cache, "cpython-3.11.2-debian12-")
    [poetry] = manifests(cache, "poetry-2.5.1-debian12-")
    for manifest in (cpython, poetry):
        archive = cache / manifest["archive"]
        assert archive.is_file() and archive.stat().st_size == manifest["size"]
        assert manifest["built_by"] == "d12" and len(manifest["archive_sha256"]) == 64
    key = cpython["key"]
    assert (key["version"], key["os"], key["os_version"], key["codename"], key["pyenv_root"]) == (
        "3.11.2", "debian", "12", "bookworm", "/opt/pyenv")
    assert key["pyenv_commit"] == sh(sb, "d12", "git -C /opt/pyenv rev-parse HEAD").stdout.strip()
    assert json.loads(key["build_env"]) == {"_PYTHON_BUILD_FORCE_SKIP_XZ": "1"}
    assert poetry["key"]["python"] == f"{TREE}/bin/python"


def test_second_bare_server_installs_from_the_cache(sb, d12, deployer, runner, pytestconfig):
    """No compile on a second bare Debian 12 server: its CPython tree is the builder's, file for
    file and to the nanosecond, pyenv lists it, R3 is ok, the site serves, a re-run changes
    nothing."""
    server = sb.add_server("a12", os="debian12")
    try:
        run = deployer.run("a12")
        note(pytestconfig, f"first deploy, bare debian12 server, warm artifact cache: {run.seconds:.1f}s "
                           f"(the cold one: {d12.first.seconds:.1f}s)")
        assert run.returncode == 0, run.explain()
        assert FROM_ARTIFACT.search(run.output), run.explain()
        assert re.search(r"\[a12\] Poetry 2\.5\.1 from artifact poetry-2\.5\.1-debian12-amd64-", run.output)
        assert not COMPILED.search(run.output) and "installed with pip here" not in run.output
        assert not built_here(sb, "a12")
        assert file_stamps(sb, "a12") == file_stamps(sb, "d12")
        assert file_stamps(sb, "a12", "/opt/poetry/venv") == file_stamps(sb, "d12", "/opt/poetry/venv")
        assert_works(sb, "a12", server)
        status = runner.run("a12", "status.py")
        assert status.returncode == 0, status.explain()
        assert re.search(r"ok\s+R3 Python 3\.11\.2: Python 3\.11\.2", status.output), status.output
        assert re.search(r"ok\s+R5 Poetry: Poetry \(version 2\.5\.1\)", status.output), status.output
        again = deployer.run("a12", "--json")
        assert again.returncode == 0 and again.json()["results"]["totals"]["success"] == 0, again.explain()
    finally:
        sb.remove_server("a12")


def test_artifact_url_without_a_cache(sb, d12, deployer):
    """The artifacts published on an internal HTTP folder (the two files of each, as they are in
    the cache); a server with no controller cache downloads them itself."""
    published = sb.source.files_dir / "artifacts"
    published.mkdir(exist_ok=True)
    for path in cache_of(sb).glob("*-debian12-*"):
        shutil.copy(path, published / path.name)
    settings = {"artifact_cache": "", "artifact_url": sb.source.file_url("artifacts")}
    server = sb.add_server("u12", os="debian12")
    try:
        run = deployer.run("u12", settings=settings)
        assert run.returncode == 0, run.explain()
        url = re.escape(settings["artifact_url"])
        assert re.search(rf"\[u12\] CPython 3\.11\.2 from artifact \S+ \({url}\)", run.output), run.explain()
        assert re.search(rf"\[u12\] Poetry 2\.5\.1 from artifact \S+ \({url}\)", run.output), run.explain()
        assert not built_here(sb, "u12")
        assert file_stamps(sb, "u12") == file_stamps(sb, "d12")
        assert_works(sb, "u12", server)
    finally:
        sb.remove_server("u12")


def test_three_bare_servers_one_compile(sb, d12, deployer, tmp_path, pytestconfig):
    """Three bare servers in one run with an empty cache (and an artifact URL that has nothing):
    the first compiles, the other two install its artifact."""
    cache = tmp_path / "cache"
    empty = sb.source.files_dir / "no-artifacts"
    empty.mkdir(exist_ok=True)
    # Three independent sites (an app_name each, a server each, each its own SQLite database).
    settings = {"artifact_cache": str(cache), "artifact_url": sb.source.file_url("no-artifacts")}
    names = ["tri-1", "tri-2", "tri-3"]
    servers = {name: sb.add_server(name, os="debian12", settings={"app_name": name.replace("-", "")})
               for name in names}
    try:
        run = deployer.run("tri-*", settings=settings)
        note(pytestconfig, f"first deploy, three bare debian12 servers in one run: {run.seconds:.1f}s "
                           f"(one: {d12.first.seconds:.1f}s)")
        assert run.returncode == 0, run.explain()
        assert {m.group(1) for m in COMPILED.finditer(run.output)} == {"tri-1"}, run.explain()
        assert re.search(r"\[tri-1\] CPython 3\.11\.2: compiled here: artifact \S+ not in the cache, "
                         r"nor at \S+ \(.*404", run.output), run.explain()
        assert sorted(m.group(1) for m in FROM_ARTIFACT.finditer(run.output)) == ["tri-2", "tri-3"]
        assert [name for name in names if built_here(sb, name)] == ["tri-1"]
        assert file_stamps(sb, "tri-2") == file_stamps(sb, "tri-1") == file_stamps(sb, "tri-3")
        assert file_stamps(sb, "tri-1") != file_stamps(sb, "d12")  # its own compile
        [cpython] = manifests(cache, "cpython-")
        assert cpython["built_by"] == "tri-1"
        for name, server in servers.items():
            assert_works(sb, name, server)
    finally:
        for name in names:
            sb.remove_server(name)


def test_corrupt_artifact_is_refused(sb, d12, deployer, tmp_path):
    """One changed byte in the cached CPython archive: the server names the checksum mismatch,
    installs nothing from it, compiles, and ends with a working CPython; Poetry still comes from
    its (intact) artifact."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for path in cache_of(sb).glob("*-debian12-*"):
        shutil.copy(path, cache / path.name)
    [archive] = cache.glob("cpython-3.11.2-debian12-*.tar.zst")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    server = sb.add_server("bad12", os="debian12")
    try:
        run = deployer.run("bad12", settings={"artifact_cache": str(cache)})
        assert run.returncode == 0, run.explain()
        reasons = [line for line in run.output.splitlines() if "sha256 mismatch" in line]
        assert len(reasons) == 1, run.explain()
        assert re.search(r"\[bad12\] CPython 3\.11\.2: compiled here: artifact cpython-3\.11\.2-debian12-amd64-"
                         r"[0-9a-f]{16}: sha256 mismatch", reasons[0]), reasons
        assert not FROM_ARTIFACT.search(run.output)
        assert built_here(sb, "bad12")
        assert file_stamps(sb, "bad12") != file_stamps(sb, "d12")
        assert re.search(r"\[bad12\] Poetry 2\.5\.1 from artifact ", run.output), run.explain()
        assert_works(sb, "bad12", server)
        assert sh(sb, "bad12", "ls /tmp | grep -c '^pyinfra-'", ok=False).stdout.strip() == "0"
    finally:
        sb.remove_server("bad12")
