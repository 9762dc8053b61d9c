"""Processes of the lab: start detached daemons, know whether they live, stop them.

The lab outlives the ``chaos lab up`` command, so every daemon is started in its own
session with its output in a log file, and remembered by PID in the lab's state file.
PID 1 on these machines does not always reap orphans, so a zombie counts as dead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chaos.errors import LabError


@dataclass
class Daemon:
    """One process the lab started and must stop."""

    name: str
    pid: int
    log: str
    # for daemons whose real process differs from the launched one (rabbitmq's
    # wrapper shell vs beam.smp), the file where the real PID appears
    pidfile: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Daemon:
        return cls(**data)

    def alive(self) -> bool:
        """Alive as launched, or restarted since (by a fault's revert or a recovery)
        under the PID its pidfile now names."""
        return any(alive(p) for p in self.pids())

    def pids(self) -> list[int]:
        """The launched PID and, when known, the real daemon PID."""
        found = [self.pid]
        if self.pidfile:
            real = read_pidfile(Path(self.pidfile))
            if real and real not in found:
                found.append(real)
        return found


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def proc_state(pid: int) -> str | None:
    """The process state letter from /proc (R, S, D, T, Z…), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may itself contain spaces or ')'
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def start_time_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    pidfile: Path | None = None,
) -> Daemon:
    """Start ``argv`` detached (own session, no stdin), output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise LabError(f"{name}: cannot start {argv[0]}: {exc.strerror}") from exc
    return Daemon(name=name, pid=proc.pid, log=str(log), pidfile=str(pidfile) if pidfile else None)


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop(pids: Iterable[int], *, timeout: float = 10.0) -> list[int]:
    """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns PIDs that still live."""
    pids = [p for p in pids if alive(p)]
    signal_pids(pids, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        _reap()
        pids = [p for p in pids if alive(p)]
        if pids:
            time.sleep(0.05)
    if pids:
        signal_pids(pids, signal.SIGCONT)  # a frozen process cannot die
        signal_pids(pids, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while pids and time.monotonic() < deadline:
            _reap()
            pids = [p for p in pids if alive(p)]
            if pids:
                time.sleep(0.05)
    return pids


def _reap() -> None:
    """Collect our own exited children so they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def port_in_use(address: str, port: int) -> bool:
    """True if something already listens on address:port (or on the wildcard)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return True
    return False


def port_open(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short command with a hard timeout; a failure names the command."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{argv[0]} did not finish within {timeout:.0f}s") from exc
    except OSError as exc:
        raise LabError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise LabError(
            f"{' '.join(argv[:3])}… exited {result.returncode}: {detail[-1] if detail else ''}"
        )
    return result
