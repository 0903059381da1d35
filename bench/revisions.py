"""New revisions of the bundled example app, pushed as branches of the sandbox source server's
repository, for the update benchmark and the update tests (`main` is never moved)."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

HOME = "sales/templates/sales/home.html"
H1 = '<h1>{% translate "Overview" %}</h1>'

ADD_COLUMN = '''from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("sales", "{after}")]

    operations = [
        migrations.AddField(
            model_name="customer",
            name="{name}",
            field=models.CharField(max_length=20, null=True, blank=True),
        ),
    ]
'''

Edit = Callable[[Path], None]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def page_note(text: str) -> Edit:
    """A visible change: a release note under the home page's heading."""
    def edit(root: Path) -> None:
        page = root / HOME
        body = re.sub(r'\n<p id="release-note">[^<]*</p>', "", page.read_text())
        assert H1 in body
        page.write_text(body.replace(H1, f'{H1}\n<p id="release-note">{text}</p>', 1))
    return edit


def add_column(name: str, number: str = "0003",
               after: str = "0002_customer_vat_number_order_status_index") -> Edit:
    """A schema change: a nullable column on customers, in the model and as migration
    `number` (following the migration `after`)."""
    def edit(root: Path) -> None:
        (root / f"sales/migrations/{number}_customer_{name}.py").write_text(
            ADD_COLUMN.replace("{name}", name).replace("{after}", after))
        models = root / "sales/models.py"
        body = models.read_text()
        anchor = "    contract = models.FileField("
        assert anchor in body
        models.write_text(body.replace(
            anchor, f"    {name} = models.CharField(max_length=20, null=True, blank=True)\n" + anchor, 1))
    return edit


def unhealthy_where(flag: str) -> Edit:
    """A release whose /healthz/ answers 503 on a server where the file `flag` exists (one
    server of a fleet made unhealthy on purpose)."""
    def edit(root: Path) -> None:
        views = root / "bizsite/views.py"
        body = views.read_text()
        anchor = '    """200 "ok" when the database answers a trivial query, 503 otherwise."""\n'
        assert anchor in body
        check = (f"    import os\n    if os.path.exists({flag!r}):\n"
                 '        return _plain("unhealthy on purpose", status=503)\n')
        views.write_text(body.replace(anchor, anchor + check, 1))
    return edit


def both(*edits: Edit) -> Edit:
    def edit(root: Path) -> None:
        for one in edits:
            one(root)
    return edit


def push_branches(bare: Path, branches: dict[str, tuple[str, Edit, str]], author: str) -> dict[str, str]:
    """Each branch: (parent branch, edit, subject), committed and force-pushed to the bare
    repository in order; returns branch -> commit, `main` included. A parent is one of these
    branches or one the repository already has."""
    with tempfile.TemporaryDirectory(prefix="djdeploy-revisions-") as tmp:
        work = Path(tmp) / "example_app"
        subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
        git(work, "config", "user.name", author)
        git(work, "config", "user.email", "revisions@example.invalid")
        commits = {"main": git(work, "rev-parse", "origin/main")}
        for branch, (parent, edit, subject) in branches.items():
            base = commits.get(parent) or git(work, "rev-parse", f"origin/{parent}")
            git(work, "checkout", "-q", "-B", branch, base)
            edit(work)
            git(work, "add", "-A")
            git(work, "commit", "-q", "-m", subject)
            git(work, "push", "-q", "-f", "origin", f"HEAD:refs/heads/{branch}")
            commits[branch] = git(work, "rev-parse", "HEAD")
    return commits
