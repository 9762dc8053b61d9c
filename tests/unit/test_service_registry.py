"""A service is a module and one registration: the core (fault planning, the blast-radius
guard, the site's list of services) works for one it has never heard of. Here etcd, a
quorum cluster on every controller, written against the ``Service`` protocol alone."""

from __future__ import annotations

from typing import Any

import pytest

from chaos.errors import ConfigError, FaultError
from chaos.faults import KINDS_TABLE, check_blast_radius, plan
from chaos.inventory import Compute, Controller, Site
from chaos.services import SERVICES, Placement, Process, Service, Where
from chaos.steps import Step
from tests.unit.test_faults_plan import site


class Etcd:
    name = "etcd"
    quorum = True
    ports = "2380"
    kinds = frozenset({"kill", "stop", "freeze", "partition", "power-off"})

    def runs_on(self, host: Controller | Compute) -> bool:
        return isinstance(host, Controller)

    def placement(self, host: Controller | Compute) -> Placement:
        return Placement.at(f"ssh://root@{host.address}")

    def process(self, site: Site, host: Controller | Compute) -> Process:
        return Process(self.name, f"ssh://root@{host.address}", "/run/etcd.pid",
                       "etcd --config-file /etc/etcd.yaml", "/var/lib/etcd")

    def fault_steps(self, site: Site, kind: str, host: Controller | Compute,
                    fault_id: str) -> tuple[list[Step], list[Step]] | None:
        return None


@pytest.fixture
def etcd(monkeypatch: pytest.MonkeyPatch) -> Service:
    service = Etcd()
    monkeypatch.setitem(SERVICES, "etcd", service)  # undone after the test: nothing left
    return service


def test_the_builtin_services_keep_the_protocol() -> None:
    assert list(SERVICES) == ["galera", "rabbitmq", "libvirt", "docker", "keystone"]
    for service in SERVICES.values():
        proto: Service = service
        assert proto.kinds <= set(KINDS_TABLE), proto.name


@pytest.mark.usefixtures("etcd")
@pytest.mark.parametrize(("kind", "signal"), [("kill", "KILL"), ("stop", "TERM"),
                                              ("freeze", "STOP")])
def test_a_registered_service_is_killed_stopped_and_frozen(kind: str, signal: str) -> None:
    fault = plan(site(), kind, "ctl2", "etcd")
    assert fault.inject[0].target == "ssh://root@10.0.0.2"
    assert f"kill -s {signal}" in fault.inject[0].command
    assert "/run/etcd.pid" in fault.inject[0].command
    assert fault.down == {"etcd": ["ctl2"]}
    if kind != "freeze":
        assert "etcd --config-file /etc/etcd.yaml" in fault.revert[0].command


@pytest.mark.usefixtures("etcd")
def test_the_blast_radius_guard_counts_a_registered_cluster() -> None:
    s = site()
    first = plan(s, "kill", "ctl1", "etcd")
    second = plan(s, "kill", "ctl2", "etcd")
    with pytest.raises(FaultError, match="2 of 3 etcd members"):
        check_blast_radius(s, [first], second)
    check_blast_radius(s, [first], second, {"etcd": 2})


@pytest.mark.usefixtures("etcd")
def test_host_faults_and_the_site_include_a_registered_service() -> None:
    s = site()
    assert "etcd" in s.services()
    power = plan(s, "power-off", "ctl1")
    assert set(power.down) == {"galera", "rabbitmq", "etcd"}
    assert [step.service for step in power.revert] == ["galera", "rabbitmq", "etcd"]
    assert "--ports 2380" in plan(s, "partition", "ctl1", "etcd").inject[0].command
    with pytest.raises(ConfigError, match="fault wipe does not apply to etcd"):
        plan(s, "wipe", "ctl1", "etcd")


def test_unregistered_it_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patched:
        patched.setitem(SERVICES, "etcd", Etcd())
        assert "etcd" in SERVICES
    assert "etcd" not in SERVICES
    with pytest.raises(ConfigError, match="unknown service 'etcd'"):
        plan(site(), "kill", "ctl1", "etcd")


@pytest.mark.parametrize(("url", "where"), [("ssh://root@10.0.0.1", Where.HOST),
                                            ("local://", Where.HOST),
                                            ("docker://cmp1/libvirt", Where.CONTAINER),
                                            ("k8s://openstack/?selector=app=x", Where.POD)])
def test_placement_is_read_once_from_the_scheme(url: str, where: Any) -> None:
    placed = Placement.at(url)
    assert placed.where is where
    assert placed.in_pod is (where is Where.POD)


def test_the_readme_lists_the_fault_kinds_of_the_table() -> None:
    """The README's table is generated: regenerate it with chaos.faults.kinds_markdown()."""
    from pathlib import Path

    from chaos.faults import kinds_markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("<!-- fault-kinds:begin -->\n", 1)[1].split(
        "\n<!-- fault-kinds:end -->", 1)[0]
    assert section == kinds_markdown()
