"""The lab CLI's answers to bad input and bad state, without starting any service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaos import inventory


def chaos(lab_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHAOS_LAB_DIR": str(lab_dir)}
    env.pop("CHAOS_INVENTORY", None)
    return subprocess.run([sys.executable, "-m", "chaos.cli", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("action", ["status", "env"])
def test_no_lab_is_exit_3_with_one_line(tmp_path: Path, action: str) -> None:
    result = chaos(tmp_path, "lab", action)
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1
    assert "chaos lab up" in result.stderr


def test_unknown_subcommand_is_exit_2(tmp_path: Path) -> None:
    result = chaos(tmp_path, "lab", "sideways")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "invalid choice: 'sideways'" in result.stderr
    result = chaos(tmp_path, "explode")
    assert result.returncode == 2


def test_unknown_option_is_exit_2(tmp_path: Path) -> None:
    result = chaos(tmp_path, "lab", "status", "--colour")
    assert result.returncode == 2
    assert "unrecognized arguments: --colour" in result.stderr


def test_stale_lab_directory_is_refused_then_cleared_by_down(tmp_path: Path) -> None:
    state = {"version": 1, "phase": "up",
             "daemons": [{"component": "galera", "name": "galera-ctl1", "pid": dead_pid(),
                          "log": str(tmp_path / "x.log"), "pidfile": None}]}
    (tmp_path / "lab.json").write_text(json.dumps(state))
    result = chaos(tmp_path, "lab", "up")
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1
    assert "stale lab directory" in result.stderr and "chaos lab down" in result.stderr
    status = chaos(tmp_path, "lab", "status")
    assert status.returncode == 1
    assert "FAIL processes" in status.stdout and "galera-ctl1" in status.stdout
    # nothing runs, so down only has to forget it; it must not need the services
    result = chaos(tmp_path, "lab", "down")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "lab.json").exists()


def test_unreadable_state_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "lab.json").write_text("{not json")
    result = chaos(tmp_path, "lab", "up")
    assert result.returncode == 3
    assert "unreadable lab state" in result.stderr


@pytest.mark.parametrize("action", ["up", "status"])
def test_without_the_lab_installed_lab_commands_are_one_line_and_exit_2(
        tmp_path: Path, action: str) -> None:
    # the harness installed alone: importing chaoslab fails as it would without the extra
    hide = ("import sys; sys.modules['chaoslab'] = None; from chaos.cli import main; "
            f"sys.exit(main(['lab', {action!r}]))")
    env = {**os.environ, "CHAOS_LAB_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 2
    assert result.stderr == ("chaos: the local lab is not installed: "
                             "pip install 'openstack-chaos[lab]'\n")
    assert not list(tmp_path.iterdir())  # nothing of a lab was made


def test_up_on_a_running_lab_rewrites_its_inventories_in_the_current_format(
        tmp_path: Path) -> None:
    # a lab that is up (its one daemon a sleeper of ours) with inventories an older
    # harness wrote: a second 'up' starts nothing and writes them again
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        state = {"version": 1, "phase": "up", "kube": True,
                 "daemons": [{"component": "galera", "name": "galera-ctl1",
                              "pid": sleeper.pid, "log": "/dev/null", "pidfile": None}]}
        (tmp_path / "lab.json").write_text(json.dumps(state))
        for name in ("inventory.yaml", "inventory-kube.yaml"):
            (tmp_path / name).write_text("name: lab\nkind: lab\n")
        result = chaos(tmp_path, "lab", "up")
        # this stand-in lab's services answer only if a real lab runs on this machine:
        # healthy or not, up starts nothing and rewrites the inventories
        assert result.returncode in (0, 1), result.stderr
        assert "already up" in result.stdout or "NOT healthy" in result.stderr
        assert sleeper.poll() is None  # nothing was stopped or started
    finally:
        sleeper.kill()
        sleeper.wait()
    process = inventory.load(tmp_path / "inventory.yaml")
    kube = inventory.load(tmp_path / "inventory-kube.yaml")
    # every lab host is an address of this machine, and the inventories say so
    assert process.firewall == kube.firewall == "local"
    assert {h.access for h in [*process.controllers, *process.computes]} == {"ssh"}
    assert {h.access for h in [*kube.controllers, *kube.computes]} == {"local"}


def test_an_unhealthy_lab_is_told_what_brings_each_part_back() -> None:
    from chaoslab.cli import remedies

    assert remedies(["libvirt/cmp1"], 0) == [
        "chaos recover libvirt", "or, starting afresh: chaos lab down && chaos lab up"]
    # open faults go first; dead processes of a recoverable service are that service's
    assert remedies(["processes", "galera/ctl2", "rabbitmq/ctl2"], 2) == [
        "chaos heal   (2 fault(s) still open on this lab: revert them first)",
        "chaos recover galera", "chaos recover rabbitmq",
        "or, starting afresh: chaos lab down && chaos lab up"]
    # what no procedure recovers: down and up
    assert remedies(["sshd"], 0) == [
        "chaos lab down && chaos lab up   (sshd: no recovery procedure brings it back)"]
