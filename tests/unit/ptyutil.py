"""Drive a program through a real pseudo-terminal, with bounded reads."""

from __future__ import annotations

import os
import pty
import select
import sys
import time


def spawn(argv: list[str], cwd: str | None = None) -> tuple[int, int]:
    """Run ``python argv…`` in a new session whose controlling terminal is a pty."""
    pid, fd = pty.fork()
    if pid == 0:
        if cwd:
            os.chdir(cwd)
        os.execv(sys.executable, [sys.executable, *argv])
    return pid, fd


def read_until(fd: int, marker: str | None = None, timeout: float = 60.0) -> str:
    """Read until ``marker`` shows (or, with None, until the program closes the pty)."""
    seen = ""
    deadline = time.monotonic() + timeout
    while (marker is None or marker not in seen) and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
    return seen


def finish(pid: int, fd: int, timeout: float = 60.0) -> tuple[str, int]:
    out = read_until(fd, None, timeout=timeout)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return out, os.waitstatus_to_exitcode(status)
