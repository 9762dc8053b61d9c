"""start_unless_running, run for real: a live process that wrote the pidfile is left alone;
a live process that merely holds a stale pidfile's PID (pid_max is 32768 here, PIDs come
round) is not taken for the daemon, which is started."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from chaos.steps import start_unless_running


def test_the_owner_is_left_alone_and_a_stranger_with_a_reused_pid_is_not(
        tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(1.2)  # the pidfile is written after its process started
        owned = tmp_path / "owned.pid"
        owned.write_text(str(sleeper.pid))
        subprocess.run(["sh", "-c", start_unless_running(
            str(owned), f"touch {tmp_path / 'started-owned'}", str(tmp_path / "log"))],
            check=True, timeout=10)
        # a pidfile written long before the live process with that PID started
        stale = tmp_path / "stale.pid"
        stale.write_text(str(sleeper.pid))
        old = time.time() - 600
        os.utime(stale, (old, old))
        subprocess.run(["sh", "-c", start_unless_running(
            str(stale), f"touch {tmp_path / 'started-stale'}", str(tmp_path / "log"))],
            check=True, timeout=10)
        deadline = time.monotonic() + 5
        while not (tmp_path / "started-stale").exists():
            assert time.monotonic() < deadline, "the daemon behind a stale pidfile never started"
            time.sleep(0.05)
        assert not (tmp_path / "started-owned").exists()
    finally:
        sleeper.kill()
        sleeper.wait(timeout=5)
