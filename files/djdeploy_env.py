"""The app's secret environment under the names the project reads, made on the server from the
values only the server holds (the secret key and database password are made here and never
leave it; standard library only, run as root):

    python djdeploy_env.py check SPEC.json     prints "same" or "differs", changes nothing
    python djdeploy_env.py write SPEC.json     writes the files that differ

SPEC: {"sources": [env files, later ones win], "names": {value: [names]}, "out": path,
       "dotenv": path or "", "group": the app's group}

`out` gets each secret value (secret_key, database_url and its parts db_name, db_user,
db_password, db_host, db_port) under every name asked for; `dotenv`, when set, the whole
environment (sources and `out`) for projects that read a `.env` file. Both are root:group 0640.
"""

from __future__ import annotations

import grp
import json
import os
import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
# Which variable of the sources holds each secret value.
SOURCE_NAMES = {"secret_key": "SECRET_KEY", "database_url": "DATABASE_URL"}
DEFAULT_PORTS = {"postgres": "5432", "postgresql": "5432", "pgsql": "5432", "mysql": "3306"}


def parse(text: str) -> dict[str, str]:
    """KEY=value lines as systemd's EnvironmentFile reads the ones the deploy writes."""
    values = {}
    for raw in text.splitlines():
        match = LINE.match(raw)
        if not match or raw.lstrip().startswith("#"):
            continue
        key, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        values[key] = value
    return values


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(values: dict[str, str], title: str) -> str:
    lines = [f"# {title}", "# Written by the deploy on this server: change its settings, not this file."]
    lines += [f"{key}={quote(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def url_parts(url: str) -> dict[str, str]:
    """db_name, db_user, db_password, db_host and db_port of a database URL (none for SQLite)."""
    parts = urlsplit(url)
    if not parts.hostname and not parts.username:
        return {}
    return {
        "db_name": unquote(parts.path.lstrip("/")),
        "db_user": unquote(parts.username or ""),
        "db_password": unquote(parts.password or ""),
        "db_host": parts.hostname or "",
        "db_port": str(parts.port or DEFAULT_PORTS.get(parts.scheme.split("+")[0], "")),
    }


def derived(spec: dict) -> tuple[dict[str, str], dict[str, str]]:
    """(the secret values under their asked-for names, the whole environment)."""
    env: dict[str, str] = {}
    for source in spec["sources"]:
        path = Path(source)
        if path.is_file():
            env.update(parse(path.read_text()))
    values = {key: env[name] for key, name in SOURCE_NAMES.items() if env.get(name)}
    if "database_url" in values:
        values.update(url_parts(values["database_url"]))
    out: dict[str, str] = {}
    for key, names in spec["names"].items():
        if key not in values:
            continue
        for name in names:
            if env.get(name) != values[key]:
                out[name] = values[key]
    return out, {**env, **out}


def wanted(spec: dict) -> dict[str, str]:
    """path -> the content it must have."""
    out, whole = derived(spec)
    files = {spec["out"]: render(out, "The app's secrets under the names its project reads.")}
    if spec.get("dotenv"):
        files[spec["dotenv"]] = render(whole, "The app's whole environment, as a .env file.")
    return files


def differs(spec: dict, path: str, content: str) -> bool:
    file = Path(path)
    if not file.is_file() or file.read_text() != content:
        return True
    st = file.stat()
    return (st.st_mode & 0o777, st.st_uid, st.st_gid) != (0o640, 0, grp.getgrnam(spec["group"]).gr_gid)


def write(spec: dict, path: str, content: str) -> None:
    temp = Path(f"{path}.djdeploy-new")
    old = os.umask(0o077)
    try:
        temp.write_text(content)
    finally:
        os.umask(old)
    os.chown(temp, 0, grp.getgrnam(spec["group"]).gr_gid)
    os.chmod(temp, 0o640)
    os.replace(temp, path)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("check", "write"):
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[2]).read_text())
    files = wanted(spec)
    stale = [path for path, content in files.items() if differs(spec, path, content)]
    # A .env no longer wanted is removed.
    for path in spec.get("remove", []):
        if Path(path).exists():
            stale.append(path)
    if argv[1] == "check":
        print("differs" if stale else "same")
        return 0
    for path in stale:
        if path in files:
            write(spec, path, files[path])
        else:
            Path(path).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
