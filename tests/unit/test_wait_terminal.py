"""The live line of a wait, in a real terminal: a tmux pane of a set width runs a program
that waits on an observation with a long describe(); what the pane shows is read back.

Before: the line was a repr cut at 120 characters after a prefix, longer than a 160-column
pane; it wrapped, and every update (0.1 s here) left a new line behind. Now: one line,
rewritten in place, cut to the pane's width, in the observation's own words.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = '''
import time

from chaos.wait import wait_for
from tests.unit.views import GaleraView, MemberState

# 24 members: several times the width of any pane
view = GaleraView({f"ctl{i}": (MemberState(3, "Primary", "Synced") if i % 4 else None)
                   for i in range(1, 25)})
start = time.monotonic()
print("begin", flush=True)
wait_for(lambda: (time.monotonic() - start > 2.0, view), what="Galera quorum of ctl1, ctl3",
         timeout=10, interval=0.1)
print("done", flush=True)
time.sleep(30)  # the pane stays for the last look; the test kills the server
'''


def _tmux(socket: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout


def _pane(socket: str) -> str:
    """The whole pane, scrollback included (-S -), wrapped lines joined (-J): a line
    that wrapped reads back longer than the pane, one that scrolled reads back twice."""
    return _tmux(socket, "capture-pane", "-p", "-J", "-S", "-", "-t", "wait")


def _until(socket: str, marker: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = _pane(socket)
        if marker in seen:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"{marker!r} never showed in the pane:\n{seen}")


@pytest.mark.parametrize("width", [160, 80])
def test_the_wait_line_fits_the_pane_and_updates_in_place(tmp_path: Path, width: int) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (Debian package tmux; ./quickstart installs it)")
    program = tmp_path / "wait_in_pane.py"
    program.write_text(PROGRAM)
    socket = f"chaos-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        # a server of its own (-L), no user config (-f /dev/null); the pane's program
        # imports this tree and shows progress whatever the caller's environment says
        _tmux(socket, "-f", "/dev/null", "new-session", "-d", "-s", "wait", "-x", str(width),
              "-y", "40", "env", "-u", "CHAOS_PROGRESS", "-u", "TMUX", f"PYTHONPATH={ROOT}",
              sys.executable, str(program))
        _until(socket, "waiting for")
        time.sleep(1.0)  # ten updates after the first
        during = _pane(socket)
        after = _until(socket, "done")
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=10,
                       check=False)
    lines = [line.rstrip() for line in during.splitlines() if line.strip()]
    assert all(len(line) <= width for line in lines), during
    live = [line for line in lines if "waiting for" in line]
    assert len(live) == 1, during  # rewritten in place: no trail of earlier updates
    assert live[0].startswith("waiting for Galera quorum of ctl1, ctl3 (")
    assert "): ctl1: 3, Primary, Synced, ctl" in live[0]  # describe(), as far as it fits
    assert live[0].endswith("…")  # cut, and visibly so
    assert "GaleraView(" not in during and "State(" not in during
    # once done the line is gone, and what the program prints next starts clean
    assert "waiting for" not in after and "done" in after.splitlines()
