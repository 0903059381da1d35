"""Facts about the controller machine, as pure functions where possible.

Nothing here talks to the container engine.  Registry and mirror addresses
are always read from this machine's own configuration at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SUITES = {"debian12": "bookworm", "debian13": "trixie"}

CA_DIR = Path("/usr/local/share/ca-certificates")


@dataclass(frozen=True)
class AptMirrors:
    """The controller's Debian archive mirror and (optional) security mirror."""

    main: str
    security: str | None = None


def _split_paragraphs(text: str) -> list[list[str]]:
    paragraphs: list[list[str]] = []
    current: list[str] = []
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if not raw.strip():
            if current:
                paragraphs.append(current)
                current = []
            continue
        current.append(raw)
    if current:
        paragraphs.append(current)
    return paragraphs


def parse_deb822_sources(text: str) -> list[dict[str, list[str]]]:
    """Parse a deb822 ``.sources`` file into entries of Types/URIs/Suites/Components."""
    entries = []
    for para in _split_paragraphs(text):
        fields: dict[str, str] = {}
        key = None
        for line in para:
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
                continue
            if ":" not in line:
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        entries.append(
            {
                "types": fields.get("types", "").split(),
                "uris": fields.get("uris", "").split(),
                "suites": fields.get("suites", "").split(),
                "components": fields.get("components", "").split(),
            }
        )
    return entries


def parse_one_line_sources(text: str) -> list[dict[str, list[str]]]:
    """Parse classic ``sources.list`` lines (``deb [opts] URI SUITE COMP...``)."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)
        parts = line.split()
        if len(parts) < 3 or parts[0] not in ("deb", "deb-src"):
            continue
        entries.append(
            {
                "types": [parts[0]],
                "uris": [parts[1]],
                "suites": [parts[2]],
                "components": parts[3:],
            }
        )
    return entries


def _is_security_suite(suite: str) -> bool:
    return suite.endswith("-security") or suite.endswith("/updates")


def pick_mirrors(entries: list[dict[str, list[str]]]) -> AptMirrors | None:
    """Choose the entry serving Debian's main archive, and the security one."""
    main = security = None
    for entry in entries:
        if "deb" not in entry["types"] or not entry["uris"]:
            continue
        uri = entry["uris"][0].rstrip("/")
        if not uri.startswith(("http://", "https://")):
            continue
        suites = entry["suites"]
        if any(_is_security_suite(s) for s in suites):
            security = security or uri
        elif any("-" not in s and "/" not in s for s in suites) and (
            not entry["components"] or "main" in entry["components"]
        ):
            main = main or uri
    if main is None:
        return None
    return AptMirrors(main=main, security=security)


def read_apt_mirrors(root: Path = Path("/")) -> AptMirrors:
    entries: list[dict[str, list[str]]] = []
    for path in sorted((root / "etc/apt/sources.list.d").glob("*.sources")):
        entries += parse_deb822_sources(path.read_text(errors="replace"))
    lists = [root / "etc/apt/sources.list"]
    lists += sorted((root / "etc/apt/sources.list.d").glob("*.list"))
    for path in lists:
        if path.is_file():
            entries += parse_one_line_sources(path.read_text(errors="replace"))
    mirrors = pick_mirrors(entries)
    if mirrors is None:
        from .errors import SandboxError

        raise SandboxError(
            "no Debian archive mirror found in /etc/apt/sources.list(.d): "
            "add a 'deb' entry for Debian's main archive"
        )
    return mirrors


def state_prefix(state_dir: Path) -> str:
    """Short, stable container-name prefix for one state directory."""
    digest = hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()
    return f"sbx{digest[:6]}"


def image_inputs_hash(
    suite: str, mirror: str, security: str | None, include: list[str], script: str
) -> str:
    """Hash of everything that goes into a base image; a new hash means a rebuild."""
    payload = json.dumps(
        {
            "suite": suite,
            "mirror": mirror,
            "security": security,
            "include": sorted(include),
            "script": script,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def ca_certificates(ca_dir: Path = CA_DIR) -> list[Path]:
    """Extra CA certificates installed on this machine (``*.crt``)."""
    if not ca_dir.is_dir():
        return []
    return sorted(p for p in ca_dir.rglob("*.crt") if p.is_file())


def parse_pip_config_list(text: str) -> str | None:
    """Return the index-url from ``pip config list`` output, if any."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^([^=]+)\.index-url\s*=\s*'?(.*?)'?\s*$", line.strip())
        if m:
            found[m.group(1)] = m.group(2)
    for scope in (":env:", "install", "global"):
        if scope in found:
            return found[scope]
    return next(iter(found.values()), None)


def package_index_url() -> str:
    """pip's simple index URL as configured on this controller."""
    env = os.environ.get("PIP_INDEX_URL")
    if env:
        return env.split()[0]
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        url = parse_pip_config_list(out)
        if url:
            return url
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from pip._internal.models.index import PyPI  # type: ignore

        return PyPI.simple_url
    except ImportError:
        out = subprocess.run(
            [
                "python3",
                "-c",
                "from pip._internal.models.index import PyPI; print(PyPI.simple_url)",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if out:
            return out
        from .errors import SandboxError

        raise SandboxError("cannot determine pip's index URL: install pip or set PIP_INDEX_URL") from None


def npm_registry_url() -> str:
    """npm's registry as configured on this controller; empty without npm."""
    env = os.environ.get("NPM_CONFIG_REGISTRY") or os.environ.get("npm_config_registry")
    if env:
        return env
    try:
        out = subprocess.run(["npm", "config", "get", "registry"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    url = out.stdout.strip()
    return url if out.returncode == 0 and url.startswith(("http://", "https://")) else ""


def pyenv_root() -> Path | None:
    """This machine's pyenv git checkout, if any."""
    candidates = []
    try:
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    if os.environ.get("PYENV_ROOT"):
        candidates.append(Path(os.environ["PYENV_ROOT"]))
    candidates.append(Path.home() / ".pyenv")
    for cand in candidates:
        if (cand / ".git").exists() and (cand / "plugins/python-build").is_dir():
            return cand
    return None
