"""The lab itself, against real services: healthy after up, endpoints usable with the
operators' usual clients, the seed's central fact about libvirt and hostPID, and a
down that leaves nothing behind. Tests run in file order; the last one takes it down."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika
import pymysql
import pytest

from chaos import inventory
from chaos.targets import host_target
from chaos.wait import wait_for
from chaoslab import kube, procs
from chaoslab.compute import ComputeLab, domains
from chaoslab.lab import Lab
from chaoslab.model import COMPUTES, CONTROLLERS


def chaos(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chaos.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def lab_env() -> dict[str, str]:
    result = chaos("lab", "env")
    assert result.returncode == 0, result.stderr
    env = {}
    for line in result.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    return env


def pairs(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split())


def compute_part(lab: Lab) -> ComputeLab:
    part = next(c for c in lab.components() if c.name == "compute")
    assert isinstance(part, ComputeLab)
    return part


def test_status_is_healthy_after_up(lab: Lab) -> None:
    result = chaos("lab", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("galera/ctl1", "galera/ctl3", "rabbitmq/ctl2", "libvirt/cmp1", "libvirt/cmp3",
                 "sshd"):
        assert f"ok   {name}" in result.stdout
    assert "lab healthy" in result.stdout


def test_up_twice_is_a_noop(lab: Lab) -> None:
    before = lab.read_state()
    result = chaos("lab", "up")
    assert result.returncode == 0, result.stderr
    assert "already up" in result.stdout
    assert lab.read_state() == before


def test_up_on_an_unhealthy_lab_names_the_part_and_what_brings_it_back(lab: Lab) -> None:
    """libvirtd killed on cmp1 (its container goes with it): 'lab up' starts nothing,
    says libvirt/cmp1 is unhealthy and to run 'chaos recover libvirt'; that brings it
    back, and 'lab up' is a no-op again."""
    pid = compute_part(lab).libvirtd_pid("cmp1")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    try:
        result = chaos("lab", "up")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "NOT healthy" in result.stderr and "libvirt/cmp1:" in result.stderr
        assert "-> chaos recover libvirt" in result.stderr
    finally:
        recovered = chaos("recover", "libvirt", timeout=180)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    again = chaos("lab", "up")
    assert again.returncode == 0 and "already up" in again.stdout, again.stderr


def test_env_names_every_endpoint(lab: Lab) -> None:
    env = lab_env()
    assert Path(env["CHAOS_INVENTORY"]).is_file()
    assert pairs(env["CHAOS_GALERA"]) == {h.name: f"{h.address}:3306" for h in CONTROLLERS}
    assert set(pairs(env["CHAOS_RABBITMQ"])) == {"ctl1", "ctl2", "ctl3"}
    assert all(url.startswith("amqp://") for url in pairs(env["CHAOS_RABBITMQ"]).values())
    assert set(pairs(env["CHAOS_RABBITMQ_NODES"])) == {"ctl1", "ctl2", "ctl3"}
    assert set(pairs(env["CHAOS_LIBVIRT"])) == {n for n, _, _ in COMPUTES}
    assert env["CHAOS_DB_USER"] and env["CHAOS_DB_PASSWORD"] and env["CHAOS_ERLANG_COOKIE"]


def test_lab_inventory_validates(lab: Lab) -> None:
    result = chaos("inventory", "check", str(lab.inventory_file))
    assert result.returncode == 0, result.stderr
    site = inventory.load(lab.inventory_file)
    assert [c.name for c in site.controllers] == ["ctl1", "ctl2", "ctl3"]
    assert {c.name: c.expect_vms for c in site.computes} == {
        "cmp1": "survive", "cmp2": "die", "cmp3": "die"}
    # the password file is referenced, never inlined
    assert lab_env()["CHAOS_DB_PASSWORD"] not in lab.inventory_file.read_text()


def test_a_row_written_through_each_galera_node_is_read_on_the_others(lab: Lab) -> None:
    env = lab_env()
    nodes = {name: hp.split(":") for name, hp in pairs(env["CHAOS_GALERA"]).items()}

    def connect(name: str) -> pymysql.Connection:  # type: ignore[type-arg]
        host, port = nodes[name]
        return pymysql.connect(host=host, port=int(port), user=env["CHAOS_DB_USER"],
                               password=env["CHAOS_DB_PASSWORD"], connect_timeout=5,
                               read_timeout=10, write_timeout=10, autocommit=True)

    with connect("ctl1") as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS labtest")
        cur.execute("CREATE TABLE IF NOT EXISTS labtest.rows "
                    "(id VARCHAR(64) PRIMARY KEY, via VARCHAR(8))")
    written = {}
    for name in nodes:
        row = uuid.uuid4().hex
        with connect(name) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO labtest.rows VALUES (%s, %s)", (row, name))
        written[row] = name
    for reader in nodes:
        with connect(reader) as conn, conn.cursor() as cur:
            # wsrep_sync_wait makes the read wait until this node applied what came before
            cur.execute("SET SESSION wsrep_sync_wait = 1")
            cur.execute("SELECT id, via FROM labtest.rows WHERE id IN %s", (list(written),))
            assert dict(cur.fetchall()) == written, f"read on {reader}"


def test_a_quorum_queue_message_published_on_one_node_is_consumed_on_another(lab: Lab) -> None:
    urls = pairs(lab_env()["CHAOS_RABBITMQ"])
    queue = f"labtest-{uuid.uuid4().hex[:8]}"
    body = uuid.uuid4().hex.encode()

    def connect(name: str) -> pika.BlockingConnection:
        params = pika.URLParameters(urls[name])
        params.socket_timeout = 5
        params.blocked_connection_timeout = 10
        params.connection_attempts = 2
        return pika.BlockingConnection(params)

    publisher = connect("ctl1")
    try:
        channel = publisher.channel()
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.confirm_delivery()
        channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2),
                              mandatory=True)
    finally:
        publisher.close()
    consumer = connect("ctl3")
    try:
        channel = consumer.channel()
        got = wait_for(lambda: ((m := channel.basic_get(queue, auto_ack=True))[2] is not None,
                                m[2]), what="the message on ctl3", timeout=10)
        assert got == body
        channel.queue_delete(queue)
    finally:
        consumer.close()


def test_ssh_reaches_every_host_with_the_lab_key(lab: Lab) -> None:
    site = inventory.load(lab.inventory_file)
    for host in [*site.controllers, *site.computes]:
        target = host_target(site, host.name, need="look at its processes")
        assert target.url == f"ssh://root@{host.address}:2222"
        # the server saw the connection arrive on the host's own address
        assert target.check("echo $SSH_CONNECTION", timeout=10).split()[2] == host.address


@pytest.mark.parametrize(("host", "survives"), [("cmp1", True), ("cmp2", False)])
def test_kill9_of_libvirtd_vms_survive_only_where_built_right(
    lab: Lab, host: str, survives: bool
) -> None:
    compute = compute_part(lab)
    uri = compute.libvirt_uri(host)
    before = {d.uuid: d for d in domains(uri)}
    assert before and all(d.state == "running" and d.qemu_pid for d in before.values())
    os.kill(compute.libvirtd_pid(host), 9)
    time.sleep(1.0)
    qemu_alive = {u: procs.alive(d.qemu_pid or 0) for u, d in before.items()}
    compute.start_libvirt_container(host)
    after = wait_for(lambda: (bool(r := domains(uri)), r), what=f"libvirt on {host}",
                     timeout=60, interval=0.5)
    if survives:
        assert all(qemu_alive.values()), "qemu died with libvirtd on the host built right"
        for d in after:
            assert d.state == "running"
            assert (d.qemu_pid, d.start_ticks) == (before[d.uuid].qemu_pid,
                                                   before[d.uuid].start_ticks)
    else:
        assert not any(qemu_alive.values()), "qemu outlived libvirtd in its own pid namespace"
        assert all(d.state != "running" or d.qemu_pid != before[d.uuid].qemu_pid for d in after)
        # put the lab back: the VM comes back as a new qemu process
        compute.start_domains(host)
    wait_for(lambda: (all(c.ok for c in compute.status()), compute.status()),
             what="computes healthy again", timeout=60, interval=0.5)


def _leftovers(root: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not procs.alive(int(entry.name)):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(root) in cmdline or "qemu-system" in cmdline:
            found.append(f"process {entry.name}: {cmdline[:100]}")
    found += [f"mount {line.split()[1]}" for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(root))]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=30).stdout
    found += [f"iptables {line}" for line in rules.splitlines() if "chaos:" in line]
    cgroups = Path("/sys/fs/cgroup")
    found += [f"cgroup {p}" for p in cgroups.glob("*/chaos-lab*")]
    found += [f"log link {p}" for p in kube.CONTAINER_LOGS.glob("*_openstack_*")]
    netns = Path("/run/netns")
    if netns.is_dir():
        found += [f"netns {p.name}" for p in netns.iterdir() if p.name.startswith("chaos")]
    addresses = [h.address for h in CONTROLLERS] + [a for _, a, _ in COMPUTES]
    for address in addresses:
        for port in (2222, 3306, 4567, 5672, 15672, 25672, 16509):
            if procs.port_open(address, port, timeout=0.2):
                found.append(f"port {address}:{port} still open")
    # the Kubernetes tier (lab up --kube): control plane, kubelets, Galera pods
    kube_ports = [(kube.API_ADDRESS, p) for p in (kube.API_PORT, kube.ETCD_CLIENT_PORT)]
    kube_ports += [(n.address, p) for n in kube.NODES for p in (kube.KUBELET_PORT, 3306, 4567)]
    found += [f"port {a}:{p} still open" for a, p in kube_ports
              if procs.port_open(a, p, timeout=0.2)]
    return found


def test_down_of_another_lab_root_never_touches_this_lab(lab: Lab, tmp_path: Path) -> None:
    """Measured once: a stale lab's 'down' killed the running lab's libvirt containers,
    because cgroup names were the same for every root."""
    (tmp_path / "lab.json").write_text('{"version": 1, "phase": "up", "daemons": []}')
    result = subprocess.run([sys.executable, "-m", "chaos.cli", "lab", "down"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "CHAOS_LAB_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert Lab(tmp_path).cgroup_prefix() != lab.cgroup_prefix()
    status = chaos("lab", "status")
    assert status.returncode == 0, status.stdout


@pytest.mark.lab_teardown
def test_down_leaves_nothing_behind_and_up_after_down_works(lab: Lab) -> None:
    result = chaos("lab", "down")
    assert result.returncode == 0, result.stderr
    assert _leftovers(lab.root) == []
    assert chaos("lab", "status").returncode == 3
    result = chaos("lab", "up")
    assert result.returncode == 0, result.stderr
    assert chaos("lab", "status").returncode == 0
    result = chaos("lab", "down")
    assert result.returncode == 0, result.stderr
    assert _leftovers(lab.root) == []
    # bad input: an address already taken is one line, exit 3, and nothing left started
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.12", 5672))
        sock.listen()
        result = chaos("lab", "up")
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "127.0.0.12:5672" in result.stderr
    assert _leftovers(lab.root) == []
    assert chaos("lab", "status").returncode == 3
