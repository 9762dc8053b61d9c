"""Recovery refusals on the real lab: what must never be bootstrapped blindly."""

from __future__ import annotations

import subprocess
import sys

from chaos import expect, inventory
from chaos.faults import Faults
from chaos.inventory import Controller
from chaos.steps import Await, detached
from chaos.targets import for_url
from chaos.wait import wait_for
from chaoslab.lab import Lab
from recovery import galera


def test_two_nodes_bootstrapped_separately_is_split_history_and_refused(lab: Lab) -> None:
    site = inventory.load(lab.inventory_file)
    expect.galera_healthy(site)
    allowed = {"galera": 3, "controllers": 3}
    ctl3 = site.host("ctl3")
    assert isinstance(ctl3, Controller) and ctl3.galera and ctl3.galera.start
    try:
        with Faults(site, allowed=allowed) as faults:
            for node in ("ctl1", "ctl2", "ctl3"):
                faults.add("kill", node, "galera")
            # someone "fixes" ctl3 alone: a new cluster from an undefined position,
            # which starts a new history (a new cluster UUID) on top of the old data
            target = for_url(ctl3.galera.target, site)
            datadir = ctl3.galera.datadir
            target.check("rm -f %s %s", f"{datadir}/grastate.dat", f"{datadir}/gvwstate.dat")
            target.check(detached(
                ctl3.galera.start + " --wsrep-new-cluster --wsrep-start-position="
                "00000000-0000-0000-0000-000000000000:-1", "/tmp/chaos-split-ctl3.log"))
            wait_for(lambda: galera._condition(site, Await("synced", "ctl3")), what="ctl3 alone",
                     timeout=60)
            uuids = {galera.observe(site).positions["ctl3"].uuid}
            target.check("kill -9 $(cat %s)", ctl3.galera.pidfile or "")
            observed = galera.observe(site)
            uuids |= {p.uuid for p in observed.positions.values()}
            assert len(uuids) == 2, observed.positions
            plan = galera.plan(site, observed)
            assert plan.refused is not None and "split history" in plan.refused
            assert plan.steps == []
            # the CLI says the same and exits 1 (refused as unsafe), changing nothing
            result = subprocess.run([sys.executable, "-m", "chaos.cli", "recover", "galera"],
                                    capture_output=True, text=True, timeout=300)
            assert result.returncode == 1, result.stdout + result.stderr
            assert "REFUSED: split history" in result.stdout
            assert galera.observe(site).positions == observed.positions
            # nothing to put back: the lab is rebuilt from nothing below
            for fault in faults.open:
                faults.ledger.clear(fault.id)
            faults.open.clear()
    finally:
        lab.down()
        lab.up()
