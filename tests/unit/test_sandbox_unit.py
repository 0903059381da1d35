"""Pure parts of the sandbox: mirror detection, image hashing, names."""

from pathlib import Path

from sandbox.hostinfo import (
    AptMirrors,
    image_inputs_hash,
    parse_deb822_sources,
    parse_one_line_sources,
    parse_pip_config_list,
    pick_mirrors,
    read_apt_mirrors,
    state_prefix,
)
from sandbox.image import CONFIGURE_SCRIPT, INCLUDE, image_tag

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main
"""

ONE_LINE = """\
# deb http://commented.example/debian bookworm main
deb [arch=amd64 signed-by=/x.gpg] http://mirror.example/debian bookworm main contrib
deb http://security.example/debian-security bookworm-security main
deb-src http://src.example/debian bookworm main
"""


def test_deb822_main_and_security():
    mirrors = pick_mirrors(parse_deb822_sources(DEB822))
    assert mirrors == AptMirrors(
        main="http://mirror.example/debian",
        security="http://mirror.example/debian-security",
    )


def test_one_line_sources():
    mirrors = pick_mirrors(parse_one_line_sources(ONE_LINE))
    assert mirrors == AptMirrors(
        main="http://mirror.example/debian",
        security="http://security.example/debian-security",
    )


def test_disabled_and_src_only_entries_are_ignored():
    text = "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
    text += "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n"
    assert pick_mirrors(parse_deb822_sources(text)) is None


def test_no_security_entry():
    mirrors = pick_mirrors(parse_one_line_sources("deb http://m.example/debian trixie main\n"))
    assert mirrors == AptMirrors(main="http://m.example/debian", security=None)


def test_read_apt_mirrors_from_a_root(tmp_path: Path):
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list.d/debian.sources").write_text(DEB822)
    assert read_apt_mirrors(tmp_path).main == "http://mirror.example/debian"


def test_image_hash_changes_with_every_input():
    base = ("bookworm", "http://m/debian", None, ["a", "b"], "script")
    h = image_inputs_hash(*base)
    assert h == image_inputs_hash("bookworm", "http://m/debian", None, ["b", "a"], "script")
    assert len(h) == 12
    for i, other in enumerate(["trixie", "http://n/debian", "http://s", ["a"], "script2"]):
        changed = list(base)
        changed[i] = other
        assert image_inputs_hash(*changed) != h


def test_image_tag_names_the_os():
    tag = image_tag("debian13", AptMirrors("http://m/debian"))
    assert tag.startswith("debian13-")
    assert "nginx" not in INCLUDE and "git" not in INCLUDE and "python3" not in INCLUDE
    assert "PasswordAuthentication no" in CONFIGURE_SCRIPT


def test_state_prefix_is_short_stable_and_distinct(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert state_prefix(a) == state_prefix(a)
    assert state_prefix(a) != state_prefix(b)
    assert state_prefix(a).isalnum() and len(state_prefix(a)) <= 10
    assert state_prefix(tmp_path / "x" / ".." / "a") == state_prefix(a)


def test_pip_config_index_url():
    text = (
        ":env:.cert='/etc/ssl/certs/ca-certificates.crt'\n"
        "global.index-url='https://index.example/simple'\n"
        "global.extra-index-url='file:///opt/x'\n"
    )
    assert parse_pip_config_list(text) == "https://index.example/simple"
    assert parse_pip_config_list(":env:.cert='x'\n") is None
