"""Fault kinds on the real lab, each with its revert verified at the system level."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chaos import expect, inventory
from chaos.faults import Faults
from chaos.inventory import Controller
from chaoslab.lab import Lab
from recovery import libvirt as recover_libvirt


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


def test_cli_drill_libvirt_recover_holds_vms_to_their_qemu(lab: Lab) -> None:
    """The 3 a.m. path: chaos fault, chaos recover libvirt, chaos heal."""
    def chaos(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "chaos.cli", *args], capture_output=True,
                              text=True, timeout=300)

    site = inventory.load(lab.inventory_file)
    assert chaos("fault", "kill-container", "--node", "cmp1").returncode == 0
    result = chaos("recover", "libvirt")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VMs survived: 1, restarted: 0, died: 0" in result.stdout
    assert chaos("heal").returncode == 0
    # on a host built wrong the same drill ends in a failed verdict, exit 1
    assert chaos("fault", "kill", "--node", "cmp2", "--service", "libvirt").returncode == 0
    result = chaos("recover", "libvirt", "--node", "cmp2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "died: 1 (cmp2-vm1)" in result.stdout
    assert chaos("heal").returncode == 0
    assert recover_libvirt.start_stopped_domains(site, "cmp2") == ["cmp2-vm1"]
