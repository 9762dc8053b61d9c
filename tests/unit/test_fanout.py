"""Fan-out across hosts: bounded, every silent host named, and one process-table read
per compute host whatever its number of VMs (with real processes)."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from chaos.errors import ServiceError
from chaos.fanout import WORKERS, ask_each, gather
from chaos.services.libvirt import parse_qemu_table, qemu_table
from chaos.targets import for_url


def test_answers_and_failures_are_kept_per_host_in_the_callers_order() -> None:
    def work(host: str) -> int:
        if host == "cmp3":
            raise ConnectionRefusedError("libvirt at qemu+tcp://cmp3: connection refused")
        return int(host[3:])

    got = gather([f"cmp{i}" for i in range(1, 7)], work, deadline=5)
    assert list(got.results) == ["cmp1", "cmp2", "cmp4", "cmp5", "cmp6"]
    assert got.errors == {"cmp3": "ConnectionRefusedError: libvirt at qemu+tcp://cmp3: "
                                   "connection refused"}
    with pytest.raises(ServiceError, match=r"snapshot: 1 host\(s\) did not answer: cmp3: "
                                           "ConnectionRefusedError"):
        got.raise_errors("snapshot")


def test_a_host_that_hangs_is_reported_at_the_deadline_not_waited_for() -> None:
    release = threading.Event()

    def work(host: str) -> str:
        if host == "hung":
            release.wait(30)  # a call stuck far past the deadline
        return host

    started = time.monotonic()
    got = gather(["a", "hung", "b"], work, deadline=0.5)
    took = time.monotonic() - started
    release.set()
    assert took < 5, f"the gathering waited {took:.1f}s for a hung host"
    assert got.results == {"a": "a", "b": "b"}
    assert got.errors == {"hung": "no answer within 0.5s"}


def test_hosts_are_asked_in_parallel_but_never_more_than_the_pool_at_once() -> None:
    lock = threading.Lock()
    running = peak = 0

    def work(host: str) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    got = gather([f"h{i}" for i in range(50)], work, deadline=30)
    assert len(got.results) == 50 and not got.errors
    assert 1 < peak <= WORKERS


def test_many_failures_are_reported_once_with_a_count() -> None:
    got = gather([f"cmp{i}" for i in range(20)],
                 lambda h: (_ for _ in ()).throw(TimeoutError("timed out")), deadline=5)
    text = got.describe_errors(limit=3)
    assert text.startswith("cmp0: TimeoutError: timed out; cmp1: ")
    assert text.endswith("and 17 more host(s)")


def test_ask_each_names_every_host_with_none_where_it_gave_no_answer() -> None:
    class Host:
        def __init__(self, name: str) -> None:
            self.name = name

    def ask(h: Host) -> str:
        if h.name == "ctl2":
            raise OSError("down")
        return h.name.upper()

    states, errors = ask_each([Host("ctl1"), Host("ctl2"), Host("ctl3")], ask, deadline=5)
    assert states == {"ctl1": "CTL1", "ctl2": None, "ctl3": "CTL3"}
    assert errors == {"ctl2": "OSError: down"}


@pytest.fixture
def fake_qemus() -> Iterator[dict[str, int]]:
    """Real processes whose command lines carry ``-uuid U`` as qemu's do: uuid -> pid."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for _ in range(5):
            u = str(uuid.uuid4())
            # "; :" keeps sh from exec'ing sleep, so the -uuid arguments stay in its argv
            procs[u] = subprocess.Popen(["sh", "-c", "sleep 30; :", "qemu-system-x86_64",
                                         "-name", "guest=x", "-uuid", u])
        yield {u: p.pid for u, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
            p.wait(5)


def test_one_process_table_read_finds_the_hosts_qemus_with_their_start_times(
        fake_qemus: dict[str, int]) -> None:
    stranger = str(uuid.uuid4())  # a domain this host does not run
    out = for_url("local://").run(qemu_table([*fake_qemus, stranger]), timeout=10)
    table = parse_qemu_table(out.stdout)
    assert set(table) == set(fake_qemus)
    for u, pid in fake_qemus.items():
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(") ", 1)[1].split()[19])
        assert table[u] == (pid, ticks)


def test_a_dead_qemu_is_not_in_the_table(fake_qemus: dict[str, int]) -> None:
    import os
    import signal

    gone, pid = next(iter(fake_qemus.items()))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    table = parse_qemu_table(for_url("local://").run(qemu_table(list(fake_qemus)),
                                                     timeout=10).stdout)
    assert set(table) == set(fake_qemus) - {gone}


def test_faults_are_reverted_newest_first_on_each_host_and_the_hosts_at_once() -> None:
    from chaos.errors import FaultError
    from chaos.faults import Fault, per_host

    faults = [Fault(f"{kind}-{host}", kind, host, None, [], [])
              for host in ("cmp1", "cmp2", "cmp3") for kind in ("kill", "kill-docker")]
    done: list[str] = []
    lock = threading.Lock()

    def revert(fault: Fault) -> None:
        time.sleep(0.5)
        if fault.id == "kill-docker-cmp2":
            raise FaultError(f"revert of {fault.id} failed: docker did not answer")
        with lock:
            done.append(fault.id)

    started = time.monotonic()
    errors = per_host(faults, revert)
    took = time.monotonic() - started
    # two faults a host, 0.5 s each: about 1 s with the hosts at once, 3 s one by one
    # (the margin is for a loaded machine: CI runs the lab beside other work)
    assert took < 2.4, f"{took:.2f}s: hosts reverted one after another"
    assert errors == ["revert of kill-docker-cmp2 failed: docker did not answer"]
    for host in ("cmp1", "cmp3"):
        mine = [f for f in done if f.endswith(host)]
        assert mine == [f"kill-{host}", f"kill-docker-{host}"]  # the given order, per host
