"""RabbitMQ recovery on the real lab: a member whose quorum queue data is gone while its
Mnesia is intact (a partial wipe) must not come back with amnesia (issue 11)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from chaos import expect, inventory
from chaos.inventory import Controller
from chaos.wait import wait_for
from chaos.workload import RabbitPublisher
from chaoslab import procs
from chaoslab.lab import Lab


def test_partial_wipe_rejoins_as_a_new_member_and_nothing_confirmed_is_lost(lab: Lab) -> None:
    site = inventory.load(lab.inventory_file)
    expect.rabbit_healthy(site)
    ctl3 = site.host("ctl3")
    assert isinstance(ctl3, Controller) and ctl3.rabbitmq and ctl3.rabbitmq.pidfile
    assert ctl3.rabbitmq.data_dir
    publisher = RabbitPublisher(site, interval=0.01, max_ops=300, max_seconds=60)
    publisher.start()
    try:
        wait_for(lambda: (len(publisher.ledger.acked) >= 100, len(publisher.ledger.acked)),
                 what="confirmed messages", timeout=60)
    finally:
        publisher.stop()
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
