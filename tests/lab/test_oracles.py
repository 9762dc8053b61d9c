"""Honest oracles: things are broken behind the harness's back, and the oracles must
say so. A verdict that cannot fail proves nothing."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pymysql
import pytest

from chaos import expect, inventory
from chaos.inventory import Controller, Site
from chaos.steps import Await
from chaos.wait import wait_for
from chaos.workload import DB, GaleraWriter, RabbitPublisher
from chaoslab import procs
from chaoslab.lab import Lab
from recovery import galera as recover_galera
from recovery import libvirt as recover_libvirt


@pytest.fixture
def site(lab: Lab) -> Site:
    return inventory.load(lab.inventory_file)


def run_writer(site: Site, ops: int = 30) -> GaleraWriter:
    """A writer that stops by itself after ``ops`` operations."""
    writer = GaleraWriter(site, interval=0.0, max_ops=ops, max_seconds=30)
    writer.start()
    assert writer._thread is not None
    writer._thread.join(30)
    return writer


def kill_galera(site: Site, node: str) -> None:
    host = site.host(node)
    assert isinstance(host, Controller) and host.galera and host.galera.pidfile
    pid = procs.read_pidfile(Path(host.galera.pidfile))
    assert pid is not None
    os.kill(pid, 9)


@contextlib.contextmanager
def session(site: Site, node: str) -> Iterator[Any]:
    """One SQL session on ``node`` (session variables hold across statements)."""
    host = site.host(node)
    conn = pymysql.connect(host=host.address, user=site.credentials.db.user,
                           password=site.credentials.db.password.reveal(), autocommit=True,
                           connect_timeout=5, read_timeout=10)
    with conn, conn.cursor() as cur:
        yield cur


def sql(site: Site, node: str, statement: str, *args: object) -> None:
    with session(site, node) as cur:
        cur.execute(statement, args)


def test_galera_oracle_sees_an_acknowledged_row_removed_from_one_node_only(site: Site) -> None:
    writer = run_writer(site)
    assert writer.verdict().ok, writer.verdict().summary()
    victim = sorted(writer.ledger.acked)[0]
    # wsrep_on=0 for this session: the delete is not replicated, ctl2 alone loses it
    with session(site, "ctl2") as cur:
        cur.execute("SET SESSION wsrep_on = 0")
        cur.execute(f"DELETE FROM {DB}.writes WHERE op_id = %s", (victim,))
        cur.execute("SET SESSION wsrep_on = 1")
    verdict = writer.verdict()
    assert not verdict.ok
    assert verdict.lost == {"ctl1": 0, "ctl2": 1, "ctl3": 0}
    assert verdict.lost_ids["ctl2"] == [victim]
    # and a row nobody acknowledged is a phantom
    sql(site, "ctl1", f"INSERT INTO {DB}.writes (run, op_id, via, at) VALUES (%s, %s, 'x', 0)",
        writer.run, "f" * 32)
    time.sleep(0.5)
    assert writer.verdict().phantom["ctl3"] == 1


def test_rabbit_oracle_sees_a_confirmed_message_taken_behind_its_back(site: Site) -> None:
    publisher = RabbitPublisher(site, interval=0.0, max_ops=20, max_seconds=30)
    publisher.start()
    assert publisher._thread is not None
    publisher._thread.join(30)
    assert len(publisher.ledger.acked) == 20
    ctl = site.host("ctl1")
    params = pika.ConnectionParameters(
        ctl.address, 5672, credentials=pika.PlainCredentials(
            site.credentials.rabbitmq.user, site.credentials.rabbitmq.password.reveal()),
        socket_timeout=5)
    conn = pika.BlockingConnection(params)
    try:
        method, _, body = conn.channel().basic_get(publisher.queue, auto_ack=True)
        assert method is not None
    finally:
        conn.close()
    verdict = publisher.verdict()
    publisher.delete_queue()
    assert not verdict.ok
    assert verdict.lost == 1 and verdict.lost_ids == [body.decode()]


def test_vm_oracle_sees_a_qemu_killed_during_a_scenario(site: Site) -> None:
    host = next(c.name for c in site.computes if c.expect_vms == "survive")
    before = expect.vm_snapshot(site, [host])
    assert before
    for dom in before.values():
        assert dom.qemu_pid is not None
        os.kill(dom.qemu_pid, 9)
        wait_for(lambda d=dom: (not procs.alive(d.qemu_pid or 0), d.qemu_pid),
                 what="qemu gone", timeout=10)
    verdict = expect.vm_verdict(before, expect.vm_snapshot(site, [host]))
    assert not verdict.all_survived
    assert sorted(verdict.died + verdict.restarted) == sorted(d.name for d in before.values())
    # put the lab back: nova would start the VM again, as a new qemu
    wait_for(lambda: (bool(recover_libvirt.start_stopped_domains(site, host)), "started"),
             what="domain restartable", timeout=30, interval=0.5)
    after = expect.vm_snapshot(site, [host])
    assert expect.vm_verdict(before, after).restarted


def test_bootstrap_forced_from_the_least_advanced_node_loses_acknowledged_writes(
    site: Site, lab: Lab
) -> None:
    writer = GaleraWriter(site, interval=0.01, max_ops=100000, max_seconds=120)
    writer.start()
    try:
        wait_for(lambda: (len(writer.ledger.acked) > 20, len(writer.ledger.acked)),
                 what="writes", timeout=30)
        kill_galera(site, "ctl1")
        expect.galera_quorum(site, ["ctl2", "ctl3"])
        acked = len(writer.ledger.acked)
        wait_for(lambda: (len(writer.ledger.acked) > acked + 20, len(writer.ledger.acked)),
                 what="writes without ctl1", timeout=60)
        kill_galera(site, "ctl2")
        kill_galera(site, "ctl3")
    finally:
        writer.stop()
    observed = recover_galera.observe(site)
    # the planner refuses to bootstrap the stale node, even when the operator names it
    plan = recover_galera.plan(site, observed, force_node="ctl1")
    assert plan.refused is not None and plan.steps == [], plan.render()
    assert "--node ctl1: ctl1 is at seqno" in plan.refused
    # the careless recovery, by hand: bootstrap the stale node and let clients in
    nodes = {c.name: c for c in site.controllers if c.galera}
    bootstrap_steps = recover_galera.bootstrap_steps(
        recover_galera.Context(site, nodes, observed, None, frozenset()), "ctl1",
        observed.positions["ctl1"].uuid)
    try:
        for step in bootstrap_steps:
            step.execute(site)
        wait_for(lambda: recover_galera._condition(site, Await("synced", "ctl1")),
                 what="ctl1 Primary", timeout=60)
        verdict = writer.verdict()
        assert not verdict.ok
        assert verdict.lost["ctl1"] > 0, verdict.summary()
    finally:
        # the lab is left diverged on purpose: rebuild it for whatever runs next
        lab.down()
        lab.up()
