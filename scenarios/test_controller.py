"""Controller drills: a whole controller lost at once — both its Galera node and its
RabbitMQ node. Both clusters must keep quorum, lose nothing, and take the host back.
Where the site names its cloud, OpenStack boots and deletes servers throughout, and its
verdict (success rate, API error window, servers intact, placement) is judged with the
rest; ``test_openstack.py`` asks the seed's question with its own stated criteria."""

from __future__ import annotations

import pytest

from chaos import expect
from chaos.cloud import boot_delete_where_named
from chaos.faults import Faults
from chaos.inventory import Site
from chaos.journal import Event, Journal
from chaos.workload import Workload
from recovery import galera as recover_galera
from recovery import rabbitmq as recover_rabbitmq

pytestmark = [pytest.mark.destructive, pytest.mark.requires("galera", "rabbitmq")]


def last_controller(site: Site) -> tuple[str, list[str]]:
    names = [c.name for c in site.controllers if c.galera and c.rabbitmq]
    return names[-1], names[:-1]


def test_power_off_a_controller_both_clusters_keep_quorum_and_take_it_back(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    victim, others = last_controller(site)
    expect.galera_healthy(site)
    expect.rabbit_healthy(site)
    with workload.running(also=boot_delete_where_named(site)):
        power = faults.add("power-off", victim)
        expect.galera_quorum(site, others, journal=journal,
                             at_least=site.cluster("galera").recovered_by == "platform")
        expect.rabbit_running(site, others, journal=journal,
                              at_least=site.cluster("rabbitmq").recovered_by == "platform")
        # the host comes back: its RabbitMQ node restarts as is, Galera rejoins by IST
        for step in power.revert:
            if step.service == "rabbitmq":
                faults.execute(step)
        plan = recover_galera.recover(site, journal=journal)
        expect.galera_healthy(site, journal=journal)
        expect.rabbit_healthy(site, journal=journal)
        faults.revert(power)
    if plan.by_platform:
        expect.check(f"{victim} came back by the platform; the harness only watched",
                     lambda: not plan.steps, plan.render, journal=journal)
    else:
        expect.check(f"{victim}'s Galera node rejoined by IST", lambda: any(
            "joins by IST" in s.effect for s in plan.steps), plan.render, journal=journal)
    workload.assert_nothing_lost()


def test_partition_a_controller_both_clusters_keep_quorum_and_heal(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    victim, others = last_controller(site)
    expect.galera_healthy(site)
    expect.rabbit_healthy(site)
    with workload.running(also=boot_delete_where_named(site)):
        cut = faults.add("partition", victim)
        expect.galera_non_primary(site, victim, journal=journal)
        expect.galera_quorum(site, others, journal=journal)
        expect.rabbit_running(site, others, journal=journal)
        faults.revert(cut)
        expect.galera_healthy(site, journal=journal)
        # with RabbitMQ's default 'ignore' handling the cluster stays split after the
        # network heals: the recovery restarts the minority
        plan = recover_rabbitmq.recover(site, journal=journal)
        expect.rabbit_healthy(site, journal=journal)
    journal.event(Event.RABBITMQ_RECOVERY, situation=plan.situation)
    workload.assert_nothing_lost()
