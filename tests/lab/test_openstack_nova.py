"""nova, glance, placement and neutron (chaoslab.nova) as the lab runs them (``lab up
--openstack``): a server with no NIC boots on cmp1's libvirtd (in its container, reached
over qemu+tcp) and its delete leaves nothing, not a domain, a qemu, a folder or an
allocation; nova-compute and neutron's API killed and started again by their start
commands the way the harness does, the server keeping its qemu throughout. ``pytest
-s`` prints each daemon's memory."""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from chaos.services.libvirt import with_libvirt
from chaos.steps import restart_log, start_unless_running
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.compute import qemu_pid_by_uuid
from chaoslab.lab import Lab
from chaoslab.nova import FLAVOR, IMAGE, NovaLab
from chaoslab.openstack import KeystoneLab


class Cloud:
    """The lab's OpenStack: its nova, its keystone, and the ``openstack`` client."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.nova: NovaLab = lab.nova()
        self.keystone: KeystoneLab = lab.keystone()

    def openstack(self, *args: str, timeout: float = 120) -> str:
        result = procs.run([str(self.keystone.venv / "bin" / "openstack"), *args],
                           timeout=timeout, check=False,
                           env={**self.keystone.openstack_env(), "PYTHONWARNINGS": "ignore"})
        assert result.returncode == 0, f"openstack {' '.join(args)}: {result.stderr[-800:]}"
        return result.stdout

    def boot(self, name: str) -> str:
        return self.openstack("server", "create", "--flavor", FLAVOR, "--image", IMAGE,
                              "--nic", "none", "-f", "value", "-c", "id", name).strip()


@pytest.fixture(scope="module")
def cloud(root_required: None) -> Cloud:
    lab = Lab()
    if not lab.is_running() and lab.read_state() is not None:
        lab.down()  # stale, or broken by an earlier test
    lab.up(openstack=True)
    return Cloud(lab)


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
    server_id = cloud.boot("vm1")
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
    # started by cmp1's libvirtd: it wrote the pid in its /run/libvirt (a folder of the
    # lab's, bound there in its container), and qemu runs in that container's namespace
    run = cloud.lab.root / "compute" / "cmp1" / "run"
    pidfiles = list(run.rglob(f"{name}.pid"))
    assert [procs.read_pidfile(p) for p in pidfiles] == [qemu], pidfiles
    assert os.readlink(f"/proc/{qemu}/ns/mnt") != os.readlink("/proc/self/ns/mnt")

    _report_rss(cloud, qemu)

    cloud.openstack("server", "delete", server_id)

    def gone() -> tuple[bool, str]:
        servers = client.get("nova-api", "/servers")["servers"]
        return not servers, f"{len(servers)} servers"

    wait_for(gone, what="the server deleted", timeout=120, interval=1.0)
    names = with_libvirt(nova.libvirt_uri, lambda c: [d.name() for d in c.listAllDomains(0)],
                         timeout=10, what="list domains")
    assert names == ["cmp1-vm1"]  # the lab's own domain alone
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
    server_id = cloud.boot("vm2")

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
