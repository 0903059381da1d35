"""files/djdeploy_artifact.sh run here against fake trees: a packed tree installs whole, with its
modes, links and mtimes; a corrupt, missing or failing artifact leaves the target as it was."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "files" / "djdeploy_artifact.sh"
CHECK_OK = ["sh", "-c", "echo Python 3.11.2 works"]


def run(*args, ok: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True)
    if ok:
        assert res.returncode == 0, res.stderr
    return res


def fake_tree(root: Path) -> Path:
    """A small tree shaped like a pyenv version: files, an executable, a link, empty folder."""
    tree = root / "versions" / "3.11.2"
    (tree / "bin").mkdir(parents=True)
    (tree / "lib" / "python3.11" / "empty").mkdir(parents=True)
    (tree / "bin" / "python3.11").write_text("#!/bin/sh\necho 3.11.2\n")
    (tree / "bin" / "python3.11").chmod(0o755)
    (tree / "bin" / "python").symlink_to("python3.11")
    (tree / "lib" / "python3.11" / "os.py").write_text("# os\n")
    (tree / "lib" / "secret-mode").write_text("x")
    (tree / "lib" / "secret-mode").chmod(0o600)
    for i, path in enumerate(sorted(tree.rglob("*"))):
        if not path.is_symlink():
            stamp = 1_600_000_000_123_456_789 + i * 1_000_000_001
            os.utime(path, ns=(stamp, stamp))
    return tree


def listing(tree: Path) -> dict:
    """Every entry's type, mode, mtime and content (link target for links)."""
    result = {}
    for path in sorted(tree.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            what = ("link", os.readlink(path))
        elif path.is_dir():
            what = ("dir", None)
        else:
            what = ("file", path.read_bytes())
        mtime = None if path.is_symlink() else st.st_mtime_ns
        result[str(path.relative_to(tree))] = (*what, st.st_mode, mtime)
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def packed(tmp_path):
    tree = fake_tree(tmp_path / "builder")
    archive = tmp_path / "out" / "cpython.tar.zst"
    digest, size = run("pack", tree, archive).stdout.split()
    assert digest == sha256(archive) and int(size) == archive.stat().st_size
    assert not archive.with_name(archive.name + ".part").exists()
    return tree, archive, digest


def staged(archive: Path, where: Path) -> Path:
    """A copy of the archive, as the controller uploads it (install consumes it)."""
    copy = where / "upload.tar.zst"
    copy.write_bytes(archive.read_bytes())
    return copy


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".djdeploy-artifact-")]


def test_installed_tree_equals_the_built_one(packed, tmp_path):
    tree, archive, digest = packed
    target = tmp_path / "server" / "versions" / "3.11.2"
    upload = staged(archive, tmp_path)
    res = run("install", target, digest, upload, "--", *CHECK_OK)
    assert listing(target) == listing(tree)
    assert "installed" in res.stdout and "Python 3.11.2 works" in res.stdout
    assert not upload.exists()  # consumed
    assert leftovers(target.parent) == []


def test_one_changed_byte_is_refused_and_nothing_is_installed(packed, tmp_path):
    tree, archive, digest = packed
    upload = staged(archive, tmp_path)
    data = bytearray(upload.read_bytes())
    data[len(data) // 2] ^= 0x01
    upload.write_bytes(bytes(data))
    target = tmp_path / "server" / "versions" / "3.11.2"
    res = run("install", target, digest, upload, "--", *CHECK_OK, ok=False)
    assert res.returncode == 3
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("artifact: sha256 mismatch")
    assert not target.exists() and leftovers(target.parent) == []


def test_a_tree_that_fails_its_check_is_taken_out_again(packed, tmp_path):
    _, archive, digest = packed
    target = tmp_path / "server" / "3.11.2"
    target.mkdir(parents=True)
    (target / "old").write_text("the previous tree")
    res = run("install", target, digest, staged(archive, tmp_path), "--",
              "sh", "-c", "echo no module named _ssl >&2; exit 1", ok=False)
    assert res.returncode == 3
    assert "failed its check" in res.stderr and "no module named _ssl" in res.stderr
    assert [p.name for p in target.iterdir()] == ["old"]  # as it was
    assert leftovers(target.parent) == []


def test_an_existing_tree_is_replaced(packed, tmp_path):
    tree, archive, digest = packed
    target = tmp_path / "server" / "3.11.2"
    target.mkdir(parents=True)
    (target / "stale").write_text("x")
    run("install", target, digest, staged(archive, tmp_path), "--", *CHECK_OK)
    assert listing(target) == listing(tree)


def test_an_archive_of_another_tree_is_refused(packed, tmp_path):
    _, archive, digest = packed
    target = tmp_path / "server" / "3.12.0"
    res = run("install", target, digest, staged(archive, tmp_path), "--", *CHECK_OK, ok=False)
    assert res.returncode == 3 and "holds no folder 3.12.0" in res.stderr
    assert not target.exists()


def test_missing_archive(tmp_path):
    res = run("install", tmp_path / "t", "0" * 64, tmp_path / "nothing.tar.zst", "--", *CHECK_OK,
              ok=False)
    assert res.returncode == 3 and "no archive at" in res.stderr


def test_interrupted_install_leftovers_are_removed(packed, tmp_path):
    _, archive, digest = packed
    parent = tmp_path / "server"
    (parent / ".djdeploy-artifact-abc123" / "3.11.2").mkdir(parents=True)
    run("install", parent / "3.11.2", digest, staged(archive, tmp_path), "--", *CHECK_OK)
    assert leftovers(parent) == []


@pytest.fixture
def http_files(tmp_path):
    """A file server on 127.0.0.1 for the URL source."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_install_from_a_url(packed, tmp_path, http_files):
    tree, archive, digest = packed
    root, url = http_files
    (root / "a.tar.zst").write_bytes(archive.read_bytes())
    target = tmp_path / "server" / "3.11.2"
    run("install", target, digest, f"{url}/a.tar.zst", "--", *CHECK_OK)
    assert listing(target) == listing(tree)
    assert (root / "a.tar.zst").exists() and leftovers(target.parent) == []


def test_missing_url(tmp_path, http_files):
    _, url = http_files
    target = tmp_path / "server" / "3.11.2"
    res = run("install", target, "0" * 64, f"{url}/none.tar.zst", "--", *CHECK_OK, ok=False)
    assert res.returncode == 3 and res.stderr.startswith("artifact: download failed")
    assert "404" in res.stderr and not target.exists()


def test_usage(tmp_path):
    assert run("unpack", ok=False).returncode == 2
    assert run("install", tmp_path, "x", "y", "z", ok=False).returncode == 2
    assert run("pack", tmp_path / "none", tmp_path / "a", ok=False).returncode == 3
