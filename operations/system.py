"""The server itself: Debian packages and the CA certificates it must trust."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, OperationError, operation
from pyinfra.facts.deb import DebPackages

from .common import FILES, TOOLS, FileDigests, config_file, sh

CA_DIR = "/usr/local/share/ca-certificates"


@operation()
def packages(present: list[str]):
    """
    Debian packages installed (without recommends); the package lists are refreshed only
    when something is missing.

    + present: package names
    """
    installed = host.get_fact(DebPackages)
    missing = [p for p in present if p not in installed]
    if not missing:
        host.noop(f"{len(present)} packages are installed")
        return
    apt = "env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0"
    yield f"{apt} update -qq"
    yield f"{apt} install --no-install-recommends " + sh(*missing)


@operation()
def ca_certificates(paths: list[str]):
    """
    The given PEM CA certificates trusted system-wide (proxies and mirrors with a private CA).

    + paths: certificate files on the controller
    """
    uploads = {}
    for path in paths:
        local = Path(path)
        if not local.is_file():
            raise OperationError(f"extra_ca_certificates: {path} is not a file on the controller")
        uploads[f"{CA_DIR}/djdeploy-{local.stem}.crt"] = local
    present = host.get_fact(FileDigests, paths=list(uploads)) if uploads else {}
    changed = False
    for remote, local in uploads.items():
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        if present.get(remote, {}).get("sha256") != digest:
            changed = True
            yield FileUploadCommand(str(local), remote,
                                    remote_temp_filename=host.get_temp_filename(remote))
            yield sh("chmod", "644", remote)
    if changed:
        yield "update-ca-certificates >/dev/null"
    else:
        host.noop("CA certificates are trusted")


@operation()
def tools():
    """
    The deploy's own scripts on the server (`files/`): the health gate and the release build.
    """
    for name, path in TOOLS.items():
        yield from config_file._inner(path=path, content=(FILES / f"djdeploy_{name}.py").read_text())
