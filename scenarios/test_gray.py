"""Gray failures: a member alive but silent, frozen and left frozen. Nothing kills it, so
nothing restarts it; recovery must see it for what it is, give it a bounded time to
answer, kill it, and recover it as a crashed member, with nothing acknowledged lost and
every VM in its qemu. The freeze fault's revert still thaws whatever is left behind."""

from __future__ import annotations

import pytest

from chaos import expect
from chaos.faults import Faults
from chaos.inventory import Site
from chaos.journal import Event, Journal
from chaos.workload import Workload
from recovery import galera as recover_galera
from recovery import libvirt as recover_libvirt
from recovery import rabbitmq as recover_rabbitmq

pytestmark = [pytest.mark.destructive]


def members(site: Site, service: str) -> list[str]:
    return [c.name for c in site.controllers if getattr(c, service) is not None]


@pytest.mark.requires("galera")
@pytest.mark.harness_recovers("galera")
def test_galera_node_frozen_and_left_so_is_replaced_nothing_lost(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    frozen = members(site, "galera")[1]
    others = [n for n in members(site, "galera") if n != frozen]
    expect.galera_healthy(site)
    with workload.running():
        faults.add("freeze", frozen, "galera")
        expect.galera_quorum(site, others, journal=journal)
        plan = recover_galera.recover(site, journal=journal)
        expect.galera_healthy(site, journal=journal)
    expect.check(f"recovery saw {frozen} alive but silent and settled it first",
                 lambda: [m.name for m in plan.settled] == [frozen], plan.render,
                 journal=journal)
    expect.check(f"{frozen} rejoined by IST after it was killed", lambda: any(
        "joins by IST" in s.effect and frozen in s.effect for s in plan.steps),
        plan.render, journal=journal)
    workload.assert_nothing_lost()


@pytest.mark.requires("rabbitmq")
@pytest.mark.harness_recovers("rabbitmq")
def test_rabbitmq_node_frozen_and_left_so_is_replaced_nothing_confirmed_lost(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    frozen = members(site, "rabbitmq")[2]
    others = [n for n in members(site, "rabbitmq") if n != frozen]
    expect.rabbit_healthy(site)
    with workload.running(galera=False):
        assert workload.publisher is not None
        expect.more_acknowledged(workload.publisher.ledger, 10, what="confirmed messages",
                                 timeout=60)
        faults.add("freeze", frozen, "rabbitmq")
        expect.rabbit_running(site, others, journal=journal)
        plan = recover_rabbitmq.recover(site, journal=journal)
        view = expect.rabbit_healthy(site, journal=journal)
    expect.check(f"recovery saw {frozen} alive but silent and settled it first",
                 lambda: [m.name for m in plan.settled] == [frozen], plan.render,
                 journal=journal)
    expect.check("every quorum queue has all its members back",
                 lambda: view.queues_missing_members() == {},
                 lambda: str(view.queues_missing_members()), journal=journal)
    workload.assert_nothing_lost()


@pytest.mark.requires("libvirt")
def test_libvirtd_frozen_and_left_so_answers_again_every_vm_in_its_qemu(
    site: Site, faults: Faults, journal: Journal
) -> None:
    right = [c.name for c in site.computes if c.libvirt and c.expect_vms == "survive"]
    if not right:
        pytest.skip("no compute host built to keep its VMs (expect_vms: survive)")
    host = right[0]
    before = expect.vm_snapshot(site, [host])
    expect.check(f"a VM runs on {host} to prove anything with", lambda: bool(before),
                 journal=journal)
    faults.add("freeze", host, "libvirt")
    plan = recover_libvirt.recover(site, only=host, journal=journal)
    verdict = expect.vm_verdict(before, expect.vm_snapshot(site, [host]), journal=journal)
    journal.event(Event.QUORUM, service="libvirt", host=host)
    expect.check(f"recovery saw libvirtd on {host} alive but silent and settled it first",
                 lambda: [m.name for m in plan.settled] == [host], plan.render,
                 journal=journal)
    expect.check(f"every VM on {host} kept its qemu", lambda: verdict.all_survived,
                 verdict.summary, journal=journal)
