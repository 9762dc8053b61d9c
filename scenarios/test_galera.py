"""Galera failure drills. Each reads like its runbook: steady state, fault, expected
effect, recovery, and the proof — quorum back, every acknowledged write on every node
(and, where the site names its cloud, OpenStack's boot/delete workload judged beside it).
Claims about outcomes are ``expect.check``s, so ``--dry-run`` can show them unevaluated."""

from __future__ import annotations

import pytest

from chaos import expect
from chaos.cloud import boot_delete_where_named
from chaos.faults import Faults
from chaos.inventory import Site
from chaos.journal import Event, Journal
from chaos.workload import Workload
from recovery import galera as recover_galera

pytestmark = [pytest.mark.destructive, pytest.mark.requires("galera")]


def galera_nodes(site: Site) -> list[str]:
    return [c.name for c in site.controllers if c.galera]


def writes_acknowledged(workload: Workload, more_than: int, timeout: float = 30) -> int:
    assert workload.writer is not None
    return expect.more_acknowledged(workload.writer.ledger, more_than,
                                    what="acknowledged writes", timeout=timeout)


def test_kill_one_node_quorum_kept_node_back_by_ist(
    site: Site, controller: str, faults: Faults, workload: Workload, journal: Journal
) -> None:
    expect.galera_healthy(site)
    others = [n for n in galera_nodes(site) if n != controller]
    # where the site names its cloud, OpenStack boots and deletes servers throughout:
    # its services reach Galera through one write endpoint, which must move off a
    # killed writer (the verdict's figures go into the JUnit properties and report)
    with workload.running(also=boot_delete_where_named(site)):
        faults.add("kill", controller, "galera")
        expect.galera_quorum(site, others, journal=journal,
                             at_least=site.cluster("galera").recovered_by == "platform")
        writes_acknowledged(workload, len(workload.writer.ledger.acked) if workload.writer else 0)
        plan = recover_galera.recover(site, journal=journal)
        expect.galera_healthy(site, journal=journal)
    if plan.by_platform:
        expect.check(f"{controller} came back by the platform; the harness only watched",
                     lambda: not plan.steps, plan.render, journal=journal)
    else:
        expect.check("recovery found a Primary component with a member missing (degraded)",
                     lambda: plan.situation == "degraded", plan.render, journal=journal)
        expect.check(f"{controller} rejoined by IST", lambda: any(
            "joins by IST" in s.effect for s in plan.steps), plan.render, journal=journal)
    workload.assert_nothing_lost()


@pytest.mark.blast_radius(galera=2)
@pytest.mark.harness_recovers("galera")
def test_kill_two_nodes_survivor_non_primary_then_bootstrapped_in_place(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    first, second, survivor = galera_nodes(site)[:3]
    expect.galera_healthy(site)
    with workload.running():
        faults.add("kill", first, "galera")
        faults.add("kill", second, "galera")
        expect.galera_non_primary(site, survivor, journal=journal)
        plan = recover_galera.recover(site, journal=journal)
        expect.galera_healthy(site, journal=journal)
    expect.check(f"recovery found {survivor} alone and non-Primary",
                 lambda: plan.situation == "non-primary", plan.render, journal=journal)
    expect.check(f"{survivor}, the survivor, is bootstrapped in place",
                 lambda: plan.bootstrap == survivor, plan.render, journal=journal)
    workload.assert_nothing_lost()


@pytest.mark.blast_radius(galera=3, controllers=3)
@pytest.mark.harness_recovers("galera")
def test_full_outage_bootstraps_from_the_most_advanced_node_not_ctl1(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    first, second, third = galera_nodes(site)[:3]
    expect.galera_healthy(site)
    with workload.running():
        acked = writes_acknowledged(workload, 0)
        # the first node dies while the others go on committing without it
        faults.add("kill", first, "galera")
        expect.galera_quorum(site, [second, third], journal=journal)
        writes_acknowledged(workload, acked + 20)
        faults.add("kill", second, "galera")
        faults.add("kill", third, "galera")
        observation = recover_galera.observe(site)
        plan = recover_galera.plan(site, observation)
        journal.event(Event.RECOVERY_PLAN, text=plan.render())
        recover_galera.execute(site, plan, journal=journal)
        expect.galera_healthy(site, journal=journal)
    expect.check("recovery found a full outage", lambda: plan.situation == "full-outage",
                 plan.render, journal=journal)
    expect.check(f"the bootstrap node is not {first}, the first node killed",
                 lambda: plan.bootstrap != first, plan.render, journal=journal)
    expect.check(f"the positions of {first} and of the bootstrap node are known", lambda: (
        plan.positions[first].seqno is not None
        and bool(plan.positions[plan.bootstrap or ""].seqno)), plan.render, journal=journal)
    expect.check(f"the bootstrap node is ahead of {first}", lambda: (
        (plan.positions[first].seqno or 0) < (plan.positions[plan.bootstrap or ""].seqno or 0)),
        plan.render, journal=journal)
    workload.assert_nothing_lost()


def test_partition_one_node_minority_non_primary_then_rejoins(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    isolated = galera_nodes(site)[-1]
    others = [n for n in galera_nodes(site) if n != isolated]
    expect.galera_healthy(site)
    with workload.running():
        cut = faults.add("partition", isolated, "galera")
        expect.galera_non_primary(site, isolated, journal=journal)
        expect.galera_quorum(site, others, journal=journal)
        faults.revert(cut)
        expect.galera_healthy(site, journal=journal)
    workload.assert_nothing_lost()


def test_freeze_node_past_failure_detector_evicted_then_rejoins(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    frozen = galera_nodes(site)[1]
    others = [n for n in galera_nodes(site) if n != frozen]
    expect.galera_healthy(site)
    with workload.running():
        fault = faults.add("freeze", frozen, "galera")
        expect.galera_quorum(site, others, journal=journal)
        faults.revert(fault)
        expect.galera_healthy(site, journal=journal)
    workload.assert_nothing_lost()
