"""The Django project in the repository, found from its own files: the folder of `manage.py`, the
settings module, the WSGI application, the Python it accepts and whether it brings Gunicorn.
Every value found can be overridden by a setting."""

from __future__ import annotations

import ast
import base64
import posixpath
import re
import subprocess
import tomllib
from dataclasses import dataclass, field, replace

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pyinfra import host
from pyinfra.api import FactBase

from .common import sh
from .settings import Settings

# Folders whose files are never the project's own (dependencies, build output, tests' fixtures).
IGNORED_DIRS = {"node_modules", ".venv", "venv", "env", "site-packages", ".git", ".tox", "build",
                "dist", "__pypackages__"}
# setdefault("DJANGO_SETTINGS_MODULE", "m"), {"DJANGO_SETTINGS_MODULE": "m"} (a dict of
# defaults) or environ["DJANGO_SETTINGS_MODULE"] = "m"
SETTINGS_ENV = re.compile(
    r"""["']DJANGO_SETTINGS_MODULE["']\s*(?:,|:|\]\s*=)\s*["']([A-Za-z_][\w.]*)["']""")
WSGI_SETTING = re.compile(r"""^WSGI_APPLICATION\s*=\s*["']([A-Za-z_][\w.]*)["']""", re.M)
STAR_IMPORT = re.compile(r"^from\s+(\.*[\w.]*)\s+import\s+\*", re.M)
GUNICORN_DEP = re.compile(r"""^\s*["']?gunicorn\b""", re.I)
MAX_FILE = 200_000  # bytes read of one source file


class ProjectError(ValueError):
    """The project cannot be found or does not fit the settings; the message says what to set."""


@dataclass(frozen=True)
class Project:
    """What the deploy serves: values found in the source (or given by settings) and where each
    came from, for the preview."""

    subdir: str
    settings_module: str
    wsgi_app: str
    poetry_dir: str = ""  # folder of pyproject.toml: the project's folder or one above it
    python: str = ""  # the Python versions the project accepts, as it writes them
    gunicorn: bool = True  # Gunicorn is among the dependencies Poetry installs
    gunicorn_conf: bool = False  # the project's folder has a gunicorn.conf.py of its own
    origin: dict = field(default_factory=dict)

    def describe(self) -> str:
        where = self.subdir or "the repository root"
        parts = [f"manage.py in {where}",
                 f"settings {self.settings_module} ({self.origin.get('settings_module', '')})",
                 f"WSGI {self.wsgi_app} ({self.origin.get('wsgi_app', '')})"]
        if self.python:
            parts.append(f"Python {self.python} ({self.origin.get('python', '')})")
        parts.append("Gunicorn from the project" if self.gunicorn
                     else "Gunicorn added by the deploy (not in the project's dependencies)")
        if self.gunicorn_conf:
            parts.append("its gunicorn.conf.py applies first, the deploy's settings over it")
        return "; ".join(parts)


# -- reading the source -----------------------------------------------------------------------


class RepoTree(FactBase):
    """
    Every file path of a commit in the server's mirror of the repository; empty without one.
    """

    default = list

    def command(self, mirror: str, commit: str) -> str:
        return (f"[ -d {sh(mirror)} ] || exit 0; "
                f"git -C {sh(mirror)} ls-tree -r --name-only --full-tree {sh(commit)}")

    def process(self, output):
        return [line for line in output if line]


class RepoFiles(FactBase):
    """
    The content of some files of a commit in the server's mirror (missing files left out).
    """

    default = dict

    def command(self, mirror: str, commit: str, paths: list[str]) -> str:
        m = sh(mirror)
        return "; ".join(
            f"printf '%s\\t' {sh(p)}; git -C {m} show {sh(f'{commit}:{p}')} 2>/dev/null "
            f"| head -c {MAX_FILE} | base64 -w0; echo" for p in paths
        ) if paths else "true"

    def process(self, output):
        files = {}
        for line in output:
            path, _, data = line.partition("\t")
            if data:
                files[path] = base64.b64decode(data).decode("utf-8", errors="replace")
        return files


class Source:
    """Reads one commit of the repository: in the server's mirror (`git` mode) or in the
    controller's checkout (`upload` mode)."""

    def __init__(self, s: Settings, commit: str, mirror: str):
        self.s, self.commit, self.mirror = s, commit, mirror

    def _git(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", self.s.repo_url, *args], capture_output=True)

    def paths(self) -> list[str]:
        if self.s.source_mode == "upload":
            out = self._git("ls-tree", "-r", "--name-only", "--full-tree", self.commit)
            return out.stdout.decode().splitlines()
        return host.get_fact(RepoTree, mirror=self.mirror, commit=self.commit)

    def read(self, paths: list[str]) -> dict[str, str]:
        if self.s.source_mode == "upload":
            files = {}
            for path in paths:
                out = self._git("show", f"{self.commit}:{path}")
                if out.returncode == 0:
                    files[path] = out.stdout[:MAX_FILE].decode("utf-8", errors="replace")
            return files
        return host.get_fact(RepoFiles, mirror=self.mirror, commit=self.commit, paths=sorted(paths))


# -- finding the project ----------------------------------------------------------------------


def _ignored(path: str) -> bool:
    return any(part in IGNORED_DIRS for part in path.split("/")[:-1])


def find_subdir(paths: list[str], configured: str) -> tuple[str, str]:
    """The folder of manage.py and where that came from."""
    if configured:
        if f"{configured}/manage.py" not in paths:
            raise ProjectError(f"project_subdir: {configured!r} has no manage.py in this revision")
        return configured, "setting project_subdir"
    found = sorted((p for p in paths if posixpath.basename(p) == "manage.py" and not _ignored(p)),
                   key=lambda p: (p.count("/"), p))
    if not found:
        raise ProjectError("project_subdir: no manage.py in the repository; set project_subdir to "
                           "the folder of the Django project")
    if "manage.py" in found:
        return "", "manage.py at the root"
    if len(found) > 1:
        raise ProjectError("project_subdir: several manage.py (" + ", ".join(found[:5]) + "); set "
                           "project_subdir to the folder of the one to deploy")
    return posixpath.dirname(found[0]), f"the only manage.py, {found[0]}"


def module_file(subdir: str, module: str, paths: set[str]) -> str | None:
    """The file of a dotted module inside the project folder (module.py or package __init__)."""
    base = posixpath.join(subdir, *module.split("."))
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if candidate in paths:
            return candidate
    return None


def _resolve_relative(module: str, target: str, is_package: bool) -> str:
    if not target.startswith("."):
        return target
    dots = len(target) - len(target.lstrip("."))
    parts = module.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (dots - 1)] if dots > 1 else anchor
    rest = target.lstrip(".")
    return ".".join([*anchor, rest] if rest else anchor)


def candidate_files(paths: list[str], subdir: str) -> list[str]:
    """The files worth reading to find the settings and WSGI application (small and few)."""
    prefix = f"{subdir}/" if subdir else ""
    wanted = []
    for path in paths:
        if not path.startswith(prefix) or _ignored(path) or not path.endswith(".py"):
            continue
        name = posixpath.basename(path)
        parent = posixpath.basename(posixpath.dirname(path))
        inside = path[len(prefix):]
        if inside == "manage.py" or name in ("settings.py", "wsgi.py") or parent == "settings":
            wanted.append(path)
        elif inside.count("/") <= 2 and name == "__init__.py" and parent in ("settings", "config"):
            wanted.append(path)
    return wanted[:60]


def find_wsgi_setting(files: dict[str, str], subdir: str, module: str, paths: set[str]) -> str | None:
    """WSGI_APPLICATION of a settings module, following `from .base import *` a few levels."""
    seen = set()
    queue = [module]
    while queue and len(seen) < 8:
        current = queue.pop(0)
        if current in seen:
            continue
        seen.add(current)
        path = module_file(subdir, current, paths)
        if path is None or path not in files:
            continue
        text = files[path]
        if match := WSGI_SETTING.search(text):
            return match.group(1)
        is_package = path.endswith("__init__.py")
        queue += [_resolve_relative(current, t, is_package) for t in STAR_IMPORT.findall(text)]
    return None


def to_gunicorn(dotted: str) -> str:
    """`config.wsgi.application` -> `config.wsgi:application` (Gunicorn's form)."""
    module, _, name = dotted.rpartition(".")
    return f"{module}:{name}" if module else dotted


def python_constraint(pyproject: str) -> tuple[str, str]:
    """The Python versions a pyproject.toml accepts, and which table said so."""
    try:
        data = tomllib.loads(pyproject)
    except tomllib.TOMLDecodeError:
        return "", ""
    requires = data.get("project", {}).get("requires-python")
    if requires:
        return str(requires).strip(), "[project] requires-python"
    poetry = data.get("tool", {}).get("poetry", {}).get("dependencies", {}).get("python")
    if isinstance(poetry, str) and poetry.strip():
        return poetry.strip(), "[tool.poetry.dependencies] python"
    return "", ""


def _poetry_clause(clause: str) -> str:
    """One Poetry-style version clause as a PEP 440 specifier."""
    clause = clause.strip()
    if clause in ("", "*"):
        return ""
    if clause.startswith("^"):
        parts = [int(p) for p in clause[1:].split(".")]
        first = next((i for i, p in enumerate(parts) if p != 0), len(parts) - 1)
        upper = parts[: first + 1]
        upper[-1] += 1
        return f">={clause[1:]},<{'.'.join(map(str, upper))}"
    if clause.startswith("~") and not clause.startswith("~="):
        parts = [int(p) for p in clause[1:].split(".")]
        upper = parts[:2] if len(parts) > 1 else parts[:1]
        upper[-1] += 1
        return f">={clause[1:]},<{'.'.join(map(str, upper))}"
    if clause[0].isdigit():
        return f"=={clause}" if clause.count(".") >= 2 or "*" in clause else f"=={clause}.*"
    return clause


def accepts(constraint: str, version: str) -> bool | None:
    """Whether `version` satisfies a PEP 440 or Poetry-style constraint; None if unreadable."""
    if not constraint:
        return True
    try:
        for alternative in constraint.split("||"):
            alternative = re.sub(r"([<>=!~^]=?)\s+", r"\1", alternative.strip())
            clauses = re.split(r"\s*,\s*|\s+(?=[<>=!~^\d*])", alternative)
            spec = ",".join(c for c in (_poetry_clause(c) for c in clauses) if c)
            if Version(version) in SpecifierSet(spec):
                return True
    except (InvalidSpecifier, ValueError):
        return None
    return False


def has_gunicorn(pyproject: str, groups: list[str], extras: list[str]) -> bool:
    """Whether Poetry installs Gunicorn with these groups and extras (the lock decides the
    version; here only whether the project asks for it)."""
    try:
        data = tomllib.loads(pyproject)
    except tomllib.TOMLDecodeError:
        return False
    project = data.get("project", {})
    poetry = data.get("tool", {}).get("poetry", {})
    wanted = list(project.get("dependencies", []))
    for extra in extras:
        wanted += project.get("optional-dependencies", {}).get(extra, [])
    if any(GUNICORN_DEP.match(str(d)) for d in wanted):
        return True
    tables = [poetry.get("dependencies", {})]
    tables += [poetry.get("group", {}).get(g, {}).get("dependencies", {}) for g in groups]
    for table in tables:
        if "gunicorn" in {k.lower() for k in table}:
            spec = {k.lower(): v for k, v in table.items()}["gunicorn"]
            if not (isinstance(spec, dict) and spec.get("optional")):
                return True
            extra_lists = poetry.get("extras", {})
            if any("gunicorn" in extra_lists.get(e, []) for e in extras):
                return True
    return False


def settings_of_wsgi_files(files: dict[str, str], subdir: str) -> tuple[str, str]:
    """The settings module the project's wsgi.py files name, when they name one and the same,
    and the first file that does (for a manage.py that names none)."""
    prefix = f"{subdir}/" if subdir else ""
    named: dict[str, str] = {}
    for path in sorted(files):
        if path.startswith(prefix) and posixpath.basename(path) == "wsgi.py":
            if match := SETTINGS_ENV.search(files[path]):
                named.setdefault(match.group(1), path)
    return next(iter(named.items())) if len(named) == 1 else ("", "")


def defines_nothing(source: str) -> bool:
    """Whether a module's code is empty: nothing but comments and a docstring."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return False
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def check_not_empty_package(files: dict[str, str], subdir: str, module: str, origin: str,
                            paths: list[str]) -> None:
    """Stop when the settings module found is a package that defines nothing (its modules are
    the settings, chosen by the environment where the project runs): name its modules."""
    path = module_file(subdir, module, set(paths))
    if not path or not path.endswith("/__init__.py") or not defines_nothing(files.get(path, "x")):
        return
    folder = posixpath.dirname(path)
    modules = sorted(posixpath.basename(p)[:-3] for p in paths
                     if posixpath.dirname(p) == folder and p.endswith(".py") and p != path)
    example = next((m for m in modules if "prod" in m), modules[0] if modules else "production")
    raise ProjectError(f"settings_module: {module} ({origin}) is a package that defines no "
                       f"settings; its modules: {', '.join(modules) or 'none'}; set "
                       f"settings_module to the one to serve, e.g. '{module}.{example}'")


def find(paths: list[str], files: dict[str, str], s: Settings) -> Project:
    """The project from the repository's file list and the content of its candidate files."""
    origin = {}
    subdir, origin["subdir"] = find_subdir(paths, s.project_subdir)
    names = set(paths)
    manage = files.get(posixpath.join(subdir, "manage.py"), "")
    from_manage = m.group(1) if (m := SETTINGS_ENV.search(manage)) else ""

    settings_module = s.settings_module
    origin["settings_module"] = "setting settings_module"
    wsgi_dotted = ""
    if s.wsgi_app:
        wsgi_app, origin["wsgi_app"] = s.wsgi_app, "setting wsgi_app"
    else:
        lookup = settings_module or from_manage or settings_of_wsgi_files(files, subdir)[0]
        if not lookup:
            raise ProjectError("settings_module: neither manage.py nor a wsgi.py names "
                               "DJANGO_SETTINGS_MODULE; set settings_module (and wsgi_app)")
        wsgi_dotted = find_wsgi_setting(files, subdir, lookup, names) or ""
        if wsgi_dotted:
            wsgi_app, origin["wsgi_app"] = to_gunicorn(wsgi_dotted), f"WSGI_APPLICATION in {lookup}"
        else:
            top = lookup.split(".")[0]
            if module_file(subdir, f"{top}.wsgi", names) is None:
                raise ProjectError(f"wsgi_app: no WSGI_APPLICATION in {lookup} and no {top}/wsgi.py; "
                                   "set wsgi_app, e.g. 'mysite.wsgi:application'")
            wsgi_app, origin["wsgi_app"] = f"{top}.wsgi:application", f"{top}/wsgi.py"
    if not settings_module:
        # The WSGI module's default is what the project serves in production (manage.py's is
        # often the development settings).
        wsgi_file = module_file(subdir, wsgi_app.split(":")[0], names)
        from_wsgi = m.group(1) if wsgi_file and (m := SETTINGS_ENV.search(files.get(wsgi_file, ""))) else ""
        if from_wsgi:
            settings_module, origin["settings_module"] = from_wsgi, f"{wsgi_file}"
        elif from_manage:
            settings_module, origin["settings_module"] = from_manage, "manage.py"
        else:
            raise ProjectError("settings_module: neither manage.py nor the WSGI module names "
                               "DJANGO_SETTINGS_MODULE; set settings_module")

    if not s.settings_module:
        check_not_empty_package(files, subdir, settings_module, origin["settings_module"], paths)
    poetry_dir = find_poetry_dir(paths, subdir)
    pyproject = files.get(posixpath.join(poetry_dir, "pyproject.toml"), "")
    python, origin["python"] = python_constraint(pyproject)
    gunicorn = has_gunicorn(pyproject, s.poetry_groups, s.poetry_extras)
    return Project(subdir=subdir, settings_module=settings_module, wsgi_app=wsgi_app,
                   poetry_dir=poetry_dir, python=python, gunicorn=gunicorn,
                   gunicorn_conf=posixpath.join(subdir, "gunicorn.conf.py") in names, origin=origin)


def find_poetry_dir(paths: list[str], subdir: str) -> str:
    """The folder of the pyproject.toml that governs the project: its own or the nearest above."""
    folder = subdir
    while True:
        if posixpath.join(folder, "pyproject.toml") in paths:
            return folder
        if not folder:
            raise ProjectError("project_subdir: no pyproject.toml in the project's folder or above "
                               "it; the deploy installs the dependencies with Poetry")
        folder = posixpath.dirname(folder)


def check_python(project: Project, version: str) -> None:
    """Stop when the project does not accept the Python the deploy builds."""
    ok = accepts(project.python, version)
    if ok is False:
        raise ProjectError(f"python_version: {version} is not accepted by the project, which "
                           f"asks for Python {project.python} ({project.origin.get('python')}); "
                           "set python_version to a version it accepts")


# -- per host and commit ----------------------------------------------------------------------

_found: dict[tuple[str, str], Project] = {}


def inspect(s: Settings, commit: str | None, mirror: str) -> Project | None:
    """The project of `commit` (None while the commit is not known: no mirror yet)."""
    if not commit:
        return None
    key = (host.name, commit)
    if key not in _found:
        source = Source(s, commit, mirror)
        paths = source.paths()
        if not paths:
            return None
        subdir, _ = find_subdir(paths, s.project_subdir)
        wanted = set(candidate_files(paths, subdir))
        wanted.add(posixpath.join(find_poetry_dir(paths, subdir), "pyproject.toml"))
        _found[key] = find(paths, source.read(sorted(wanted)), s)
    return _found[key]


def resolved(s: Settings, project: Project | None) -> Settings:
    """The settings with the values found in the project filled in (settings still win)."""
    if project is None:
        return s
    return replace(s, values={**s.values, "project_subdir": project.subdir,
                              "settings_module": project.settings_module,
                              "wsgi_app": project.wsgi_app})
