"""The Kubernetes tier against a real API server (``chaos lab up --kube``): the seed's
Galera topology as pods, and the harness's k8s:// target and faults used for real —
exec, kill by exec, delete pod, cordon and drain, readiness by watch — and the scenario
suite run against it by inventory alone."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from chaos import expect, inventory
from chaos.errors import ProbeTimeout
from chaos.faults import Faults
from chaos.inventory import Compute, Controller, Site
from chaos.targets import for_url
from chaos.targets.k8s import K8sTarget
from chaos.wait import wait_for
from chaoslab.lab import Lab


def chaos(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chaos.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def kube_lab(lab: Lab) -> Lab:
    """The running lab with its Kubernetes tier (added to it when missing)."""
    if not lab.kube_enabled():
        lab.up(kube=True)
    return lab


@pytest.fixture
def site(kube_lab: Lab) -> Site:
    site = inventory.load(kube_lab.kube_inventory_file)
    expect.galera_healthy(site, timeout=120)
    return site


def pod_target(site: Site, url: str) -> K8sTarget:
    target = for_url(url, site)
    assert isinstance(target, K8sTarget)
    return target


def galera_target(site: Site, node: str) -> K8sTarget:
    host = site.host(node)
    assert isinstance(host, Controller) and host.galera is not None
    return pod_target(site, host.galera.target)


def pods(target: K8sTarget) -> list[Any]:
    return list(target.core.list_namespaced_pod(target.namespace,
                                                label_selector=target.selector,
                                                _request_timeout=10).items)


def ist_not_sst(kube_lab: Lab, node: str, since: int) -> None:
    """The node's log after ``since`` bytes shows an IST received and no rsync SST."""
    log = kube_lab.kube().galera().log_file(node).read_text(errors="replace")[since:]
    assert "IST received" in log, log[-2000:]
    assert "rsync SST completed on joiner" not in log


def log_size(kube_lab: Lab, node: str) -> int:
    return len(kube_lab.kube().galera().log_file(node).read_text(errors="replace"))


def test_galera_and_rabbitmq_run_as_the_seed_runs_them(kube_lab: Lab, site: Site) -> None:
    assert site.kind == "kubernetes"
    checks = [c for c in kube_lab.status() if c.component.startswith("kube/")]
    assert checks and all(c.ok for c in checks), checks
    for node in ("ctl1", "ctl2", "ctl3"):
        [pod] = pods(galera_target(site, node))
        # pinned to its controller, on the host's network, data on a hostPath
        assert pod.spec.node_name == node
        assert pod.spec.host_network is True
        assert pod.status.host_ip == site.host(node).address
        paths = [v.host_path.path for v in pod.spec.volumes if v.host_path]
        assert str(kube_lab.kube().galera().node_dir(node)) in paths
        owner = pod.metadata.owner_references[0]
        assert owner.kind == "ReplicaSet" and owner.name.startswith(f"galera-{node}-")
        host = site.host(node)
        assert isinstance(host, Controller) and host.rabbitmq is not None
        [rabbit] = pods(pod_target(site, host.rabbitmq.target))
        assert rabbit.spec.node_name == node and rabbit.spec.host_network is True
        assert host.rabbitmq.node == f"rabbit-{node}@{node}"  # a fixed Erlang name


def test_libvirt_runs_with_host_pid_and_nova_holds_its_connection(
    kube_lab: Lab, site: Site
) -> None:
    """The seed's compute: libvirt in a hostPID, host-network pod, its VM's qemu outside
    the container's cgroups; a nova-compute stand-in holding a qemu+tcp:// connection,
    which it takes up again after libvirtd was killed and restarted by the kubelet."""
    cmp1 = site.host("cmp1")
    assert isinstance(cmp1, Compute) and cmp1.libvirt is not None
    libvirt = pod_target(site, cmp1.libvirt.container)
    [pod] = pods(libvirt)
    assert pod.spec.host_pid is True and pod.spec.host_network is True
    owner = pod.metadata.owner_references[0]
    assert owner.kind == "DaemonSet"
    [vm] = expect.vm_snapshot(site, ["cmp1"]).values()
    cgroups = Path(f"/proc/{vm.qemu_pid}/cgroup").read_text()
    assert "kubepods" not in cgroups and "-kube-libvirt-cmp1" in cgroups, cgroups
    nova = pod_target(site, "k8s://openstack/?selector=app=nova-compute,node=cmp1")
    [nova_pod] = pods(nova)

    def nova_log() -> str:
        return str(nova.core.read_namespaced_pod_log(nova_pod.metadata.name, "openstack",
                                                     _request_timeout=10))

    assert "connected to qemu+tcp://127.0.1.21:16509/system" in nova_log()
    inv = str(kube_lab.kube_inventory_file)
    result = chaos("fault", "kill", "--node", "cmp1", "--service", "libvirt", "--inventory", inv)
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        result = chaos("recover", "libvirt", "--inventory", inv)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "VMs survived: 1, restarted: 0, died: 0" in result.stdout
    finally:
        assert chaos("heal", "--inventory", inv).returncode == 0
    log = wait_for(lambda: ((text := nova_log()).count("connected to") >= 2, text),
                   what="nova's stand-in to reconnect", timeout=60)
    assert "connection to qemu+tcp://127.0.1.21:16509/system lost" in log


def test_exec_runs_in_the_pod_and_a_kill_by_exec_leaves_the_pod_unready(
    kube_lab: Lab, site: Site
) -> None:
    """chaos fault kill through the real API server's exec: mariadbd dies inside the pod,
    the pod stays (its supervisor is PID 1) and turns unready; chaos recover galera
    starts the node again by exec and it rejoins by IST."""
    target = galera_target(site, "ctl2")
    [before] = pods(target)
    out = target.run("cat /proc/1/comm; echo $$", timeout=10).check().stdout.split()
    assert out[0] == "supervise"  # our shell runs in the pod's own PID namespace
    since = log_size(kube_lab, "ctl2")
    inv = str(kube_lab.kube_inventory_file)
    result = chaos("fault", "kill", "--node", "ctl2", "--service", "galera", "--inventory", inv)
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        expect.galera_quorum(site, ["ctl1", "ctl3"])
        # the readiness probe says what SQL says: unready at its next look (every 3 s)
        wait_for(lambda: (not target.ready(), "still Ready"),
                 what="ctl2's pod to turn unready", timeout=20)
        with pytest.raises(ProbeTimeout, match="Ready pod"):
            target.await_ready(timeout=6)
        result = chaos("recover", "galera", "--inventory", inv)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "joins by IST" in result.stdout
        assert target.await_ready(timeout=60) == before.metadata.name
        expect.galera_healthy(site)
    finally:
        assert chaos("heal", "--inventory", inv).returncode == 0
    [after] = pods(target)
    assert after.metadata.uid == before.metadata.uid, "the pod itself was never replaced"
    ist_not_sst(kube_lab, "ctl2", since)


def test_delete_pod_the_deployment_recreates_it_and_it_joins_by_ist(
    kube_lab: Lab, site: Site
) -> None:
    target = galera_target(site, "ctl1")
    [before] = pods(target)
    since = log_size(kube_lab, "ctl1")
    with Faults(site, inventory_path=str(kube_lab.kube_inventory_file)) as faults:
        fault = faults.add("delete-pod", "ctl1", "galera")
        expect.galera_quorum(site, ["ctl2", "ctl3"])
        faults.revert(fault)  # waits, by watch, for the replacement to be Ready
    expect.galera_healthy(site)
    [after] = [p for p in pods(target) if p.metadata.deletion_timestamp is None]
    assert after.metadata.uid != before.metadata.uid
    assert after.spec.node_name == "ctl1"
    ist_not_sst(kube_lab, "ctl1", since)


def test_drain_evicts_the_pinned_pod_which_waits_pending_until_uncordon(
    kube_lab: Lab, site: Site
) -> None:
    target = galera_target(site, "ctl3")
    nodes = kube_lab.kube().node_states
    with Faults(site, inventory_path=str(kube_lab.kube_inventory_file)) as faults:
        fault = faults.add("drain", "ctl3")
        assert nodes()["ctl3"] == "Ready,SchedulingDisabled"
        expect.galera_quorum(site, ["ctl1", "ctl2"])
        # the replacement cannot go anywhere else: pinned to its controller
        pending = [p for p in pods(target) if p.metadata.deletion_timestamp is None]
        assert [p.status.phase for p in pending] == ["Pending"]
        assert pending[0].spec.node_name is None
        faults.revert(fault)
    assert nodes()["ctl3"] == "Ready"
    expect.galera_healthy(site)
    assert target.ready()


def test_the_scenario_suite_runs_against_the_kube_tier_by_inventory_alone(
    kube_lab: Lab, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    result = chaos("run", "--inventory", str(kube_lab.kube_inventory_file), "--report-dir",
                   str(report), "-q", "-rs", timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    suite = ET.parse(report / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    cases = list(suite.iter("testcase"))
    skipped = {c.get("name"): c.find("skipped") for c in cases
               if c.find("skipped") is not None}
    # every drill applies to the seed's pods, and passes
    for family, least in (("test_galera", 7), ("test_rabbitmq", 3), ("test_controller", 2),
                          ("test_compute", 3)):
        family_cases = [c for c in cases if family in (c.get("classname") or "")]
        outcomes = [[e.tag for e in c if e.tag in ("failure", "error", "skipped")]
                    for c in family_cases]
        assert len(family_cases) >= least, family
        assert outcomes == [[]] * len(family_cases), (family, outcomes)
    # only the drills of a platform's own recovery skip, as the harness recovers here,
    # and the seed's question, as the tier's inventory names no cloud
    seed = skipped.pop("test_cut_off_one_controller_while_servers_boot_and_delete", None)
    assert seed is not None and "runs no openstack" in (seed.get("message") or ""), skipped
    assert set(skipped) == {"test_platform_recovers_a_full_outage_by_itself",
                            "test_a_stalled_platform_is_reported_then_taken_over_with_nothing_lost"
                            }, skipped
    assert all("does not apply: the harness recovers galera" in (s.get("message") or "")
               for s in skipped.values() if s is not None), skipped
    events = [json.loads(line) for line in (report / "journal.jsonl").read_text().splitlines()]
    assert {e["fault"] for e in events if e["event"] == "fault.inject"} == {
        e["fault"] for e in events if e["event"] == "fault.revert"}


def test_discover_finds_the_site_the_seed_tier_runs(kube_lab: Lab, site: Site,
                                                    tmp_path: Path) -> None:
    """The seed's pattern, discovered from the cluster: the same members, targets and
    process verbs the suite above runs with (the docker sections aside: the API does
    not describe a node's container runtime)."""
    out = tmp_path / "discovered.yaml"
    result = chaos("inventory", "discover", "--kubeconfig", str(kube_lab.kube().kubeconfig),
                   "--namespace", "openstack", "--access", "local", "--db-user", "chaos",
                   "--rabbitmq-user", "chaos", "--output", str(out), timeout=60)
    assert result.returncode == 0, result.stderr
    found = inventory.load(out)
    assert found.clusters == {}  # the harness recovers the seed's clusters
    for mine in site.controllers:
        theirs = found.host(mine.name)
        assert isinstance(theirs, Controller)
        assert theirs.galera is not None and mine.galera is not None
        assert (theirs.galera.target, theirs.galera.pidfile, theirs.galera.datadir) == (
            mine.galera.target, mine.galera.pidfile, mine.galera.datadir)
        assert theirs.rabbitmq is not None and mine.rabbitmq is not None
        assert (theirs.rabbitmq.node, theirs.rabbitmq.target, theirs.rabbitmq.pidfile) == (
            mine.rabbitmq.node, mine.rabbitmq.target, mine.rabbitmq.pidfile)
    for mine_c in site.computes:
        theirs_c = found.host(mine_c.name)
        assert isinstance(theirs_c, Compute) and theirs_c.libvirt and mine_c.libvirt
        assert theirs_c.libvirt.uri == mine_c.libvirt.uri
