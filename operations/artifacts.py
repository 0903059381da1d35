"""Artifacts: a tree built on one server (pyenv's CPython, Poetry's venv) packed once, kept in the
controller's cache or on an internal URL, and installed whole on the other servers it fits.

A tree fits where everything that shaped it is the same: its key (versions, pyenv commit, build
environment, paths, Debian release and architecture). Names carry a hash of the key; each
archive (`<name>.tar.zst`) has a manifest (`<name>.json`) with the key and the archive's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pyinfra import logger
from pyinfra.api import HiddenValue, QuoteString, StringCommand
from pyinfra.api.command import PyinfraCommand
from pyinfra.api.util import print_host_combined_output

from .common import FILES, ROOT, JsonState

SCRIPT = "/usr/local/lib/djdeploy/artifact.sh"
SCRIPT_SOURCE = FILES / "djdeploy_artifact.sh"
STAGING = "/var/cache/djdeploy/artifacts"  # where a builder packs, before the controller fetches
SUFFIX = ".tar.zst"


class ArtifactError(Exception):
    """Why an artifact was not used or not shared, in one line."""


class Platform(JsonState):
    """
    The server's Debian release and architecture, which a built tree is bound to.
    """

    @staticmethod
    def default() -> dict:
        return {"os": "", "os_version": "", "codename": "", "arch": ""}

    def process(self, output):
        return {**self.default(), **super().process(output)}

    def command(self) -> str:
        return (
            ". /etc/os-release; printf '{\"os\":\"%s\",\"os_version\":\"%s\",\"codename\":\"%s\","
            "\"arch\":\"%s\"}\\n' \"$ID\" \"$VERSION_ID\" \"$VERSION_CODENAME\" "
            "\"$(dpkg --print-architecture)\""
        )


def key_hash(key: dict) -> str:
    """A short, stable hash of a key (its fields sorted)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def artifact_name(key: dict) -> str:
    """`cpython-3.11.2-debian12-amd64-<hash>`: readable, and unique per key."""
    return f"{key['kind']}-{key['version']}-{key['os']}{key['os_version']}-{key['arch']}-{key_hash(key)}"


def platform_text(key: dict) -> str:
    return f"{key['os']} {key['os_version']} ({key['codename']}) {key['arch']}"


def differences(built: dict, wanted: dict) -> str:
    """The key fields in which an artifact differs from what a server needs, for a message."""
    fields = sorted(k for k in set(built) | set(wanted) if built.get(k) != wanted.get(k))
    return ", ".join(f"{k} {built.get(k)!r} (needed {wanted.get(k)!r})" for k in fields)


def shown_url(url: str) -> str | HiddenValue:
    """A URL for a command line: hidden from the output when it carries credentials."""
    parts = urlsplit(url)
    return HiddenValue(url) if parts.username or parts.password else url


def safe_url(url: str) -> str:
    """A URL for a log line, without credentials."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()


class Cache:
    """The controller's folder of artifacts: `<name>.tar.zst` and its manifest `<name>.json`.
    A manifest is written last, so a manifest present means a complete archive."""

    def __init__(self, folder: Path):
        self.folder = folder

    @classmethod
    def of(cls, setting: str) -> Cache | None:
        """The cache a setting names (relative to the project folder); None when it is off."""
        if not setting:
            return None
        folder = Path(setting)
        return cls(folder if folder.is_absolute() else ROOT / folder)

    def archive(self, name: str) -> Path:
        return self.folder / f"{name}{SUFFIX}"

    def manifest(self, name: str) -> dict | None:
        try:
            manifest = json.loads((self.folder / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None
        return manifest if self.archive(name).is_file() else None

    def manifests(self, kind: str) -> list[dict]:
        found = []
        for path in sorted(self.folder.glob(f"{kind}-*.json")):
            manifest = self.manifest(path.stem)
            if manifest and isinstance(manifest.get("key"), dict):
                found.append(manifest)
        return found

    def predicted_commit(self, key: dict, ref: str) -> str | None:
        """The pyenv commit of the newest CPython artifact that fits `key` in all but the
        commit and was built from pyenv `ref` (or from the commit `ref` names)."""
        fits = []
        for manifest in self.manifests("cpython"):
            built = dict(manifest["key"])
            commit = built.pop("pyenv_commit", None)
            if built != {k: v for k, v in key.items() if k != "pyenv_commit"} or not commit:
                continue
            if manifest.get("pyenv_ref") == ref or (len(ref) >= 7 and commit.startswith(ref)):
                fits.append((manifest.get("built_at", ""), commit))
        return max(fits)[1] if fits else None

    def incoming(self, name: str, host_name: str) -> Path:
        """Where a download lands before it is checked (hidden, per host)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / f".incoming-{name}-{host_name}{SUFFIX}"

    def add(self, incoming: Path, manifest: dict) -> None:
        """Take a downloaded archive in if its sha256 is the manifest's, then the manifest."""
        digest = hashlib.sha256()
        with incoming.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != manifest["archive_sha256"]:
            incoming.unlink(missing_ok=True)
            raise ArtifactError("the downloaded archive does not have the sha256 the server computed")
        name = manifest["name"]
        os.replace(incoming, self.archive(name))
        temp = self.folder / f".{name}.json.{os.getpid()}"
        temp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        os.replace(temp, self.folder / f"{name}.json")


@dataclass(frozen=True)
class Spec:
    """One kind of artifact on one server: what it is, where it lives, how it is proven."""

    kind: str  # "cpython" or "poetry"
    label: str  # "CPython 3.11.2", for messages
    tree: str  # the folder the artifact holds
    key: Callable[[str | None], dict]  # the key, given pyenv's commit on the server
    check: tuple[str, ...]  # the command that proves an installed tree
    fallback: str  # what happens without an artifact: "compiled here"
    pyenv_root: str
    pyenv_ref: str


@dataclass(frozen=True)
class Need:
    """A server lacking a tree: with the servers of the same group it needs the same artifact."""

    host: str
    group: str
    sharing: bool  # a cache to share through is set
    cached: str = ""  # the name of an artifact in the cache that fits


@dataclass(frozen=True)
class Role:
    """What one server does for one tree in this run."""

    action: str  # "build" or "receive"
    share: bool = False  # build: pack the tree into the cache for the others
    cached: str = ""  # receive: the artifact in the cache
    builder: str = ""  # receive: the server that builds it in this run
    receivers: int = 0  # build: how many servers of the run receive it


def assign(needs: list[Need]) -> dict[str, Role]:
    """Roles for the servers that lack a tree, in inventory order: an artifact in the cache
    serves all it fits; otherwise the first server of each group builds, the others receive."""
    roles: dict[str, Role] = {}
    builders: dict[str, str] = {}
    for need in needs:
        if need.cached:
            roles[need.host] = Role("receive", cached=need.cached)
        elif not need.sharing:
            roles[need.host] = Role("build")
        elif need.group in builders:
            builder = builders[need.group]
            roles[need.host] = Role("receive", builder=builder)
            roles[builder] = Role("build", share=True, receivers=roles[builder].receivers + 1)
        else:
            builders[need.group] = need.host
            roles[need.host] = Role("build", share=True)
    return roles


def describe(spec: Spec, role: Role, key: dict, url: str) -> str:
    """One line for the plan: where this server's tree comes from, and which key."""
    where = platform_text(key)
    ref = spec.pyenv_ref[:12] if re.fullmatch(r"[0-9a-f]{40}", spec.pyenv_ref) else spec.pyenv_ref
    if role.action == "receive" and role.cached:
        return f"{spec.label}: from artifact {role.cached} in the cache"
    if role.action == "receive":
        return (f"{spec.label}: from the artifact {role.builder} builds in this run "
                f"({where}, pyenv {ref})")
    first = f"from {safe_url(url)} if it has the artifact, else " if url else ""
    line = f"{spec.label}: {first}{spec.fallback} ({where}, pyenv {ref})"
    if role.share:
        others = f" for {role.receivers} other server(s) of this run" if role.receivers else ""
        line += f", then packed into the cache{others}"
    return line


def _run(state, host, arguments, command: StringCommand) -> str:
    """Run a command on the server; its stdout, or ArtifactError with its last error line."""
    status, output = host.run_shell_command(command, print_output=state.print_output,
                                            print_input=state.print_input, **arguments)
    if not status:
        lines = output.stderr_lines or output.stdout_lines or ["failed"]
        raise ArtifactError(lines[-1].removeprefix("artifact: "))
    return "\n".join(output.stdout_lines).strip()


def _commit(state, host, arguments, spec: Spec) -> str:
    return _run(state, host, arguments,
                StringCommand("git", "-C", QuoteString(spec.pyenv_root), "rev-parse", "HEAD"))


class Share(PyinfraCommand):
    """Pack the tree a server just built and take it into the controller's cache. A failure
    leaves the server as it is and is reported: the others then build the tree themselves."""

    def __init__(self, spec: Spec, cache: Cache):
        super().__init__()
        self.spec, self.cache = spec, cache

    def __repr__(self) -> str:
        return f"Share({self.spec.kind}, {self.spec.tree})"

    def execute(self, state, host, connector_arguments) -> bool:
        arguments = {**connector_arguments, **self.connector_arguments}
        try:
            self._share(state, host, arguments)
        except Exception as error:  # noqa: BLE001 - sharing is optional, this server is done
            host.log(f"{self.spec.label}: not shared, other servers build it themselves: {error}",
                     logger.warning)
        return True

    def _share(self, state, host, arguments) -> None:
        key = self.spec.key(_commit(state, host, arguments, self.spec))
        name = artifact_name(key)
        if self.cache.manifest(name):
            host.log(f"{self.spec.label}: artifact {name} is in the cache already")
            return
        staged = f"{STAGING}/{name}{SUFFIX}"
        started = time.monotonic()
        packed = _run(state, host, arguments, StringCommand(
            "install", "-d", "-m", "755", STAGING, "&&",
            QuoteString(SCRIPT), "pack", QuoteString(self.spec.tree), QuoteString(staged)))
        digest, size = packed.split()[-2:]
        incoming = self.cache.incoming(name, host.name)
        try:
            # The archive is world-readable (nothing secret in it): fetched without sudo.
            if not host.get_file(staged, str(incoming)):
                raise ArtifactError(f"could not download {staged}")
        finally:
            _run(state, host, arguments, StringCommand("rm", "-f", QuoteString(staged)))
        self.cache.add(incoming, {
            "name": name, "kind": self.spec.kind, "key": key, "key_hash": key_hash(key),
            "archive": f"{name}{SUFFIX}", "archive_sha256": digest, "size": int(size),
            "pyenv_ref": self.spec.pyenv_ref, "built_by": host.name,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        host.log(f"{self.spec.label}: packed into the cache as {name} "
                 f"({int(size) / 1e6:.0f} MB, {time.monotonic() - started:.1f} s)")


class Install(PyinfraCommand):
    """The tree from its artifact (the controller's cache, else the URL), checked and proven on
    the server; without a fitting, intact artifact the fallback commands build it instead and
    one line says why."""

    def __init__(self, spec: Spec, cache: Cache | None, url: str, fallback: list[PyinfraCommand]):
        super().__init__()
        self.spec, self.cache, self.url, self.fallback = spec, cache, url.rstrip("/"), fallback

    def __repr__(self) -> str:
        return f"Install({self.spec.kind}, {self.spec.tree})"

    def execute(self, state, host, connector_arguments) -> bool:
        arguments = {**connector_arguments, **self.connector_arguments}
        try:
            self._install(state, host, arguments)
            return True
        except Exception as error:  # noqa: BLE001 - whatever went wrong, the fallback builds it
            host.log(f"{self.spec.label}: {self.spec.fallback}: {error}", logger.warning)
        for command in self.fallback:
            if isinstance(command, StringCommand):
                status, output = command.execute(state, host, dict(arguments))
                if not status and not state.print_output:
                    print_host_combined_output(host, output)
            else:
                status = command.execute(state, host, dict(arguments))
            if not status:
                return False
        return True

    def _install(self, state, host, arguments) -> None:
        key = self.spec.key(_commit(state, host, arguments, self.spec))
        name = artifact_name(key)
        manifest = self.cache.manifest(name) if self.cache else None
        if manifest:
            where = "the cache"
            self._fits(name, manifest, key)
            source = host.get_temp_filename(f"artifact-{name}")
            # Uploaded as the login user into its temporary file; the script consumes it.
            if not host.put_file(str(self.cache.archive(name)), source):
                raise ArtifactError(f"artifact {name}: upload failed")
        elif self.url:
            where = safe_url(self.url)
            try:
                manifest = json.loads(_run(state, host, arguments, StringCommand(
                    "curl", "-fsS", "--connect-timeout", "20",
                    QuoteString(shown_url(f"{self.url}/{name}.json")))))
            except ValueError:
                raise ArtifactError(f"artifact {name}: its manifest at {where} is not JSON") from None
            except ArtifactError as error:
                missing = f"not in the cache, nor at {where}" if self.cache else f"not at {where}"
                raise ArtifactError(f"artifact {name} {missing} ({error})") from None
            self._fits(name, manifest, key)
            source = shown_url(f"{self.url}/{name}{SUFFIX}")
        else:
            raise ArtifactError(f"no artifact {name} in the cache")
        try:
            proof = _run(state, host, arguments, StringCommand(
                QuoteString(SCRIPT), "install", QuoteString(self.spec.tree),
                QuoteString(manifest.get("archive_sha256", "")), QuoteString(source), "--",
                *(QuoteString(word) for word in self.spec.check)))
        except ArtifactError as error:
            raise ArtifactError(f"artifact {name}: {error}") from None
        host.log(f"{self.spec.label} from artifact {name} ({where}): {(proof.splitlines() or ['installed'])[-1]}")

    @staticmethod
    def _fits(name: str, manifest: dict, key: dict) -> None:
        if manifest.get("key") != key or manifest.get("archive") != f"{name}{SUFFIX}":
            raise ArtifactError(f"artifact {name} does not fit this server: "
                                f"{differences(manifest.get('key') or {}, key) or 'archive name'}")
