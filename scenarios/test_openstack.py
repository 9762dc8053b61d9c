"""The seed's question: what happens with reliability when we cut off one of the
controllers? Its answer is a Rally run that boots and deletes servers while the
controller is cut off, and a pass criterion stated before the run (below).

The controller cut off is the last one that serves no OpenStack API of the inventory's
(the lab runs one copy of each API, on ctl1; a real site's run on every controller
behind a VIP, and its inventory names none of them as a host's service): its Galera
node and its RabbitMQ node leave their clusters, and every OpenStack service whose
database connection or AMQP connection went to it must find another member.
"""

from __future__ import annotations

import pytest

from chaos import expect
from chaos.cloud import ACTIVE_TIMEOUT, BootDelete
from chaos.faults import Faults
from chaos.inventory import Site
from chaos.journal import Event, Journal
from chaos.workload import Workload
from recovery import rabbitmq as recover_rabbitmq

pytestmark = [pytest.mark.destructive, pytest.mark.requires("galera", "rabbitmq", "openstack")]

# The pass criterion, stated before the run
MIN_SUCCESS = 0.95  # of boot/delete operations succeed
MAX_ERROR_WINDOW = 30.0  # seconds: no API answers errors for longer
CUT_FOR = 60.0  # seconds the controller stays cut off, operations going on
MIN_OPERATIONS = 20  # judged over at least this many: under 20, 95 % lets none fail
# and: every server that existed before is still ACTIVE, none of the run's is left
# behind (lost or doubled), placement's allocations match nova's instances after the heal


def cut_off_victim(site: Site) -> tuple[str, list[str]]:
    """The last controller with both cluster members and no API of the inventory's."""
    members = [c for c in site.controllers if c.galera and c.rabbitmq]
    victim = [c.name for c in members if c.keystone is None][-1]
    return victim, [c.name for c in members if c.name != victim]


def test_cut_off_one_controller_while_servers_boot_and_delete(
    site: Site, faults: Faults, workload: Workload, journal: Journal
) -> None:
    victim, others = cut_off_victim(site)
    expect.galera_healthy(site)
    expect.rabbit_healthy(site)
    boots = BootDelete(site, concurrency=2, max_ops=200, max_seconds=900,
                       min_success=MIN_SUCCESS, max_window=MAX_ERROR_WINDOW)
    with workload.running(also=[boots]):
        expect.more_acknowledged(boots.ledger, 0, what="servers booted and deleted before "
                                 "the cut", timeout=180)
        cut = faults.add("partition", victim)
        expect.galera_non_primary(site, victim, journal=journal)
        expect.galera_quorum(site, others, journal=journal)
        expect.rabbit_running(site, others, journal=journal)
        before_cut = len(boots.ledger.acked)
        # the cloud goes on booting (or not) while the controller stays cut off; how
        # many operations completed meanwhile is journaled, the verdict judges them all
        expect.hold(CUT_FOR, what=f"{victim} cut off while the workload runs")
        journal.event(Event.CHECK, what=f"operations completed with {victim} cut off",
                      ok=True, completed=len(boots.ledger.acked) - before_cut)
        faults.revert(cut)
        expect.galera_healthy(site, journal=journal)
        recover_rabbitmq.recover(site, journal=journal)
        expect.rabbit_healthy(site, journal=journal)
        healed = len(boots.ledger.acked)
        # a worker may be waiting out a server that never went ACTIVE (its bound); a
        # slow site goes on until the verdict has MIN_OPERATIONS to judge
        expect.more_acknowledged(boots.ledger, max(healed, MIN_OPERATIONS - 1),
                                 what="servers booted and deleted, one after the heal",
                                 timeout=ACTIVE_TIMEOUT + 120)
    verdict = workload.verdict("openstack")
    expect.check(f"OpenStack served through {victim}'s cut: >= {MIN_SUCCESS:.0%} of "
                 f"operations, no error window over {MAX_ERROR_WINDOW:g}s, every server "
                 "that existed still ACTIVE, none of the run's left, placement consistent",
                 lambda: verdict.ok, verdict.summary, journal=journal)
    workload.assert_nothing_lost()
