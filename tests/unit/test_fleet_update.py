"""A fleet's update in pieces: its batches, its preview, and the switch back a failed run does
on each server (run here in a shell against a folder shaped like a server's, with systemctl
and nginx replaced by recorders)."""

import logging
import os
import subprocess
from pathlib import Path

import pytest

from operations import fleetrun, gunicorn
from operations.settings import validate

S = validate({"repo_url": "x", "app_name": "shop"})
A, B = "/srv/shop/releases/aaaaaaaaaaaa", "/srv/shop/releases/bbbbbbbbbbbb"


def test_batches_follow_the_canary():
    names = ["app1", "app2", "app3", "app4", "app5"]
    assert fleetrun.batches_of(names, "app1", 0) == [["app2", "app3", "app4", "app5"]]
    assert fleetrun.batches_of(names, "app3", 2) == [["app1", "app2"], ["app4", "app5"]]
    assert fleetrun.batches_of(names, "app1", 3) == [["app2", "app3", "app4"], ["app5"]]
    assert fleetrun.batches_of(["app1"], "app1", 0) == []


class Named:
    def __init__(self, name):
        self.name = name


def server(name, revision, live="a", target_serves=False):
    rel = B if target_serves else f"/srv/shop/releases/{revision[:12]}"
    serving = {"current": rel, live: rel, "live": live, "running": {live: "active"}}
    return fleetrun.Server(name=name, s=S, revision=revision, serving=serving, previous="")


def test_the_preview_names_every_server_and_phase(caplog):
    plan = fleetrun.Plan(action="update", target="b" * 40,
                         servers=[server("app1", "a" * 40), server("app2", "a" * 40),
                                  server("app3", "b" * 40, target_serves=True)],
                         lock_host=Named("app1"), lb=Named("lb1"), canary="app1",
                         batches=[["app2"], ["app3"]])
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        fleetrun.describe(plan)
    text = caplog.text
    assert "app1             aaaaaaaaaaaa   bbbbbbbbbbbb" in text
    assert "app3             bbbbbbbbbbbb   bbbbbbbbbbbb (already)" in text
    assert "lock the fleet on app1" in text
    assert "back up and migrate the database, once: app1" in text
    assert "switch the canary: app1, then check it through the load balancer lb1" in text
    assert "switch batch 1: app2" in text and "switch batch 2: app3" in text
    assert [x.name for x in plan.moving] == ["app1", "app2"]


# -- the switch back, in a shell ---------------------------------------------------------------


@pytest.fixture()
def site(tmp_path: Path):
    """A server's site folder and nginx upstream file under tmp_path; systemctl and nginx
    record their arguments; `systemctl is-active` answers from ACTIVE."""
    base = tmp_path / "srv"
    (base / "releases" / "aaaaaaaaaaaa").mkdir(parents=True)
    (base / "releases" / "bbbbbbbbbbbb").mkdir()
    (base / "releases" / "000000000000").mkdir()
    (base / "slots").mkdir()
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "calls"
    (bin_ / "systemctl").write_text(
        f'#!/bin/sh\necho "systemctl $*" >> {log}\n'
        'if [ "$1" = is-active ]; then case " $ACTIVE " in *" $3 "*) exit 0;; esac; exit 3; fi\n')
    (bin_ / "systemctl").chmod(0o755)
    return base, tmp_path / "upstream.conf", bin_, log


def switch_back(site, live, slots, upstream_slot, current, previous="", active=""):
    base, upstream, bin_, log = site
    for slot, rel in slots.items():
        os.symlink(rel.replace("/srv/shop", str(base)), base / "slots" / slot)
    os.symlink(current.replace("/srv/shop", str(base)), base / "current")
    upstream.write_text(f"upstream shop {{\n    server unix:/run/shop/{upstream_slot}.sock fail_timeout=0;\n}}\n")
    command = gunicorn.switch_back_command(S, B, live, A, "/srv/shop/releases/000000000000")
    command = command.replace("/etc/nginx/shop-upstream.conf", str(upstream)).replace("/srv/shop", str(base))
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "ACTIVE": active})
    calls = log.read_text() if log.exists() else ""
    return result, calls


def test_a_switched_server_goes_back_to_its_old_slot(site):
    base, upstream, _, _ = site
    result, calls = switch_back(site, "a", {"a": A, "b": B}, "b", B, active="shop@a.service")
    assert result.returncode == 0, result.stderr
    assert "/run/shop/a.sock" in upstream.read_text()
    assert "systemctl reload nginx" in calls
    assert os.readlink(base / "current").endswith("aaaaaaaaaaaa")
    assert os.readlink(base / "previous").endswith("000000000000")
    assert "systemctl stop --no-block shop@b.service shop@b.socket" in calls
    assert "switched back to slot a" in result.stdout


def test_a_server_that_only_started_the_release_stops_it(site):
    base, upstream, _, _ = site
    result, calls = switch_back(site, "a", {"a": A, "b": B}, "a", A, active="shop@a.service")
    assert result.returncode == 0, result.stderr
    assert "reload nginx" not in calls and "/run/shop/a.sock" in upstream.read_text()
    assert os.readlink(base / "current").endswith("aaaaaaaaaaaa")
    assert "systemctl stop --no-block shop@b.service shop@b.socket" in calls


def test_a_server_this_run_did_not_touch_is_left_alone(site):
    result, calls = switch_back(site, "a", {"a": A}, "a", A, active="shop@a.service")
    assert result.returncode == 0 and "nothing started here" in result.stdout
    assert calls == ""


def test_no_switch_back_when_the_old_slot_is_gone(site):
    _, upstream, _, _ = site
    result, calls = switch_back(site, "a", {"a": A, "b": B}, "b", B, active="")
    assert result.returncode == 1
    assert "slot a no longer runs" in result.stderr
    assert "/run/shop/b.sock" in upstream.read_text() and "reload" not in calls
