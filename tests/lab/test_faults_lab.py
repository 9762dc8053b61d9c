"""Fault kinds on the real lab, each with its revert verified at the system level."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from chaos import expect, inventory
from chaos.faults import Faults
from chaos.inventory import Controller
from chaos.lab.lab import Lab


def test_fill_disk_takes_the_space_and_gives_it_back(lab: Lab) -> None:
    site = inventory.load(lab.inventory_file)
    ctl1 = site.host("ctl1")
    assert isinstance(ctl1, Controller) and ctl1.galera
    datadir = Path(ctl1.galera.datadir)
    before = os.statvfs(datadir)
    with Faults(site) as faults:
        fault = faults.add("fill-disk", "ctl1", "galera", fill_mib=64)
        filler = datadir / f".chaos-fill-{fault.id}"
        assert filler.stat().st_size == 64 * 2**20
        during = os.statvfs(datadir)
        assert (before.f_bavail - during.f_bavail) * during.f_frsize >= 60 * 2**20
    assert not filler.exists()


def test_partition_rules_are_tagged_and_all_gone_after_revert(lab: Lab) -> None:
    site = inventory.load(lab.inventory_file)
    expect.galera_healthy(site)
    with Faults(site) as faults:
        fault = faults.add("partition", "ctl2", "galera")
        rules = [r for r in subprocess.run(["iptables-save"], capture_output=True, text=True,
                                           timeout=30).stdout.splitlines()
                 if f"chaos:{fault.id}" in r]
        # both directions between ctl2 and each of the five other hosts
        assert len(rules) == 10 and all("-j DROP" in r for r in rules)
        expect.galera_non_primary(site, "ctl2")
    left = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=30).stdout
    assert "chaos:" not in left
    expect.galera_healthy(site)
