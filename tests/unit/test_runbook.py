"""Runbook mode through a real pseudo-terminal: the harness shows each destructive step
and waits for Enter before acting; --yes shows and journals without asking."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from chaoslab import procs
from tests.unit.ptyutil import finish, read_until, spawn
from tests.unit.test_plugin import inventory_file  # noqa: F401  (the fixture)

DRILL = """
def test_freeze_drill(faults):
    fault = faults.add("freeze", "ctl1", "galera")
    faults.revert(fault)
"""


def spawn_in_pty(args: list[str], cwd: Path) -> tuple[int, int]:
    return spawn(["-m", "pytest", "-q", "-p", "no:cacheprovider", *args], str(cwd))


def test_runbook_pauses_before_the_step_and_acts_on_enter(
    inventory_file: Path, tmp_path: Path  # noqa: F811
) -> None:
    (tmp_path / "test_drill.py").write_text(DRILL)
    pid_file = tmp_path / "ctl1.pid"
    sleeper = procs.read_pidfile(pid_file)
    assert sleeper is not None
    child, fd = spawn_in_pty([str(tmp_path / "test_drill.py"), f"--inventory={inventory_file}",
                              "--runbook", f"--chaos-report-dir={tmp_path / 'rep'}"], tmp_path)
    shown = read_until(fd, "press Enter")
    assert "runbook step 1" in shown
    assert "target: local://" in shown and "kill -s STOP" in shown
    assert "expect: galera on ctl1 is frozen (SIGSTOP)" in shown
    time.sleep(0.5)
    assert procs.proc_state(sleeper) in ("S", "R"), "it acted before Enter"
    os.write(fd, b"\n")
    out, code = finish(child, fd)
    assert code == 0, shown + out
    assert procs.proc_state(sleeper) in ("S", "R")  # frozen, then thawed by the revert
    events = [json.loads(line) for line in
              (tmp_path / "rep" / "journal.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "runbook.step"]
    assert len(steps) == 1 and steps[0]["confirmed"] == "enter"
    # the fault is in the ledger before the question, so Ctrl-C at the prompt still
    # leaves a record that the revert clears
    injected = next(e for e in events if e["event"] == "fault.inject")
    assert injected["t"] <= steps[0]["t"]
    assert any(e["event"] == "fault.revert" for e in events)


def test_runbook_yes_shows_and_journals_without_asking(
    inventory_file: Path, tmp_path: Path  # noqa: F811
) -> None:
    (tmp_path / "test_drill.py").write_text(DRILL)
    child, fd = spawn_in_pty([str(tmp_path / "test_drill.py"), f"--inventory={inventory_file}",
                              "--runbook", "--yes", f"--chaos-report-dir={tmp_path / 'rep'}"],
                             tmp_path)
    out, code = finish(child, fd)
    assert code == 0, out
    assert "(--yes: running)" in out and "press Enter" not in out
    events = (tmp_path / "rep" / "journal.jsonl").read_text()
    assert '"confirmed": "yes"' in events
