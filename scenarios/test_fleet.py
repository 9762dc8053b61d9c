"""Rolling faults across the fleet: libvirtd killed on every compute built to keep its
VMs, one host after another at a stated rate, each brought back before the next falls,
as a bad libvirt package rolled out by a configuration-management run would do it.
The verdict covers every VM of the fleet, the hosts not faulted included."""

from __future__ import annotations

import os
import time

import pytest

from chaos import expect
from chaos.errors import ConfigError
from chaos.faults import Faults
from chaos.inventory import Site
from chaos.journal import Event, Journal
from recovery import libvirt as recover_libvirt

pytestmark = [pytest.mark.destructive, pytest.mark.requires("libvirt")]

# The stated rate: one host every ROLL_EVERY seconds (or as fast as each host recovers,
# when that takes longer). Operators set it with CHAOS_ROLL_EVERY.
ROLL_EVERY = float(os.environ.get("CHAOS_ROLL_EVERY", "2"))
# the most hosts one roll takes: a pass over the seed's 50 computes and then some
MAX_HOSTS = 100


def rolled(site: Site) -> list[str]:
    """The hosts a roll takes: every compute whose VMs are expected to survive."""
    return [c.name for c in site.computes if c.libvirt and c.expect_vms == "survive"]


def test_rolling_libvirt_kill_across_the_fleet_every_vm_survives(
    site: Site, faults: Faults, journal: Journal
) -> None:
    if not 0 < ROLL_EVERY <= 600:
        raise ConfigError(f"CHAOS_ROLL_EVERY={ROLL_EVERY:g}: 0 to 600 seconds between hosts")
    fleet = [c.name for c in site.computes if c.libvirt]
    hosts = rolled(site)[:MAX_HOSTS]
    before = expect.vm_snapshot(site, fleet)
    expect.check(f"VMs run on the fleet to prove anything with ({len(before)} on "
                 f"{len(fleet)} computes)", lambda: bool(before), journal=journal)
    journal.event(Event.ROLL, hosts=hosts, every=ROLL_EVERY)
    started = time.monotonic()
    for n, host in enumerate(hosts):
        expect.pace(started, n, ROLL_EVERY)
        fault = faults.add("kill", host, "libvirt")
        recover_libvirt.recover(site, only=host, journal=journal)
        faults.revert(fault)  # nothing left to undo: closes it in the ledger
    took = time.monotonic() - started
    verdict = expect.vm_verdict(before, expect.vm_snapshot(site, fleet), journal=journal)
    journal.event(Event.QUORUM, service="libvirt", hosts=len(hosts),
                  rate=round(len(hosts) / took * 60, 1) if took else 0)
    expect.check(f"every VM of the fleet ({len(before)} on {len(fleet)} computes) kept its "
                 f"qemu through libvirtd killed on {len(hosts)} hosts in {took:.0f}s",
                 lambda: verdict.all_survived, verdict.summary, journal=journal)
