"""RabbitMQ recovery on the real lab: a member whose quorum queue data is gone while its
Mnesia is intact (a partial wipe) must not come back with amnesia (issue 11)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from chaos import expect, inventory
from chaos.inventory import Controller, Site
from chaos.wait import wait_for
from chaos.workload import RabbitPublisher
from chaoslab import procs
from chaoslab.lab import Lab


def confirmed(site: Site, count: int) -> RabbitPublisher:
    """A publisher stopped once ``count`` messages were confirmed (bounded: 3x that many
    operations, 60 s)."""
    publisher = RabbitPublisher(site, interval=0.01, max_ops=3 * count, max_seconds=60)
    publisher.start()
    try:
        wait_for(lambda: (len(publisher.ledger.acked) >= count, len(publisher.ledger.acked)),
                 what="confirmed messages", timeout=60)
    finally:
        publisher.stop()
    return publisher


def test_partial_wipe_rejoins_as_a_new_member_and_nothing_confirmed_is_lost(lab: Lab) -> None:
    site = inventory.load(lab.inventory_file)
    expect.rabbit_healthy(site)
    ctl3 = site.host("ctl3")
    assert isinstance(ctl3, Controller) and ctl3.rabbitmq and ctl3.rabbitmq.pidfile
    assert ctl3.rabbitmq.data_dir
    publisher = confirmed(site, 100)
    try:
        pid = procs.read_pidfile(Path(ctl3.rabbitmq.pidfile))
        assert pid is not None
        os.kill(pid, 9)
        wait_for(lambda: (not procs.alive(pid), pid), what="ctl3 dead", timeout=15)
        quorum = Path(ctl3.rabbitmq.data_dir) / ctl3.rabbitmq.node / "quorum"
        assert quorum.is_dir()
        shutil.rmtree(quorum)
        result = subprocess.run([sys.executable, "-m", "chaos.cli", "recover", "rabbitmq"],
                                capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "situation: lost its data: ctl3" in result.stdout
        assert "quorum queue data (quorum/) is gone" in result.stdout
        assert "forget_cluster_node" in result.stdout
        view = expect.rabbit_healthy(site)
        assert view.queues_missing_members() == {}
        verdict = publisher.verdict()
        assert verdict.ok and verdict.confirmed >= 100, verdict.summary()
    finally:
        lab_ok = subprocess.run([sys.executable, "-m", "chaos.cli", "lab", "status"],
                                capture_output=True, timeout=120).returncode == 0
        if not lab_ok:
            lab.down()
            lab.up()


def _kill_and_wipe(site_host: Controller) -> None:
    r = site_host.rabbitmq
    assert r is not None and r.pidfile and r.data_dir
    pid = procs.read_pidfile(Path(r.pidfile))
    if pid is not None and procs.alive(pid):
        os.kill(pid, 9)
        wait_for(lambda: (not procs.alive(pid), pid), what=f"{site_host.name} dead",
                 timeout=15)
    shutil.rmtree(Path(r.data_dir) / r.node)


def test_a_quorum_queue_whose_majority_lost_its_data_is_refused_up_front(lab: Lab) -> None:
    site = inventory.load(lab.inventory_file)
    expect.rabbit_healthy(site)
    confirmed(site, 20)  # a quorum queue with members on every node
    try:
        for name in ("ctl2", "ctl3"):
            host = site.host(name)
            assert isinstance(host, Controller)
            _kill_and_wipe(host)
        # ctl1, alone, pauses (pause_minority): nothing answers, no queue can be read
        result = subprocess.run([sys.executable, "-m", "chaos.cli", "recover", "rabbitmq"],
                                capture_output=True, text=True, timeout=400)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "REFUSED: a majority of the nodes lost their data (ctl2, ctl3)" in result.stdout
        assert "lost its majority for good" in result.stdout
        assert "forget_cluster_node" not in result.stdout  # nothing forgotten
    finally:
        lab.down()
        lab.up()


def test_a_node_reset_and_booted_alone_is_not_booted_first_after_a_full_stop(
        lab: Lab) -> None:
    """What a node reset and booted on its own leaves on disk (its cluster_nodes.config and
    nodes_running_at_shutdown name only itself) is written into a stopped node's real data
    directory: the procedure must read it as a stranger, not as the last node to stop."""
    site = inventory.load(lab.inventory_file)
    expect.rabbit_healthy(site)
    hosts = [site.host(n) for n in ("ctl1", "ctl2", "ctl3")]
    assert all(isinstance(h, Controller) and h.rabbitmq for h in hosts)
    try:
        for host in hosts:
            assert isinstance(host, Controller) and host.rabbitmq and host.rabbitmq.pidfile
            pid = procs.read_pidfile(Path(host.rabbitmq.pidfile))
            assert pid is not None
            os.kill(pid, 15)  # a clean stop, in order: ctl3 stops last
            wait_for(lambda p=pid: (not procs.alive(p), p), what=f"{host.name} stopped",
                     timeout=60)
        ctl1 = hosts[0]
        assert isinstance(ctl1, Controller) and ctl1.rabbitmq and ctl1.rabbitmq.data_dir
        mnesia = Path(ctl1.rabbitmq.data_dir) / ctl1.rabbitmq.node
        me = ctl1.rabbitmq.node
        (mnesia / "cluster_nodes.config").write_text(f"{{['{me}'],['{me}']}}.\n")
        (mnesia / "nodes_running_at_shutdown").write_text(f"['{me}'].\n")
        result = subprocess.run([sys.executable, "-m", "chaos.cli", "recover", "rabbitmq"],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "chosen node: ctl3 (the last node to stop" in result.stdout
        assert "ctl1: it was reset and booted on its own" in result.stdout
        view = expect.rabbit_healthy(site, timeout=120)
        assert view.queues_missing_members() == {}
    finally:
        result = subprocess.run([sys.executable, "-m", "chaos.cli", "lab", "status"],
                                capture_output=True, timeout=120)
        if result.returncode != 0:
            lab.down()
            lab.up()
