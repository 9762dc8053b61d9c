"""A real nova, glance, placement and neutron (chaoslab.nova) on their own dependencies,
beside a running lab: a plain MariaDB (or, with CHAOS_NOVA_TEST_DB=galera, a one-node
Galera), one RabbitMQ node, keystone and a libvirtd in a mount namespace of its own,
all on 127.0.3.1-.5 under one temporary folder. The ``openstack`` CLI lists servers, a
server with no NIC goes ACTIVE, its qemu runs under that libvirtd, and its delete
leaves nothing. Everything started here is stopped by the fixture's teardown. The
OpenStack venv is built on first use (~100 s) in $CHAOS_OPENSTACK_CACHE (default here
/tmp/h-nova/cache, so that a running lab's venv is never rebuilt under it)."""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.services.libvirt import with_libvirt
from chaos.steps import restart_log, start_unless_running
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.compute import qemu_pid_by_uuid

from .openstack_stack import Addresses, Cloud, running_stack

# outside the lab's addresses (127.0.0.x, 127.0.1.x): runs beside a running lab
AT = Addresses.from_base(1, epmd_port=4380)  # 127.0.3.1-5; epmd not the lab's 4369


@pytest.fixture(scope="module")
def cloud(root_required: None) -> Iterator[Cloud]:
    with running_stack(Path("/tmp/h-nova/run"), AT) as stack:
        yield stack


def _memory_mb(pid: int) -> str:
    """RSS/PSS in MB: VmRSS of /proc/PID/status, Pss of /proc/PID/smaps_rollup (shared
    pages divided among their users)."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
    return f"{rss // 1024}/{pss // 1024}"


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    return []


def test_server_boots_on_libvirt_and_is_deleted(cloud: Cloud) -> None:
    nova = cloud.nova
    assert all(check.ok for check in nova.status()), nova.status()
    assert cloud.openstack("server", "list", "-f", "value").strip() == ""

    disk = cloud.root / "blank.qcow2"
    procs.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], timeout=30)
    cloud.openstack("image", "create", "--disk-format", "qcow2", "--container-format", "bare",
                    "--file", str(disk), "--public", "blank")
    cloud.openstack("flavor", "create", "--ram", "64", "--disk", "1", "--vcpus", "1", "tiny")
    server_id = cloud.openstack("server", "create", "--flavor", "tiny", "--image", "blank",
                                "--nic", "none", "-f", "value", "-c", "id", "vm1").strip()
    client = nova.client()

    def status() -> tuple[bool, str]:
        server = client.get("nova-api", f"/servers/{server_id}")["server"]
        if server["status"] == "ERROR":
            return True, f"ERROR: {server.get('fault', {}).get('message')}"
        return server["status"] == "ACTIVE", server["status"]

    started = time.monotonic()
    seen = wait_for(status, what=f"server {server_id} ACTIVE", timeout=180, interval=1.0)
    assert seen == "ACTIVE", seen
    print(f"ACTIVE after {time.monotonic() - started:.1f}s")
    assert server_id in cloud.openstack("server", "list", "-f", "value", "-c", "ID")

    def domain(conn: Any) -> tuple[bool, str]:
        dom = conn.lookupByUUIDString(server_id)
        return bool(dom.isActive()), str(dom.name())

    active, name = with_libvirt(nova.libvirt_uri, domain, timeout=10,
                                what="the server's domain")
    assert active
    qemu = qemu_pid_by_uuid(server_id)
    assert qemu is not None and procs.alive(qemu)
    assert str(nova.instances_path / server_id).encode() in Path(
        f"/proc/{qemu}/cmdline").read_bytes()
    # started by that libvirtd: it wrote the pid in its own /run/libvirt (our folder,
    # bound there in its mount namespace), and qemu runs in a namespace libvirt made
    assert procs.read_pidfile(cloud.libvirt.root / "run" / "qemu" / f"{name}.pid") == qemu
    assert os.readlink(f"/proc/{qemu}/ns/mnt") != os.readlink("/proc/self/ns/mnt")

    _report_rss(cloud, qemu)

    cloud.openstack("server", "delete", server_id)

    def gone() -> tuple[bool, str]:
        servers = client.get("nova-api", "/servers")["servers"]
        return not servers, f"{len(servers)} servers"

    wait_for(gone, what="the server deleted", timeout=120, interval=1.0)
    names = with_libvirt(nova.libvirt_uri, lambda c: [d.name() for d in c.listAllDomains(0)],
                         timeout=10, what="list domains")
    assert names == []
    wait_for(lambda: (not procs.alive(qemu), f"qemu {qemu} alive"), what="qemu gone",
             timeout=30)
    assert not (nova.instances_path / server_id).exists()
    usages = client.get("placement-api", f"/allocations/{server_id}")["allocations"]
    assert usages == {}


def test_compute_and_neutron_killed_and_started_again(cloud: Cloud) -> None:
    """SIGKILL of nova-compute and of neutron's gunicorn master, both started again by
    their start commands the way the harness does: the server keeps its qemu, the new
    nova-compute reports in, and a delete (which asks neutron for ports) works."""
    nova, client = cloud.nova, cloud.nova.client()
    server_id = cloud.openstack("server", "create", "--flavor", "tiny", "--image", "blank",
                                "--nic", "none", "-f", "value", "-c", "id", "vm2").strip()

    def active() -> tuple[bool, str]:
        status = client.get("nova-api", f"/servers/{server_id}")["server"]["status"]
        return status in ("ACTIVE", "ERROR"), status

    assert wait_for(active, what="vm2 ACTIVE", timeout=180, interval=1.0) == "ACTIVE"
    qemu = qemu_pid_by_uuid(server_id)
    assert qemu is not None
    qemu_start = procs.start_time_ticks(qemu)

    killed = {}
    for daemon in ("nova-compute", "neutron-api"):
        pid = procs.read_pidfile(nova.pidfile(daemon))
        assert pid is not None and procs.alive(pid)
        os.kill(pid, signal.SIGKILL)
        killed[daemon] = pid
    wait_for(lambda: (not any(procs.alive(p) for p in killed.values()), "alive"),
             what="the killed daemons gone", timeout=10)
    restarted_at = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    for daemon in killed:
        pidfile = str(nova.pidfile(daemon))
        procs.run(["sh", "-c", start_unless_running(pidfile, nova.start_command(daemon),
                                                    restart_log(pidfile))],
                  timeout=30, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def reported() -> tuple[bool, str]:
        services = client.get("nova-api", "/os-services?binary=nova-compute")["services"]
        updated = [s["updated_at"] for s in services if s["updated_at"]]
        fresh = [u for u in updated
                 if datetime.datetime.fromisoformat(u) > restarted_at]
        return bool(fresh), f"updated_at {updated}"

    wait_for(reported, what="the new nova-compute reporting", timeout=120, interval=1.0)
    assert procs.read_pidfile(nova.pidfile("nova-compute")) not in (None, killed["nova-compute"])
    assert qemu_pid_by_uuid(server_id) == qemu and procs.start_time_ticks(qemu) == qemu_start
    assert client.get("nova-api", f"/servers/{server_id}")["server"]["status"] == "ACTIVE"

    cloud.openstack("server", "delete", server_id)

    def gone() -> tuple[bool, str]:
        servers = client.get("nova-api", "/servers")["servers"]
        return not servers, f"{[s['id'] for s in servers]}"

    wait_for(gone, what="vm2 deleted", timeout=120, interval=1.0)
    wait_for(lambda: (not procs.alive(qemu), f"qemu {qemu} alive"), what="qemu gone",
             timeout=30)


def test_down_and_up_again_on_the_same_databases(cloud: Cloud) -> None:
    """A second ``up`` over the schemas, cells, keystone entries and image of the first
    (a lab brought up again, a recovery): it finds them and changes nothing."""
    nova = cloud.nova
    nova.down(cloud.daemons)
    assert nova.daemon_pids() == []
    cloud.daemons.clear()
    nova.up(cloud.daemons.append)
    print("up again: " + ", ".join(f"{k} {v:.1f}s" for k, v in nova.timings.items()))
    assert all(check.ok for check in nova.status()), nova.status()
    cells = cloud.openstack("compute", "service", "list", "-f", "value", "-c", "Binary")
    assert sorted(cells.split()) == ["nova-compute", "nova-conductor", "nova-scheduler"]
    assert cloud.openstack("image", "list", "-f", "value", "-c", "Name").split() == ["blank"]
    endpoints = cloud.openstack("endpoint", "list", "-f", "value", "-c", "Service Type")
    assert sorted(endpoints.split()) == sorted(
        ["identity", *(2 * ["image", "placement", "compute", "network"])])


def _report_rss(cloud: Cloud, qemu: int) -> None:
    """RSS/PSS of each daemon (gunicorn: master + worker), printed for the docstring."""
    lines = []
    for daemon in [*(a for a in ("glance-api", "placement-api", "nova-api", "neutron-api")),
                   "nova-conductor", "nova-scheduler", "nova-compute"]:
        pid = procs.read_pidfile(cloud.nova.pidfile(daemon))
        assert pid is not None
        pids = [pid, *_children(pid)]
        lines.append(f"{daemon}: " + " + ".join(_memory_mb(p) for p in pids) + " MB")
    keystone = procs.read_pidfile(cloud.keystone.pidfile)
    assert keystone is not None
    lines.append("keystone: " + " + ".join(
        _memory_mb(p) for p in [keystone, *_children(keystone)]) + " MB")
    privsep = [pid for pid in cloud.nova.daemon_pids()
               if b"privsep-helper" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    lines.append("nova-compute's privsep daemon: " + " + ".join(
        _memory_mb(p) for p in privsep) + " MB")
    lines.append(f"qemu (the server): {_memory_mb(qemu)} MB")
    print("RSS/PSS " + "; ".join(lines))
