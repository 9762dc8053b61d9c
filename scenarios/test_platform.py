"""Drills of a platform's own recovery, where the site says a platform recovers the
cluster (``clusters.galera.recovered_by: platform``, as on openstack-helm): the harness
injects the fault and watches; it acts only when asked (``--take-over``), and then by
the same rules as its own procedure. The proof is the same as everywhere: quorum back,
every acknowledged write on every node."""

from __future__ import annotations

import pytest

from chaos import expect
from chaos.faults import Faults
from chaos.inventory import Site
from chaos.journal import Journal
from chaos.workload import Workload
from recovery import galera as recover_galera
from recovery import platform
from scenarios.test_galera import galera_nodes, writes_acknowledged

pytestmark = [pytest.mark.destructive, pytest.mark.requires("galera"),
              pytest.mark.platform_recovers("galera")]

# longer than the platform needs for a full outage it can settle (openstack-helm: 13
# fresh samples 10 s apart, then a boot: ~150 s measured), so a stall is one
STALL_SECONDS = 210.0


@pytest.mark.blast_radius(galera=3, controllers=3)
def test_platform_recovers_a_full_outage_by_itself(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    expect.galera_healthy(site)
    with workload.running():
        writes_acknowledged(workload, 0)
        for node in galera_nodes(site):
            faults.add("kill", node, "galera")
        plan = recover_galera.recover(site, journal=journal)
        expect.galera_healthy(site, journal=journal)
    expect.check("the platform brought the cluster back, the harness only watched",
                 lambda: plan.by_platform and not plan.steps, plan.render, journal=journal)
    workload.assert_nothing_lost()


@pytest.mark.blast_radius(galera=3, controllers=3)
def test_a_stalled_platform_is_reported_then_taken_over_with_nothing_lost(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    first, second, third = galera_nodes(site)[:3]
    expect.galera_healthy(site)
    with workload.running():
        acked = writes_acknowledged(workload, 0)
        # the third node's pods cannot run: its position is unknown to the platform,
        # and the others go on committing without it
        faults.add("drain", third)
        expect.galera_quorum(site, [first, second], journal=journal)
        writes_acknowledged(workload, acked + 20)
        faults.add("kill", first, "galera")
        faults.add("kill", second, "galera")
        watched = platform.watch(site, "galera", journal=journal, deadline=STALL_SECONDS)
        expect.check(f"the platform stalls: no bootstrap without {third}'s position "
                     f"(watched {STALL_SECONDS:.0f}s)", lambda: not watched.recovered,
                     watched.describe, journal=journal)
        expect.check("the stall is reported with its evidence (the state ConfigMap, "
                     "the pods' events)", lambda: any(
                         "state ConfigMap" in line for line in watched.evidence),
                     watched.describe, journal=journal)
        # the operator's first try: refused, naming the node whose position is unknown
        observed = recover_galera.observe(site)
        refused = recover_galera.plan(site, observed, take_over=True)
        expect.check(f"a take-over is refused while {third}'s position is unknown",
                     lambda: bool(refused.refused) and third in (refused.refused or ""),
                     refused.render, journal=journal)
        # then the override, naming the most advanced of the nodes it knows
        known = [n for n in (first, second) if observed.positions[n].seqno is not None]
        best = max(known, key=lambda n: observed.positions[n].seqno or -1)
        plan = recover_galera.recover(site, take_over=True, force_node=best, journal=journal)
        expect.galera_quorum(site, [first, second], journal=journal, timeout=120)
    expect.check(f"the take-over rebooted the cluster from {best} through the platform",
                 lambda: plan.bootstrap == best and not plan.by_platform, plan.render,
                 journal=journal)
    # the drain's revert lets the third node run again; the platform joins it
    faults.revert_all()
    expect.galera_healthy(site, journal=journal, timeout=300)
    workload.assert_nothing_lost()
