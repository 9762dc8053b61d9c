"""RabbitMQ drills: a quorum queue under publisher confirms must never lose a
confirmed message, whatever happens to the nodes, and the cluster must be whole again."""

from __future__ import annotations

import pytest

from chaos import expect
from chaos.faults import Faults
from chaos.inventory import Site
from chaos.journal import Event, Journal
from chaos.workload import Workload
from recovery import rabbitmq as recover_rabbitmq

pytestmark = [pytest.mark.destructive, pytest.mark.requires("rabbitmq")]


def rabbit_hosts(site: Site) -> list[str]:
    return [c.name for c in site.controllers if c.rabbitmq]


def confirmed(workload: Workload, more_than: int, timeout: float = 60) -> int:
    assert workload.publisher is not None
    return expect.more_acknowledged(workload.publisher.ledger, more_than,
                                    what="confirmed messages", timeout=timeout)


def test_kill_one_node_leader_moves_no_confirmed_message_lost(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    expect.rabbit_healthy(site)
    with workload.running(galera=False):
        assert workload.publisher is not None
        queue = workload.publisher.queue
        sent = confirmed(workload, 10)
        old_leader = expect.queue_leader(site, queue)
        victim = next(c.name for c in site.controllers
                      if c.rabbitmq and c.rabbitmq.node == old_leader)
        others = [h for h in rabbit_hosts(site) if h != victim]
        faults.add("kill", victim, "rabbitmq")
        expect.rabbit_running(site, others, journal=journal,
                              at_least=site.cluster("rabbitmq").recovered_by == "platform")
        new_leader = expect.new_queue_leader(site, queue, old_leader, timeout=60)
        confirmed(workload, sent + 10)
        plan = recover_rabbitmq.recover(site, journal=journal)
        expect.rabbit_healthy(site, journal=journal)
    journal.event(Event.RABBITMQ_LEADER, before=old_leader, after=new_leader)
    if plan.by_platform:
        expect.check(f"{victim} came back by the platform; the harness only watched",
                     lambda: not plan.steps, plan.render, journal=journal)
    else:
        expect.check(f"recovery found {victim} crashed with its data",
                     lambda: "crashed with data" in plan.situation, plan.render,
                     journal=journal)
    workload.assert_nothing_lost()


@pytest.mark.harness_recovers("rabbitmq")
def test_wipe_a_node_rejoins_as_new_member_with_every_queue_member_back(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    victim = rabbit_hosts(site)[1]
    others = [h for h in rabbit_hosts(site) if h != victim]
    expect.rabbit_healthy(site)
    with workload.running(galera=False):
        confirmed(workload, 10)
        faults.add("wipe", victim, "rabbitmq")
        expect.rabbit_running(site, others, journal=journal)
        plan = recover_rabbitmq.recover(site, journal=journal)
        view = expect.rabbit_healthy(site, journal=journal)
    expect.check(f"recovery found that {victim} lost its data",
                 lambda: "lost its data" in plan.situation, plan.render, journal=journal)
    expect.check("every quorum queue has all its members back",
                 lambda: view.queues_missing_members() == {},
                 lambda: str(view.queues_missing_members()), journal=journal)
    workload.assert_nothing_lost()


@pytest.mark.blast_radius(rabbitmq=3, controllers=3)
@pytest.mark.harness_recovers("rabbitmq")
def test_stop_every_node_in_the_unlucky_order_recover_all_messages_there(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    hosts = rabbit_hosts(site)
    expect.rabbit_healthy(site)
    with workload.running(galera=False):
        confirmed(workload, 20)
        # the first node stopped is the one a naive restart would start first
        for host in hosts:
            faults.add("stop", host, "rabbitmq")
    plan = recover_rabbitmq.recover(site, journal=journal)
    expect.rabbit_healthy(site, journal=journal)
    expect.check("recovery found the whole cluster stopped",
                 lambda: plan.situation == "whole cluster stopped", plan.render, journal=journal)
    expect.check(f"{hosts[-1]}, the last node stopped, is started first",
                 lambda: plan.bootstrap == hosts[-1], plan.render, journal=journal)
    workload.assert_nothing_lost()


@pytest.mark.blast_radius(rabbitmq=3, controllers=3)
@pytest.mark.harness_recovers("rabbitmq")
def test_stop_every_node_and_the_last_one_loses_its_disk_it_rejoins_as_new(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    first, second, last = rabbit_hosts(site)[:3]
    expect.rabbit_healthy(site)
    with workload.running(galera=False):
        confirmed(workload, 20)
        faults.add("stop", first, "rabbitmq")
        faults.add("stop", second, "rabbitmq")
        # the node still running, the one a naive restart would start first, loses its
        # disk: the cluster still knows its old identity and must forget it first
        faults.add("wipe", last, "rabbitmq")
    plan = recover_rabbitmq.recover(site, journal=journal)
    view = expect.rabbit_healthy(site, journal=journal)
    expect.check(f"{second}, the last node with its data to stop, boots first",
                 lambda: plan.bootstrap == second, plan.render, journal=journal)
    expect.check(f"the cluster forgets the wiped {last} before it starts", lambda: any(
        "forget_cluster_node" in s.command and last in s.effect for s in plan.steps),
        plan.render, journal=journal)
    expect.check("every quorum queue has all its members back",
                 lambda: view.queues_missing_members() == {},
                 lambda: str(view.queues_missing_members()), journal=journal)
    workload.assert_nothing_lost()
