"""ComputeLab alone, on its own addresses, port and cgroup prefix, so it can run beside a lab.

The point of the three hosts is the difference between them: only the "right" one keeps its
VM when libvirtd or its container dies. These tests kill for real and look at the qemu
process itself (pid and start time), not only at what libvirt says.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.services.libvirt import DomainIdentity
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.compute import (
    ComputeHost,
    ComputeLab,
    cgroup_hierarchies,
    domains,
    mounts_under,
)
from chaoslab.procs import Daemon

pytestmark = pytest.mark.lab

HOSTS = [
    ComputeHost("cmp1", "127.0.3.21", "right"),
    ComputeHost("cmp2", "127.0.3.22", "no-hostpid"),
    ComputeHost("cmp3", "127.0.3.23", "in-cgroup"),
]
PORT = 16510
PREFIX = "chaos-test"


class Seen:
    """Every libvirtd and qemu the tests met, so the final test can prove they are gone."""

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self.uuids: set[str] = set()


@pytest.fixture(scope="module")
def seen() -> Seen:
    return Seen()


@pytest.fixture(scope="module")
def compute_lab(seen: Seen) -> Iterator[tuple[ComputeLab, list[Daemon]]]:
    if os.geteuid() != 0:
        pytest.fail("the compute lab starts dockerd and libvirtd and needs root")
    # not pytest's tmp_path: containerd's socket under it would pass the 107-byte limit
    root = Path(tempfile.mkdtemp(prefix="cmp-", dir="/tmp"))
    lab = ComputeLab(root, HOSTS, libvirt_port=PORT, cgroup_prefix=PREFIX)
    assert lab.preflight() == []
    daemons: list[Daemon] = []
    started = time.monotonic()
    try:
        lab.up(daemons.append)
        print(f"compute hosts up after {time.monotonic() - started:.1f}s: {lab.timings}")
        yield lab, daemons
    finally:
        lab.down(daemons)  # idempotent: the last test already did it
        shutil.rmtree(root, ignore_errors=True)


def _vm(lab: ComputeLab, host: str, seen: Seen) -> DomainIdentity:
    found = domains(lab.libvirt_uri(host))
    assert [d.name for d in found] == [f"{host}-vm1"]
    seen.uuids.add(found[0].uuid)
    if found[0].qemu_pid:
        seen.pids.add(found[0].qemu_pid)
    return found[0]


def _libvirtd(lab: ComputeLab, host: str, seen: Seen) -> int:
    pid = lab.libvirtd_pid(host)
    assert pid is not None, f"no libvirtd on {host}"
    assert procs.proc_state(pid) is not None
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "libvirtd"
    seen.pids.add(pid)
    return pid


def _cgroups(pid: int) -> dict[str, str]:
    """hierarchy (controllers, or "" for the unified one) -> cgroup path of pid."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return {line.split(":", 2)[1]: line.split(":", 2)[2] for line in lines}


def _stays_alive(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            return False
        time.sleep(0.05)
    return True


def _dies(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_all_hosts_healthy(compute_lab: tuple[ComputeLab, list[Daemon]], seen: Seen) -> None:
    lab, daemons = compute_lab
    assert sorted(d.name for d in daemons) == ["dockerd-cmp1", "dockerd-cmp2", "dockerd-cmp3"]
    checks = lab.status()
    assert [c.component for c in checks] == ["libvirt/cmp1", "libvirt/cmp2", "libvirt/cmp3"]
    assert all(c.ok for c in checks), checks
    for host in HOSTS:
        assert lab.libvirt_uri(host.name) == f"qemu+tcp://{host.address}:{PORT}/system"
        vm = _vm(lab, host.name, seen)
        assert vm.state == "running" and vm.id > 0
        assert vm.qemu_pid is not None and procs.alive(vm.qemu_pid)
        assert vm.start_ticks == procs.start_time_ticks(vm.qemu_pid)
        assert f"{host.name}-vm1" in next(c.detail for c in checks if host.name in c.component)
        assert f"-uuid\0{vm.uuid}\0" in Path(f"/proc/{vm.qemu_pid}/cmdline").read_text()
        _libvirtd(lab, host.name, seen)


def test_placement_of_each_mode(compute_lab: tuple[ComputeLab, list[Daemon]], seen: Seen) -> None:
    """What makes the difference, seen from /proc rather than from configuration."""
    lab, _ = compute_lab
    my_pidns = os.readlink("/proc/self/ns/pid")
    right, nohostpid, incgroup = (_vm(lab, h.name, seen).qemu_pid for h in HOSTS)
    assert right and nohostpid and incgroup
    # right: libvirtd and qemu out of the container, in the host's cgroup in every hierarchy
    for pid in (right, _libvirtd(lab, "cmp1", seen)):
        assert set(_cgroups(pid).values()) == {f"/{PREFIX}-cmp1"}, _cgroups(pid)
        assert os.readlink(f"/proc/{pid}/ns/pid") == my_pidns
    # no-hostpid: qemu lives in the container's own pid namespace
    assert os.readlink(f"/proc/{nohostpid}/ns/pid") != my_pidns
    # in-cgroup: host pid namespace, but qemu inside the container's cgroup
    assert os.readlink(f"/proc/{incgroup}/ns/pid") == my_pidns
    for path in _cgroups(incgroup).values():
        assert path.startswith(f"/{PREFIX}-cmp3-docker/"), _cgroups(incgroup)


def test_right_host_keeps_vm_when_libvirtd_is_killed(
    compute_lab: tuple[ComputeLab, list[Daemon]], seen: Seen
) -> None:
    lab, _ = compute_lab
    before = _vm(lab, "cmp1", seen)
    assert before.qemu_pid
    os.kill(_libvirtd(lab, "cmp1", seen), signal.SIGKILL)
    wait_for(
        lambda: (not lab.status()[0].ok, lab.status()[0].detail),
        what="cmp1 seen down",
        timeout=10,
    )
    assert _stays_alive(before.qemu_pid, 1.0), "qemu died with libvirtd on the right host"
    started = time.monotonic()
    lab.start_libvirt_container("cmp1")
    after = _vm(lab, "cmp1", seen)
    print(f"cmp1: libvirtd back and reconnected in {time.monotonic() - started:.2f}s")
    assert after.state == "running"
    assert (after.uuid, after.qemu_pid, after.start_ticks) == (
        before.uuid,
        before.qemu_pid,
        before.start_ticks,
    )
    assert lab.status()[0].ok


def test_right_host_keeps_vm_when_container_is_docker_killed(
    compute_lab: tuple[ComputeLab, list[Daemon]], seen: Seen
) -> None:
    lab, _ = compute_lab
    before = _vm(lab, "cmp1", seen)
    assert before.qemu_pid
    lab.docker("cmp1", "kill", lab.container_name("cmp1"))
    assert lab.libvirtd_pid("cmp1") is None
    assert _stays_alive(before.qemu_pid, 1.0), "docker kill reached qemu on the right host"
    lab.start_libvirt_container("cmp1")
    after = _vm(lab, "cmp1", seen)
    assert after.state == "running"
    assert (after.qemu_pid, after.start_ticks) == (before.qemu_pid, before.start_ticks)


def test_no_hostpid_host_loses_vm_with_libvirtd(
    compute_lab: tuple[ComputeLab, list[Daemon]], seen: Seen
) -> None:
    lab, _ = compute_lab
    before = _vm(lab, "cmp2", seen)
    assert before.qemu_pid
    os.kill(_libvirtd(lab, "cmp2", seen), signal.SIGKILL)
    assert _dies(before.qemu_pid, 5.0), "qemu survived the death of its pid namespace's init"
    lab.start_libvirt_container("cmp2")
    after = _vm(lab, "cmp2", seen)
    assert after.state != "running" and after.qemu_pid is None
    check = lab.status()[1]
    assert not check.ok and "cmp2-vm1" in check.detail


def test_in_cgroup_host_loses_vm_with_container(
    compute_lab: tuple[ComputeLab, list[Daemon]], seen: Seen
) -> None:
    lab, _ = compute_lab
    before = _vm(lab, "cmp3", seen)
    assert before.qemu_pid
    lab.docker("cmp3", "kill", lab.container_name("cmp3"))
    assert _dies(before.qemu_pid, 5.0), "qemu survived docker kill despite --pid=host"
    lab.start_libvirt_container("cmp3")
    after = _vm(lab, "cmp3", seen)
    assert after.state != "running" and after.qemu_pid is None
    assert not lab.status()[2].ok


def test_down_of_a_crashed_lab_leaves_nothing(
    compute_lab: tuple[ComputeLab, list[Daemon]], seen: Seen
) -> None:
    lab, daemons = compute_lab
    root = str(lab.root) + "/"
    survivor = _vm(lab, "cmp1", seen)
    assert survivor.qemu_pid
    # a crashed harness: dockerd gone and its daemon list lost; shim, libvirtd, qemu remain
    dockerd = next(d.pid for d in daemons if d.name == "dockerd-cmp1")
    os.kill(dockerd, signal.SIGKILL)
    assert _dies(dockerd, 5.0)
    assert procs.alive(survivor.qemu_pid)
    assert not lab.status()[0].ok
    assert mounts_under(lab.root), "expected dockerd's mounts to be left behind"

    started = time.monotonic()
    lab.down([])
    print(f"down of a crashed lab took {time.monotonic() - started:.1f}s")

    assert seen.pids and len(seen.uuids) == 3
    for pid in seen.pids:
        assert not procs.alive(pid), f"{pid} survived down"
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not procs.alive(int(entry)):
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        name = os.path.basename(args.split("\0", 1)[0])
        if name in ("dockerd", "containerd", "containerd-shim-runc-v2"):
            assert root not in args, f"{name} {entry} of the lab survived down"
        if name.startswith("qemu-system"):
            assert not any(u in args for u in seen.uuids), f"qemu {entry} survived down"
    assert mounts_under(lab.root) == []
    for hierarchy in cgroup_hierarchies():
        left = [p.name for p in hierarchy.iterdir() if p.name.startswith(PREFIX)]
        assert left == [], f"cgroups left in {hierarchy}: {left}"
    for host in HOSTS:
        assert not procs.port_in_use(host.address, PORT)
        assert (lab.root / host.name / "log" / "dockerd.log").exists()  # logs are kept

    lab.down(daemons)  # again, with stale daemon records: nothing to do, no error
