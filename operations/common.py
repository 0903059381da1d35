"""Pieces every step shares: templates, quoting, one-round-trip state facts, and config files."""

from __future__ import annotations

import hashlib
import io
import json
import shlex
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra import host, logger, state
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.util import format_text

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
FILES = ROOT / "files"
# The group nginx runs as (Debian): it reads the static files and the app's sockets.
WEB_GROUP = "www-data"
# The scripts of files/ on the server (files/djdeploy_<name>.py), run by pyenv's Python or, for
# `build`, by the release's own.
TOOLS = {name: f"/usr/local/lib/djdeploy/{name}.py"
         for name in ("health", "build", "release", "env", "wsgi", "backup")}

class Stop(PyinfraError):
    """The run stops before it changes anything; the message says why (printed once, however
    many servers the run has)."""


_jinja = Environment(
    loader=FileSystemLoader(TEMPLATES),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, **context) -> str:
    """Render `templates/<template>` with `context`; a missing variable is an error."""
    return _jinja.get_template(template).render(**context)


def sh(*words: object) -> str:
    """One shell command line from words, each quoted."""
    return " ".join(shlex.quote(str(w)) for w in words)


def env_prefix(env: dict) -> str:
    """`env A=1 B=2` for a command; empty when there is nothing to set."""
    if not env:
        return ""
    return "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " "


class PathStates(FactBase):
    """
    Type, owner, group, mode and link target of each path; absent paths are left out.
    """

    default = dict

    def command(self, paths: list[str]) -> str:
        return (
            "stat -c '%n\t%F\t%U\t%G\t%a\t%N' " + " ".join(shlex.quote(p) for p in paths)
            + " 2>/dev/null || true"
        )

    def process(self, output):
        states = {}
        for line in output:
            name, kind, user, group, mode, quoted = line.split("\t")
            target = None
            if kind == "symbolic link" and " -> " in quoted:
                target = quoted.split(" -> ", 1)[1].strip("'\u2018\u2019\"")
            states[name] = {"type": kind, "user": user, "group": group, "mode": int(mode, 8),
                            "target": target}
        return states


class FileDigests(FactBase):
    """
    sha256, owner, group and mode of each regular file; absent files are left out.
    """

    default = dict

    def command(self, paths: list[str]) -> str:
        quoted = " ".join(shlex.quote(p) for p in paths)
        return (
            f"for f in {quoted}; do [ -f \"$f\" ] || continue; "
            "printf '%s\\t%s\\n' \"$(stat -c '%U\t%G\t%a' \"$f\")\" "
            "\"$(sha256sum \"$f\" | cut -d' ' -f1)\" | sed \"s|^|$f\t|\"; done"
        )

    def process(self, output):
        digests = {}
        for line in output:
            path, user, group, mode, digest = line.split("\t")
            digests[path] = {"user": user, "group": group, "mode": int(mode, 8), "sha256": digest}
        return digests


class JsonState(FactBase):
    """
    The JSON document a state command prints (the command is given by the caller's fact).
    """

    default = dict

    def process(self, output):
        text = "\n".join(output).strip()
        return json.loads(text) if text else {}


@operation()
def config_file(path: str, content: str, user: str = "root", group: str = "root",
                mode: int = 0o644, secret: bool = False):
    """
    A file with exactly this content, owner and mode, written atomically.

    + path: where on the server
    + content: the whole text
    + user, group, mode: ownership and permissions
    + secret: never show the content or a diff of it (keys, passwords)
    """
    desired = hashlib.sha256(content.encode()).hexdigest()
    current = host.get_fact(FileDigests, paths=[path]).get(path)
    if current and current["sha256"] == desired:
        if (current["user"], current["group"], current["mode"]) != (user, group, mode):
            yield sh("chown", f"{user}:{group}", path) + " && " + sh("chmod", f"{mode:o}", path)
        else:
            host.noop(f"{path} is up to date")
        return
    if state.config.DIFF and not secret:
        host.log(f"Will {'modify' if current else 'create'} {format_text(path, bold=True)}",
                 logger.info)
        for line in content.splitlines():
            logger.info("  + %s", line)
    temp = f"{path}.djdeploy-new"
    if not current:
        yield sh("mkdir", "-p", str(Path(path).parent))
    yield FileUploadCommand(io.BytesIO(content.encode()), temp,
                            remote_temp_filename=host.get_temp_filename(path))
    yield StringCommand(sh("chown", f"{user}:{group}", temp), "&&", sh("chmod", f"{mode:o}", temp),
                        "&&", sh("mv", "-f", temp, path))
