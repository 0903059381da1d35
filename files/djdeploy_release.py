"""Build a release folder whose code is already in place, completely or not at all (run as root
by pyenv's Python; standard library only):

    python djdeploy_release.py build SPEC.json

1. the migration digest of the release (to know later whether the database needs `migrate`);
2. the runbook's `.venv` in the Django project root (venv without pip), filled by Poetry from
   the lock (build tools pinned where the settings say); a wheel that fails to build for a
   missing system header names the Debian package;
3. Gunicorn added to the `.venv` when the project's dependencies have none, and setuptools
   when installed packages import pkg_resources without asking for it;
4. as the app user, in the project folder: the project's own build commands (front-end
   builds), then the static files and Django's deploy checks (djdeploy_build.py);
5. media and SQLite files the project keeps inside the release linked to `shared/`, so that
   uploads and data outlive the release; the release made read-only for the app;
6. Gunicorn's config check, which imports the WSGI application; then the release is complete.

SPEC holds the paths and settings (written by the deploy, nothing secret in it).
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

COMPLETE = ".djdeploy-complete"
MIGRATIONS = ".djdeploy-migrations"
PATHS = ".djdeploy-paths.json"
STATIC_MANIFEST = "staticfiles.json"

# What a failed wheel build says when a system library's headers or tools are missing, and the
# Debian packages that provide them.
MISSING_HEADERS = [
    (r"pg_config executable not found|pg_config: not found|libpq-fe\.h", ["libpq-dev"]),
    (r"mysql_config: not found|mysql_config not found|mariadb_config|mysql\.h",
     ["default-libmysqlclient-dev", "pkg-config"]),
    (r"lber\.h|ldap\.h", ["libldap2-dev", "libsasl2-dev"]),
    (r"sasl/sasl\.h", ["libsasl2-dev"]),
    (r"libxml/\w+\.h|xml2-config", ["libxml2-dev", "libxslt1-dev"]),
    (r"libxslt/\w+\.h|xslt-config", ["libxslt1-dev"]),
    (r"xmlsec1|xmlsec/xmlsec\.h", ["libxmlsec1-dev"]),
    (r"ffi\.h", ["libffi-dev"]),
    (r"openssl/\w+\.h", ["libssl-dev"]),
    (r"jpeglib\.h", ["libjpeg-dev"]),
    (r"zlib\.h", ["zlib1g-dev"]),
    (r"krb5-config|gssapi/gssapi\.h", ["libkrb5-dev"]),
    (r"cairo\.h|cairo-ffi|cairocffi", ["libcairo2-dev"]),
    (r"gdal-config|gdal\.h", ["libgdal-dev"]),
    (r"geos_c\.h|geos-config", ["libgeos-dev"]),
    (r"magic\.h|libmagic", ["libmagic-dev"]),
    (r"freetype/|ft2build\.h", ["libfreetype-dev"]),
    (r"Python\.h", ["(the CPython headers: rebuild python_version with pyenv)"]),
    (r"unixodbc|sql\.h: No such file", ["unixodbc-dev"]),
    (r"libpq\.so|libpq.*cannot open shared object", ["libpq5"]),
]

TOP_IMPORT_PKG_RESOURCES = re.compile(rb"^(?:import pkg_resources|from pkg_resources import)", re.M)
# How Poetry names a dependency it could not build, and the error lines of the build's output.
BUILD_FAILED = re.compile(r"issues with ([A-Za-z0-9_.\-]+) \(([^)\s]+)\)")
BUILD_ERROR = re.compile(r"^[\s|]*((?:[A-Za-z_][\w.]*(?:Error|Exception)|error): .+)$")


def hints(output: str) -> list[str]:
    """The Debian packages a failed build's output suggests, in order, without repeats."""
    found: list[str] = []
    for pattern, packages in MISSING_HEADERS:
        if re.search(pattern, output, re.I):
            found += [p for p in packages if p not in found]
    return found


def failed_builds(output: str) -> list[str]:
    """`name version: last error line` for each dependency Poetry could not build from source
    (a long build log hides them among the warnings of other builds)."""
    found: list[str] = []
    error = ""
    for line in output.splitlines():
        if match := BUILD_ERROR.match(line):
            error = match.group(1).strip()
        elif match := BUILD_FAILED.search(line):
            entry = f"{match.group(1)} {match.group(2)}" + (f": {error}" if error else "")
            if entry not in found:
                found.append(entry)
            error = ""
    return found


def build_constraints_toml(constraints: dict) -> str:
    """The setting poetry_build_constraints as the pyproject.toml table Poetry reads (JSON
    strings are TOML basic strings)."""
    lines = ["", "", "# Added by the deploy (setting poetry_build_constraints).",
             "[tool.poetry.build-constraints]"]
    for package, tools in constraints.items():
        inner = ", ".join(f"{json.dumps(tool)} = {json.dumps(version)}"
                          for tool, version in tools.items())
        lines.append(f"{json.dumps(package)} = {{ {inner} }}")
    return "\n".join(lines) + "\n"


def pkg_resources_importers(venv: Path) -> list[str]:
    """The installed packages whose modules import pkg_resources at their top, which only
    setuptools provides (older packages import it without asking for setuptools)."""
    found: set[str] = set()
    for site in venv.glob("lib/python*/site-packages"):
        for path in site.rglob("*.py"):
            top = path.relative_to(site).parts[0]
            if top in found or top in ("setuptools", "pkg_resources", "pip", "_distutils_hack"):
                continue
            try:
                source = path.read_bytes()
            except OSError:
                continue
            if b"pkg_resources" in source and TOP_IMPORT_PKG_RESOURCES.search(source):
                found.add(top)
    return sorted(found)


def missing(venv: Path) -> dict[str, str]:
    """What the deploy adds to the venv Poetry filled from the lock, and why: Gunicorn when the
    project has none, setuptools when installed packages import pkg_resources without it."""
    wanted = {}
    if not (venv / "bin" / "gunicorn").exists():
        wanted["gunicorn"] = "not in the project's dependencies"
    if not any(venv.glob("lib/python*/site-packages/setuptools")):
        if importers := pkg_resources_importers(venv):
            wanted["setuptools"] = f"{', '.join(importers)} import pkg_resources, not in the lock"
    return wanted


def migration_digest(project: Path) -> str:
    """One digest of every migration file of the project (the database needs `migrate` when it
    changes)."""
    digest = hashlib.sha256()
    for path in sorted(project.rglob("*.py")):
        rel = path.relative_to(project)
        if ".venv" in rel.parts or "node_modules" in rel.parts or "migrations" not in rel.parts[:-1]:
            continue
        digest.update(f"{rel}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def run(cmd: list[str], cwd: str | None = None, env: dict | None = None,
        capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.STDOUT if capture else None)


def as_app(spec: dict, cwd: str, command: list[str], env: dict | None = None,
           capture: bool = False) -> subprocess.CompletedProcess:
    """`command` as the app user, in `cwd`, with the service's environment files."""
    props = [f"WorkingDirectory={cwd}"] + [f"EnvironmentFile={f}" for f in spec["env_files"]]
    argv = ["systemd-run", "--quiet", "--pipe", "--wait", "--collect", "--service-type=exec",
            f"--uid={spec['app']}", f"--gid={spec['app']}"]
    for prop in props:
        argv += ["-p", prop]
    for key, value in (env or {}).items():
        argv += ["-E", f"{key}={value}"]
    return run(argv + command, capture=capture)


def build_env(env: dict, venv: Path) -> dict:
    """The build commands' environment: the release's .venv comes first on PATH, as if
    activated (`python manage.py ...` is the project's Python with its packages)."""
    return {**env, "VIRTUAL_ENV": str(venv),
            "PATH": f"{venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def fail(message: str) -> int:
    print(f"release build failed: {message}", file=sys.stderr)
    return 1


def inside(path: str, folder: str) -> str | None:
    """`path` relative to `folder` when it lies inside it."""
    path, folder = os.path.normpath(path), os.path.normpath(folder)
    if path == folder or path.startswith(folder + os.sep):
        return os.path.relpath(path, folder)
    return None


def chown_tree(root: Path, user: str) -> None:
    """chown -R to `user`, links themselves rather than their targets."""
    import pwd

    entry = pwd.getpwnam(user)
    os.lchown(root, entry.pw_uid, entry.pw_gid)
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid)


def served_while_written(folder: Path, web_group: str) -> None:
    """A folder the app writes into while serving and nginx serves from (django-compressor's):
    its folders pass the web server's group on to what is made in them (setgid), so nginx
    reads what the app writes under the service's umask."""
    gid = grp.getgrnam(web_group).gr_gid
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        os.chown(path, -1, gid)
        os.chmod(path, 0o2750 if path.is_dir() else 0o640)


def link_into_shared(target: Path, shared: Path) -> None:
    """Replace `target` (a folder or file the project keeps in the release) with a link to its
    place in `shared/`, moving in what the release brought if `shared/` has nothing there yet."""
    if target.is_symlink():
        target.unlink()
    elif target.is_dir():
        if not shared.exists():
            shutil.copytree(target, shared, symlinks=True)
        shutil.rmtree(target)
    elif target.exists():
        if not shared.exists():
            shutil.copy2(target, shared)
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(shared)


def build(spec: dict) -> int:
    release, project = Path(spec["release"]), Path(spec["project"])
    venv = project / ".venv"
    for folder in {release, project}:  # the release's commit, for the deploy and the project
        (folder / "REVISION").write_text(spec["revision"] + "\n")
    (release / MIGRATIONS).write_text(migration_digest(project) + "\n")

    # 2. The runbook's .venv in the Django project root, filled by Poetry (which uses the venv
    # it is given, wherever pyproject.toml is).
    if run([spec["python"], "-m", "venv", "--without-pip", str(venv)]).returncode != 0:
        return fail(f"could not make {venv}")
    if spec.get("build_constraints"):
        pyproject = Path(spec["poetry_dir"]) / "pyproject.toml"
        text = pyproject.read_text()
        if re.search(r"^\[tool\.poetry\.build-constraints\]", text, re.M):
            return fail("the project's pyproject.toml has [tool.poetry.build-constraints] of "
                        "its own; leave the setting poetry_build_constraints empty")
        pyproject.write_text(text + build_constraints_toml(spec["build_constraints"]))
    env = {**os.environ, **spec["poetry_env"], "VIRTUAL_ENV": str(venv),
           "PATH": f"{venv}/bin:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    poetry = run(["poetry", *spec["poetry_args"]], cwd=spec["poetry_dir"], env=env, capture=True)
    if poetry.returncode != 0:
        print(poetry.stdout[-6000:], file=sys.stderr)
        broken = failed_builds(poetry.stdout)
        if broken:
            print("Dependencies that did not build from source:", *broken, sep="\n  ",
                  file=sys.stderr)
        packages = hints(poetry.stdout)
        extra = ""
        if broken:
            extra += (f"; {', '.join(e.split(':')[0] for e in broken)} did not build from source "
                      "(when a newer build tool broke them, the setting poetry_build_constraints "
                      "pins it for them)")
        if packages:
            extra += (f"; a system library is missing: add {', '.join(packages)} to the setting "
                      "apt_packages")
        return fail(f"poetry {' '.join(spec['poetry_args'][:1])} exited {poetry.returncode}{extra}")

    # 3. Gunicorn, and setuptools for packages that need it without saying so (the lock is
    # untouched).
    python = str(venv / "bin" / "python")
    adds = missing(venv)
    steps = []
    if adds:
        steps.append(([python, "-m", "ensurepip", "--default-pip"], "pip"))
    for package in adds:
        pin = f"gunicorn=={spec['gunicorn']}" if package == "gunicorn" else package
        steps.append(([python, "-m", "pip", "install", "-q", pin], pin))
    for step, what in steps:
        out = run(step, env={**os.environ, **spec["pip_env"]}, capture=True)
        if out.returncode != 0:
            print(out.stdout[-3000:], file=sys.stderr)
            return fail(f"could not add {what} to {venv}")
    for package, why in adds.items():
        name = f"Gunicorn {spec['gunicorn']}" if package == "gunicorn" else package
        print(f"{name} added ({why})")
    if "gunicorn" not in adds:
        print("Gunicorn: the project's own")

    if spec.get("dotenv"):
        dotenv = project / ".env"
        if dotenv.exists() or dotenv.is_symlink():
            dotenv.unlink()
        dotenv.symlink_to(spec["dotenv"])

    # 4. As the app user: the project's build commands, static files and deploy checks. The
    # release is the app's only while it builds, its .venv too: some static files finders write
    # what they compile into their own package (django-simple-bulma's CSS).
    chown_tree(release, spec["app"])
    for command in spec["build_commands"]:
        out = as_app(spec, str(project), ["/bin/sh", "-ec", command],
                     env=build_env(spec["build_env"], venv), capture=True)
        if out.returncode != 0:
            print(out.stdout[-6000:], file=sys.stderr)
            return fail(f"build command {command!r} exited {out.returncode}")
    collect = as_app(spec, str(project), [str(venv / "bin" / "python"), spec["collect"],
                                          spec["incoming"], "--release", str(release)],
                     capture=True)
    if collect.returncode != 0:
        print(collect.stdout[-6000:], file=sys.stderr)
        return fail("collectstatic or Django's deploy checks failed")
    lines = collect.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(line, file=sys.stderr)  # Django's deploy check warnings
    try:
        paths = json.loads(lines[-1])
    except (IndexError, ValueError):
        return fail(f"no paths from the static files step: {collect.stdout[-500:]}")

    # 5. Data the project keeps inside the release lives in shared/; the code is root's again.
    shared = Path(spec["shared"])
    media = inside(paths["media"], str(release))
    if media:
        link_into_shared(release / media, shared / "media")
        paths["media_in_release"] = media
    for db in paths.get("sqlite", []):
        rel_db = inside(db, str(release))
        if rel_db:
            link_into_shared(release / rel_db, shared / "data" / Path(db).name)
    for folder in paths.get("writable", []):
        served_while_written(Path(folder), spec["web_group"])
    run(["chown", "-R", "-h", "root:root", str(release)])
    run(["chmod", "-R", "u+rwX,go+rX,go-w", str(release)])
    (project / PATHS).write_text(json.dumps(paths) + "\n")

    # 6. The WSGI application imports with the release's Gunicorn config (preload_app).
    check = as_app(spec, str(project), [str(venv / "bin" / "gunicorn"), "--check-config", "-c",
                                        "gunicorn.conf.py"], capture=True)
    if check.returncode != 0:
        print(check.stdout[-6000:], file=sys.stderr)
        return fail("the WSGI application does not import (gunicorn --check-config)")
    # Each release keeps its copy of the static manifest of a shared static folder: a release
    # started again (rollback) links the files it was built with.
    manifest = Path(paths["static"]) / STATIC_MANIFEST
    if not inside(paths["static"], str(release)) and manifest.is_file():
        shutil.copy2(manifest, release / STATIC_MANIFEST)
    (release / COMPLETE).touch()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "build":
        print(__doc__, file=sys.stderr)
        return 2
    return build(json.loads(Path(argv[2]).read_text()))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
