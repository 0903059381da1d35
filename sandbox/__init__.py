"""Local Debian test servers (systemd + sshd containers) and a source server.

    from sandbox import Sandbox, Server
    sb = Sandbox()
    servers = sb.up(servers=1, os="debian12")
"""

from .core import Sandbox, Server
from .errors import SandboxError
from .source import SourceServer

__all__ = ["Sandbox", "Server", "SandboxError", "SourceServer"]
