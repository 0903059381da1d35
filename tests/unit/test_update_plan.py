"""The update preview's facts about two commits, read by the same command from the server's
mirror or from the controller's checkout (`upload` mode): here a local repository."""

from __future__ import annotations

import subprocess

from operations.release import UpdatePlan


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def commit(repo, files: dict[str, str], subject: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", subject)
    return git(repo, "rev-parse", "HEAD")


def plan(repo, old: str, new: str, subdir: str, poetry_dir: str) -> dict:
    fact = UpdatePlan()
    out = subprocess.run(fact.command(mirror=str(repo), old=old, new=new, subdir=subdir,
                                      poetry_dir=poetry_dir), shell=True, capture_output=True,
                         text=True)
    return fact.process(out.stdout.splitlines())


def test_plan_of_a_project_below_its_lock(tmp_path):
    """src/ layout: the lock at the root, migrations in the project's folder."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    old = commit(repo, {"poetry.lock": "a\n", "src/manage.py": "", "src/shop/migrations/0001_initial.py": ""},
                 "First")
    commit(repo, {"src/shop/migrations/0002_price.py": ""}, 'Add a "price"')
    new = commit(repo, {"poetry.lock": "b\n"}, "Bump")
    got = plan(repo, old, new, subdir="src", poetry_dir="")
    assert got == {"old": "First", "new": "Bump", "commits": "2", "lock_changes": True,
                   "migrations": ["src/shop/migrations/0002_price.py"]}
    between = git(repo, "rev-parse", "HEAD~1")
    assert plan(repo, old, between, subdir="src", poetry_dir="")["lock_changes"] is False
    assert plan(repo, between, new, subdir="src", poetry_dir="")["old"] == 'Add a "price"'
