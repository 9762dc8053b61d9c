import os
import socket
import subprocess
import sys
from pathlib import Path

from chaoslab import procs


def test_spawn_detaches_and_stop_kills(tmp_path: Path) -> None:
    daemon = procs.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                         log=tmp_path / "sleeper.log")
    assert procs.alive(daemon.pid)
    assert os.getsid(daemon.pid) == daemon.pid  # its own session: survives our exit
    assert procs.stop([daemon.pid], timeout=5) == []
    assert not procs.alive(daemon.pid)


def test_stop_escalates_to_sigkill_for_a_process_ignoring_sigterm(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    daemon = procs.spawn("stubborn", [sys.executable, "-c", code], log=tmp_path / "s.log")
    import time
    time.sleep(0.3)  # let it install its handler
    assert procs.stop([daemon.pid], timeout=0.5) == []


def test_a_zombie_counts_as_dead() -> None:
    child = subprocess.Popen(["true"])
    import time
    for _ in range(100):
        if procs.proc_state(child.pid) == "Z":
            break
        time.sleep(0.01)
    assert procs.proc_state(child.pid) == "Z"
    assert not procs.alive(child.pid)
    child.wait()


def test_port_in_use() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert procs.port_in_use("127.0.0.1", port)
        assert procs.port_open("127.0.0.1", port)
    assert not procs.port_in_use("127.0.0.1", port)


def test_start_time_is_stable_for_a_process() -> None:
    first = procs.start_time_ticks(os.getpid())
    assert first is not None and first == procs.start_time_ticks(os.getpid())
    assert procs.start_time_ticks(2**22 + 7) is None


def test_pidfile_extends_pids(tmp_path: Path) -> None:
    pidfile = tmp_path / "real.pid"
    pidfile.write_text("4242\n")
    daemon = procs.Daemon("x", 100, "log", str(pidfile))
    assert daemon.pids() == [100, 4242]
    pidfile.write_text("garbage")
    assert daemon.pids() == [100]
