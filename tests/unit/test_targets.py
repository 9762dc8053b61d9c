"""Target URLs: one table, clear errors, quoting done once."""

from __future__ import annotations

import copy

import pytest

from chaos import inventory
from chaos.errors import ConfigError
from chaos.targets import for_url, host_target
from chaos.targets.base import quote
from chaos.targets.docker import DockerTarget
from chaos.targets.docker import parse as parse_docker
from chaos.targets.local import LocalTarget
from chaos.targets.ssh import SshTarget
from tests.unit.test_inventory import VALID


def site() -> inventory.Site:
    return inventory.parse(copy.deepcopy(VALID))


def test_local_target_runs_and_reports_exit_status() -> None:
    target = for_url("local://")
    assert isinstance(target, LocalTarget)
    assert target.check("echo %s", "a b; rm -rf /").strip() == "a b; rm -rf /"
    assert target.run("exit 3").exit_status == 3


def test_ssh_url_parts_and_key_from_the_site() -> None:
    data = copy.deepcopy(VALID)
    data["controllers"][0]["ssh"]["key_file"] = "/etc/chaos/key"
    target = for_url("ssh://admin@10.0.0.1:2200", inventory.parse(data))
    assert isinstance(target, SshTarget)
    assert (target.user, target.host, target.port, target.key_file) == (
        "admin", "10.0.0.1", 2200, "/etc/chaos/key")


def with_access(host: int, access: str | None) -> inventory.Site:
    """VALID, its compute reached as ``access`` says (None: no access given)."""
    data = copy.deepcopy(VALID)
    del data["computes"][host]["ssh"]
    if access is not None:
        data["computes"][host]["access"] = access
    return inventory.parse(data)


def test_host_target_is_what_the_inventory_says() -> None:
    assert host_target(site(), "ctl1", need="test").url == "ssh://root@10.0.0.1:22"
    cmp1 = host_target(site(), "cmp1", need="test")
    assert isinstance(cmp1, SshTarget) and cmp1.key_file == "/etc/chaos/id_ed25519"
    assert host_target(with_access(0, "local"), "cmp1", need="test").url == "local://"


def test_a_host_without_access_is_refused_naming_it_and_the_need() -> None:
    with pytest.raises(ConfigError) as caught:
        host_target(with_access(0, None), "cmp1", need="partition it")
    assert str(caught.value) == ("host cmp1: the inventory gives no access (ssh or local) — "
                                 "needed to partition it")
    # never this machine by default: a docker target through such a host is refused too
    with pytest.raises(ConfigError, match=r"host cmp1: .* needed to reach its docker daemon"):
        for_url("docker://cmp1/libvirt", with_access(0, None))


def test_docker_target_goes_through_the_host_with_its_socket() -> None:
    target = for_url("docker://cmp1/libvirt", site())
    assert isinstance(target, DockerTarget)
    assert target.container == "libvirt" and target.socket == "unix:///var/run/docker.sock"
    assert target.via.url == "ssh://root@10.0.1.1:22"
    local = for_url("docker://cmp1/libvirt", with_access(0, "local"))
    assert isinstance(local, DockerTarget) and local.via.url == "local://"


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://x", "unknown target scheme 'ftp'"),
    ("10.0.0.1", "not a target URL"),
    ("k8s://openstack/mariadb-0", "a k8s target needs the site's inventory"),
    ("galera://ctl1", "needs the site's inventory"),
    ("docker://cmp1/libvirt", "needs the site's inventory"),
])
def test_bad_urls_are_one_clear_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        for_url(url)


@pytest.mark.parametrize("url", ["docker://cmp1", "docker://cmp1/a/b", "docker:///libvirt"])
def test_docker_url_needs_host_and_one_container(url: str) -> None:
    with pytest.raises(ValueError, match="not docker://HOST/CONTAINER"):
        parse_docker(url)


def test_quote_fills_placeholders_shell_safely() -> None:
    assert quote("kill -s %s %s", "KILL", "1; reboot") == "kill -s KILL '1; reboot'"


def test_websocket_calls_never_share_the_client_other_api_calls_use() -> None:
    """The kubernetes client's exec and port-forward swap their ApiClient's call_api for
    the call: on the client the target's other calls use, a concurrent read would go
    over a websocket (seen: every port-forward of a run failing after a power-off)."""
    from kubernetes import client

    from chaos.targets.k8s import K8sTarget

    api = client.ApiClient(client.Configuration())
    target = K8sTarget("k8s://openstack/mariadb-server-0?container=mariadb", api=api)
    assert target.streams.api_client is not target.core.api_client
    assert target.core.api_client is api
    assert target.stream_lock.acquire(blocking=False)
    target.stream_lock.release()
