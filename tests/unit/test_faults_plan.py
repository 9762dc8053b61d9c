"""Fault planning is pure: the steps are data, and the blast-radius guard refuses
what would take a majority of a cluster down unless declared."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chaos import inventory
from chaos.errors import ConfigError, FaultError
from chaos.faults import Fault, check_blast_radius, open_on_site, plan
from chaos.ledger import Ledger
from chaos.targets.base import Action
from tests.unit.test_inventory import VALID


def site(**extra: Any) -> inventory.Site:
    data = copy.deepcopy(VALID)
    for ctl in data["controllers"]:
        ctl["galera"].update(pidfile="/run/mysqld/mysqld.pid", start="mariadbd --defaults-file=x")
        ctl["rabbitmq"].update(pidfile="/run/rabbit.pid", start="rabbitmq-server",
                               data_dir="/var/lib/rabbitmq/mnesia")
    data.update(extra)
    return inventory.parse(data)


def test_kill_galera_is_sigkill_then_start_on_the_node_target() -> None:
    fault = plan(site(), "kill", "ctl2", "galera")
    assert [s.target for s in fault.inject] == ["ssh://root@10.0.0.2"]
    assert "kill -s KILL" in fault.inject[0].command
    assert "/run/mysqld/mysqld.pid" in fault.inject[0].command
    assert "mariadbd --defaults-file=x" in fault.revert[0].command
    assert fault.down == {"galera": ["ctl2"]}


def test_freeze_is_stop_and_cont() -> None:
    fault = plan(site(), "freeze", "ctl1", "rabbitmq")
    assert "STOP" in fault.inject[0].command and "CONT" in fault.revert[0].command


def test_partition_tags_every_rule_with_the_fault_id() -> None:
    fault = plan(site(), "partition", "ctl1", fault_id="p1")
    rules = fault.inject[0].command.split(" && ")
    # both directions to each of the other three hosts
    assert len(rules) == 6
    assert all("chaos:p1" in r and "-j DROP" in r for r in rules)
    assert "chaos:p1" in fault.revert[0].command
    assert fault.down == {"galera": ["ctl1"], "rabbitmq": ["ctl1"]}


def test_service_partition_only_cuts_its_ports() -> None:
    fault = plan(site(), "partition", "ctl1", "galera", fault_id="p2")
    assert "--ports 4567,4568,4444" in fault.inject[0].command
    assert fault.down == {"galera": ["ctl1"]}


def test_power_off_kills_every_service_of_the_host() -> None:
    fault = plan(site(), "power-off", "ctl3")
    assert len(fault.inject) == 2 and len(fault.revert) == 2
    assert fault.down == {"galera": ["ctl3"], "rabbitmq": ["ctl3"]}


def test_wipe_deletes_the_data_directory_contents_only() -> None:
    fault = plan(site(), "wipe", "ctl1", "rabbitmq")
    assert "find /var/lib/rabbitmq/mnesia -mindepth 1 -delete" in fault.inject[1].command


def test_fill_disk_is_bounded() -> None:
    fault = plan(site(), "fill-disk", "ctl1", "galera", fill_mib=10**6)
    assert "1024M" in fault.inject[0].command
    assert fault.down == {}


def test_partition_rules_go_to_the_host_or_where_the_site_says() -> None:
    fault = plan(site(), "partition", "ctl2", "galera")
    assert fault.inject[0].target == fault.revert[0].target == "ssh://root@10.0.0.2:22"
    # every host an address of this machine (the lab): this kernel filters them all
    fault = plan(site(firewall="local"), "partition", "ctl2", "galera")
    assert fault.inject[0].target == fault.revert[0].target == "local://"


def unreachable(host: str) -> inventory.Site:
    """The site with ``host`` given no access at all."""
    data = copy.deepcopy(VALID)
    for h in [*data["controllers"], *data["computes"]]:
        if h["name"] == host:
            del h["ssh"]
    return inventory.parse(data)


@pytest.mark.parametrize(("host", "kind", "service", "need"), [
    ("ctl2", "partition", "galera", "partition it"),
    ("cmp1", "kill", "libvirt", "kill and restart its libvirt container"),
    ("cmp1", "kill-container", None, "kill and restart its libvirt container"),
])
def test_a_fault_on_a_host_without_access_is_refused_not_run_here(
        host: str, kind: str, service: str | None, need: str) -> None:
    with pytest.raises(ConfigError) as caught:
        plan(unreachable(host), kind, host, service)
    assert str(caught.value) == (f"host {host}: the inventory gives no access (ssh or local) "
                                 f"— needed to {need}")


def test_a_host_stated_local_is_acted_on_here() -> None:
    data = copy.deepcopy(VALID)
    del data["computes"][0]["ssh"]
    data["computes"][0]["access"] = "local"
    fault = plan(inventory.parse(data), "kill-container", "cmp1")
    assert fault.inject[0].target == fault.revert[0].target == "local://"


def test_kill_libvirt_and_container() -> None:
    fault = plan(site(), "kill", "cmp1", "libvirt")
    assert "docker -H unix:///var/run/docker.sock inspect" in fault.inject[0].command
    assert "docker -H unix:///var/run/docker.sock start libvirt" in fault.revert[0].command
    fault = plan(site(), "kill-container", "cmp1")
    assert "kill -s KILL libvirt" in fault.inject[0].command


@pytest.mark.parametrize(
    ("kind", "host", "service", "message"),
    [
        ("explode", "ctl1", "galera", "unknown fault kind 'explode'"),
        ("kill", "ctl9", "galera", "no host named 'ctl9'"),
        ("kill", "ctl1", "nova", "unknown service 'nova'"),
        ("kill", "ctl1", None, "needs --service"),
        ("kill", "cmp1", "galera", "host cmp1 has no galera service"),
        ("kill-docker", "ctl1", None, "applies to compute hosts"),
        ("partition", "ctl1", "libvirt", "partition takes --service galera, rabbitmq"),
    ],
)
def test_bad_fault_requests_are_config_errors(kind: str, host: str, service: str | None,
                                              message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan(site(), kind, host, service)


def test_a_pidless_service_cannot_be_killed() -> None:
    with pytest.raises(ConfigError, match="pidfile and start are needed"):
        plan(inventory.parse(copy.deepcopy(VALID)), "kill", "ctl1", "galera")


def test_round_trip_through_json() -> None:
    fault = plan(site(), "partition", "ctl2")
    assert Fault.from_json(fault.to_json()) == fault


def test_blast_radius_refuses_a_galera_majority() -> None:
    s = site()
    first = plan(s, "kill", "ctl1", "galera")
    check_blast_radius(s, [], first)
    second = plan(s, "kill", "ctl2", "galera")
    with pytest.raises(FaultError, match="2 of 3 galera members"):
        check_blast_radius(s, [first], second)
    check_blast_radius(s, [first], second, {"galera": 2})
    # the other cluster is not affected by galera's count
    check_blast_radius(s, [first], plan(s, "kill", "ctl2", "rabbitmq"))


def test_blast_radius_refuses_every_controller() -> None:
    s = site()
    # each cluster keeps its majority, but all three controllers are hit at once
    open_faults = [plan(s, "partition", "ctl1", "galera"), plan(s, "kill", "ctl2", "rabbitmq")]
    third = Fault("f3", "kill", "ctl3", "docker", [], [], {"docker": ["ctl3"]})
    with pytest.raises(FaultError, match="every controller"):
        check_blast_radius(s, open_faults, third)
    check_blast_radius(s, open_faults, third, {"controllers": 3})


@pytest.mark.parametrize(("pid", "alive"), [("", False), ("abc", False), ("$$", True),
                                            ("999999999", False)])
def test_alive_needs_a_live_numeric_pid(pid: str, alive: bool) -> None:
    import subprocess

    from chaos.steps import ALIVE

    result = subprocess.run(["sh", "-c", f'{ALIVE} alive "{pid}"'], timeout=10)
    assert (result.returncode == 0) is alive


def test_blast_radius_counts_only_faults_open_on_the_same_site(tmp_path: Any) -> None:
    s = site()
    ledger = Ledger(tmp_path / "ledger")
    for host in ("ctl1", "ctl2"):
        fault = plan(s, "kill", host, "galera")
        # the Kubernetes tier's site beside the process lab: same host names
        ledger.record(fault.id, {"id": fault.id, "inventory": "/lab/inventory-kube.yaml",
                                 "fault": fault.to_json()})
    third = plan(s, "kill", "ctl3", "galera")
    assert open_on_site(ledger, "/lab/inventory.yaml") == []
    check_blast_radius(s, open_on_site(ledger, "/lab/inventory.yaml"), third)
    same_site = open_on_site(ledger, "/lab/inventory-kube.yaml")
    assert len(same_site) == 2
    with pytest.raises(FaultError, match="3 of 3 galera"):
        check_blast_radius(s, same_site, third)


def pod_site(*, platform: bool, access: str | None = "local") -> inventory.Site:
    """Galera in pods (openstack-helm's StatefulSet), its cluster recovered by the
    platform or by the harness."""
    data: dict[str, Any] = {
        "name": "osh", "kind": "kubernetes",
        "credentials": {"db": {"user": "root", "password": {"env": "P"}},
                        "rabbitmq": {"user": "u", "password": {"env": "P"}},
                        "erlang_cookie": {"env": "C"}},
        "kubernetes": {"kubeconfig": "/tmp/kubeconfig"},
        "controllers": [
            {"name": f"ctl{i}", "address": f"127.0.1.1{i}",
             **({"access": access} if access else {}),
             "galera": {"target": f"k8s://openstack/mariadb-server-{i - 1}?container=mariadb",
                        "datadir": "/var/lib/mysql", "reach": "port-forward",
                        **({} if platform else {"pidfile": "/run/mysqld/mysqld.pid",
                                                "start": "start-mariadb"})}}
            for i in (1, 2, 3)],
    }
    if platform:
        data["clusters"] = {"galera": {"recovered_by": "platform", "platform": "openstack-helm",
                                       "state_configmap": "mariadb-mariadb-state",
                                       "deadline_seconds": 420}}
    return inventory.parse(data)


def test_a_pod_is_crashed_from_its_node_and_the_platform_brings_it_back() -> None:
    fault = plan(pod_site(platform=True), "kill", "ctl2", "galera")
    (kill,), (back,) = fault.inject, fault.revert
    assert kill.action is Action.CRASH and kill.subject == "mariadbd"
    assert kill.target == "k8s://openstack/mariadb-server-1?container=mariadb"
    assert "node's PID namespace" in kill.command
    # the harness starts nothing: it waits for the platform, up to the cluster's deadline
    assert back.action is Action.AWAIT_READY and back.timeout == 420


def test_a_crashed_pod_of_a_harness_cluster_is_started_by_the_harness() -> None:
    fault = plan(pod_site(platform=False), "kill", "ctl1", "galera")
    assert fault.inject[0].action is Action.CRASH
    assert fault.revert[0].action is None and "start-mariadb" in fault.revert[0].command


def test_power_off_crashes_every_pod_of_the_host() -> None:
    fault = plan(pod_site(platform=True), "power-off", "ctl1")
    assert [s.action for s in fault.inject] == [Action.CRASH]
    assert fault.down == {"galera": ["ctl1"]}


def test_a_platform_pod_with_no_way_to_its_node_cannot_be_crashed() -> None:
    with pytest.raises(ConfigError, match=r"ctl1.galera: a crash of its pod is sent from "
                                          r"the node: give host ctl1 an access"):
        plan(pod_site(platform=True, access=None), "kill", "ctl1", "galera")


def test_delete_pod_says_it_is_a_clean_restart() -> None:
    fault = plan(pod_site(platform=True), "delete-pod", "ctl1", "galera")
    assert "a clean restart" in fault.inject[0].command and "not a crash" in fault.inject[0].command


def test_a_crash_step_survives_the_ledger() -> None:
    fault = plan(pod_site(platform=True), "kill", "ctl3", "galera")
    again = Fault.from_json(fault.to_json())
    assert again.inject[0].subject == "mariadbd" and again.inject[0].action is Action.CRASH


def test_a_partition_cuts_pods_on_a_pod_network_inside_their_own_namespace() -> None:
    fault = plan(pod_site(platform=True), "partition", "ctl1", "galera")
    host_rules, pod_cut = fault.inject
    assert host_rules.action is None and "iptables" in host_rules.command
    assert pod_cut.action is Action.PARTITION_POD
    assert pod_cut.target == "k8s://openstack/mariadb-server-0?container=mariadb"
    fid = fault.id
    assert pod_cut.subject == f"{fid} 4567,4568,4444"  # the service's own ports
    # undone pod first, then the host's rules, each by its tag
    assert fault.revert[0].action is Action.UNPARTITION_POD and fault.revert[0].subject == fid
    assert fid in fault.revert[1].command


def test_a_whole_host_partition_cuts_every_pod_of_the_host_on_every_port() -> None:
    fault = plan(pod_site(platform=True), "partition", "ctl2")
    pods = [s for s in fault.inject if s.action is Action.PARTITION_POD]
    assert [s.subject for s in pods] == [fault.id]


def test_a_freeze_of_a_pod_is_stop_then_cont_from_its_node() -> None:
    fault = plan(pod_site(platform=True), "freeze", "ctl2", "galera")
    assert [(s.action, s.subject) for s in fault.inject] == [(Action.SIGNAL, "STOP mariadbd")]
    assert [(s.action, s.subject) for s in fault.revert] == [(Action.SIGNAL, "CONT mariadbd")]


def test_a_wipe_of_a_platform_pod_empties_its_volume_on_the_node_then_deletes_the_pod() -> None:
    fault = plan(pod_site(platform=True), "wipe", "ctl1", "galera")
    (wipe,), (back,) = fault.inject, fault.revert
    assert wipe.action is Action.WIPE_POD and wipe.subject == "/var/lib/mysql"
    assert "PVC or hostPath" in wipe.command
    assert back.action is Action.AWAIT_READY and back.timeout == 420
    # where the harness recovers, a wipe stays a kill, the data directory emptied, a start
    harness = plan(pod_site(platform=False), "wipe", "ctl1", "galera")
    assert [s.action for s in harness.inject] == [None, None]
