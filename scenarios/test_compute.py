"""Compute drills: nova-compute's libvirt in a container, docker under it. A VM
survives only if its qemu process does: same pid, same start time.

Where the site names its cloud (an ``openstack:`` section) and nova runs a compute
service on the drilled host, nova is asked too (``chaos.cloud.nova_on``): its servers
there (a witness booted when it has none) are among the VMs followed, and after the
recovery nova-compute is up and enabled again within its bound, every one of them is
still ACTIVE, and a new server boots there."""

from __future__ import annotations

import pytest

from chaos import expect, probes
from chaos.cloud import nova_on
from chaos.faults import Faults
from chaos.inventory import Compute, Site
from chaos.journal import Event, Journal
from recovery import libvirt as recover_libvirt

pytestmark = [pytest.mark.destructive, pytest.mark.requires("libvirt")]


def expected(site: Site, host: str) -> str:
    node = site.host(host)
    assert isinstance(node, Compute)
    return node.expect_vms


def put_back(site: Site, host: str, journal: Journal) -> None:
    """Leave the host as found: VMs the fault killed are started again (nova's job)."""
    started = recover_libvirt.start_stopped_domains(site, host)
    if started:
        journal.event(Event.VMS_RESTARTED_BY_HARNESS, host=host, domains=started)


def test_kill_libvirt_container_vms_keep_their_qemu(
    site: Site, compute: str, faults: Faults, journal: Journal
) -> None:
    with nova_on(site, compute) as nova:
        before = expect.vm_snapshot(site, [compute])
        expect.check(f"a VM runs on {compute} to prove anything with", lambda: bool(before),
                     journal=journal)
        faults.add("kill-container", compute)
        recover_libvirt.recover(site, only=compute, journal=journal)
        verdict = expect.vm_verdict(before, expect.vm_snapshot(site, [compute]),
                                    journal=journal)
        journal.event(Event.QUORUM, service="libvirt", host=compute)
        expect.nova_host(nova, journal=journal)
    if expected(site, compute) == "survive":
        expect.check(f"every VM on {compute} kept its qemu", lambda: verdict.all_survived,
                     verdict.summary, journal=journal)
    else:
        # a deliberately wrong host: the harness must *detect* that its VMs died
        expect.check(f"the oracle sees VMs on {compute} die or restart ({compute} is built "
                     "wrong)", lambda: bool(verdict.died or verdict.restarted),
                     verdict.summary, journal=journal)
        put_back(site, compute, journal)


def test_kill9_libvirtd_vms_survive_only_with_hostpid_and_own_cgroup(
    site: Site, compute: str, faults: Faults, journal: Journal
) -> None:
    with nova_on(site, compute) as nova:
        before = expect.vm_snapshot(site, [compute])
        faults.add("kill", compute, "libvirt")
        recover_libvirt.recover(site, only=compute, journal=journal)
        verdict = expect.vm_verdict(before, expect.vm_snapshot(site, [compute]),
                                    journal=journal)
        journal.event(Event.QUORUM, service="libvirt", host=compute)
        expect.nova_host(nova, journal=journal)
    if expected(site, compute) == "survive":
        expect.check(f"every VM on {compute} kept its qemu", lambda: verdict.all_survived,
                     verdict.summary, journal=journal)
    else:
        put_back(site, compute, journal)
        # cmp3 keeps qemu alive through a libvirtd kill only if its container survives it;
        # with libvirtd as the container's main process it does not
        expect.check(f"the oracle sees a VM on {compute} die or restart ({compute} is built "
                     "wrong)", lambda: not verdict.all_survived, verdict.summary,
                     journal=journal)


def test_kill_docker_daemon_vms_and_libvirt_outlive_it_on_a_host_built_right(
    site: Site, faults: Faults, journal: Journal
) -> None:
    host = next(c.name for c in site.computes if c.libvirt and c.docker
                and c.expect_vms == "survive")
    with nova_on(site, host) as nova:
        before = expect.vm_snapshot(site, [host])
        fault = faults.add("kill-docker", host)
        # what survives the daemon: libvirt keeps answering, every qemu keeps running
        during = expect.vm_verdict(before, expect.vm_snapshot(site, [host]))
        expect.check(f"every VM on {host} kept its qemu while docker was down",
                     lambda: during.all_survived, during.summary, journal=journal)
        expect.check(f"libvirt on {host} still answers and lists its domains",
                     lambda: bool(probes.domains(site, host)), journal=journal)
        # what recovery is: the daemon back, the container (re)started, VMs untouched
        faults.revert(fault)
        recover_libvirt.recover(site, only=host, journal=journal)
        verdict = expect.vm_verdict(before, expect.vm_snapshot(site, [host]),
                                    journal=journal)
        journal.event(Event.QUORUM, service="libvirt", host=host)
        expect.nova_host(nova, journal=journal)
    expect.check(f"every VM on {host} kept its qemu", lambda: verdict.all_survived,
                 verdict.summary, journal=journal)
