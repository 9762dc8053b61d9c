"""Inventory validation: every malformed case is one line naming the field, exit 2."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos import inventory
from chaos.errors import ConfigError

VALID: dict[str, Any] = {
    "name": "site-a",
    "kind": "process",
    "credentials": {
        "db": {"user": "chaos", "password": {"env": "DB_PASSWORD"}},
        "rabbitmq": {"user": "chaos", "password": {"file": "/etc/chaos/rabbit"}},
        "erlang_cookie": {"file": "/etc/chaos/cookie"},
    },
    "controllers": [
        {
            "name": f"ctl{i}",
            "address": f"10.0.0.{i}",
            "ssh": {"user": "root", "port": 22},
            "galera": {"port": 3306, "target": f"ssh://root@10.0.0.{i}",
                       "datadir": "/var/lib/mysql"},
            "rabbitmq": {"node": f"rabbit@ctl{i}", "target": f"ssh://root@10.0.0.{i}"},
        }
        for i in (1, 2, 3)
    ],
    "computes": [
        {
            "name": "cmp1",
            "address": "10.0.1.1",
            "ssh": {"user": "root", "key_file": "/etc/chaos/id_ed25519"},
            "docker": {"socket": "unix:///var/run/docker.sock"},
            "libvirt": {"uri": "qemu+tcp://10.0.1.1/system", "container": "docker://cmp1/libvirt"},
        }
    ],
}


def mutate(path: str, value: Any) -> dict[str, Any]:
    """A copy of VALID with the dotted ``path`` set to ``value`` (or deleted for DELETE)."""
    data = copy.deepcopy(VALID)
    parts = path.replace("]", "").replace("[", ".").split(".")
    node: Any = data
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    key: Any = int(last) if last.isdigit() else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return data


DELETE = object()

MALFORMED = [
    ("name", DELETE, "name: required field is missing"),
    ("name", "Site A", "name: String should match pattern"),
    ("kind", "openstack", "kind: Input should be"),
    # the lab is a process site that says what it is: no kind of its own to guess from
    ("kind", "lab", "kind: Input should be 'process' or 'kubernetes'"),
    ("firewall", "iptables", "firewall: Input should be 'host' or 'local'"),
    ("credentials", DELETE, "credentials: required field is missing"),
    ("credentials.db", DELETE, "credentials.db: required field is missing"),
    ("credentials.db.user", "", "credentials.db.user: String should have at least 1"),
    ("credentials.db.password", "hunter2", "credentials.db.password: Input should be"),
    ("credentials.db.password", {}, "credentials.db.password: give exactly one of env or file"),
    ("credentials.db.password", {"env": "A", "file": "/x"},
     "credentials.db.password: give exactly one of env or file"),
    ("credentials.rabbitmq.password.value", "inline",
     "credentials.rabbitmq.password.value: unknown"),
    ("credentials.erlang_cookie", DELETE, "credentials.erlang_cookie: required field is missing"),
    ("controllers", [], "controllers: List should have at least 1 item"),
    ("controllers", "ctl1", "controllers: Input should be a valid list"),
    ("controllers[1].address", "not-an-ip", "controllers[1].address: not an IP address"),
    ("controllers[1].address", "10.0.0.300", "controllers[1].address: not an IP address"),
    ("controllers[0].address", DELETE, "controllers[0].address: required field is missing"),
    ("controllers[2].name", "CTL3", "controllers[2].name: String should match pattern"),
    ("controllers[2].name", "ctl1", "host name ctl1 is used twice"),
    ("controllers[0].colour", "blue", "controllers[0].colour: unknown field"),
    ("controllers[0].access", "telnet", "controllers[0].access: Input should be 'ssh' or 'local'"),
    ("controllers[0].access", "local",
     "controllers[0].ssh: not with access: local (the host is this machine)"),
    ("controllers[0].ssh.port", 0, "controllers[0].ssh.port: Input should be greater than"),
    ("controllers[0].ssh.port", 70000, "controllers[0].ssh.port: Input should be less than"),
    ("controllers[0].ssh.port", "twenty", "controllers[0].ssh.port: Input should be a valid"),
    ("controllers[0].galera.port", -1, "controllers[0].galera.port: Input should be greater"),
    ("controllers[0].galera.target", "telnet://x",
     "controllers[0].galera.target: not a target URL"),
    ("controllers[0].galera.target", "10.0.0.1", "controllers[0].galera.target: not a target URL"),
    ("controllers[0].galera.datadir", DELETE,
     "controllers[0].galera.datadir: required field is missing"),
    ("controllers[1].rabbitmq.node", "rabbit", "controllers[1].rabbitmq.node: String should match"),
    ("controllers[1].rabbitmq.amqp_port", 99999,
     "controllers[1].rabbitmq.amqp_port: Input should be less than"),
    ("controllers[1].rabbitmq.target", DELETE,
     "controllers[1].rabbitmq.target: required field is missing"),
    ("computes[0].libvirt.uri", "http://x", "computes[0].libvirt.uri: String should match"),
    ("computes[0].libvirt.container", "libvirt",
     "computes[0].libvirt.container: not a target URL"),
    ("computes[0].docker.socket", "/var/run/docker.sock",
     "computes[0].docker.socket: not a unix:/// socket URL"),
    ("computes[0].address", "", "computes[0].address: not an IP address"),
    ("computes[0].expect_vms", "maybe", "computes[0].expect_vms: Input should be"),
    ("computes", {"cmp1": {}}, "computes: Input should be a valid list"),
]


@pytest.mark.parametrize(("path", "value", "expected"), MALFORMED,
                         ids=[f"{p}={v!r}"[:60] for p, v, _ in MALFORMED])
def test_malformed_inventory_names_the_field(path: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        inventory.parse(mutate(path, value), "site.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("site.yaml: ")
    assert expected in message


def test_access_is_stated_explicitly_or_by_an_ssh_section() -> None:
    data = copy.deepcopy(VALID)
    data["controllers"][1] = {**data["controllers"][1], "access": "ssh"}
    del data["controllers"][1]["ssh"]
    data["controllers"][2] = {**data["controllers"][2], "access": "local"}
    del data["controllers"][2]["ssh"]
    del data["computes"][0]["ssh"]
    site = inventory.parse(data)
    ctl1, ctl2, ctl3 = site.controllers
    assert ctl1.access == "ssh" and ctl1.ssh == inventory.SshAccess(user="root", port=22)
    assert ctl2.access == "ssh" and ctl2.ssh == inventory.SshAccess()  # root, port 22
    assert ctl3.access == "local" and ctl3.ssh is None
    assert site.computes[0].access is None  # no way given: refused where one is needed
    assert site.firewall == "host"


def test_valid_inventory_parses() -> None:
    site = inventory.parse(copy.deepcopy(VALID))
    assert [c.name for c in site.controllers] == ["ctl1", "ctl2", "ctl3"]
    assert site.host("cmp1").address == "10.0.1.1"
    with pytest.raises(ConfigError, match="no host named 'cmp9'"):
        site.host("cmp9")


def test_secrets_come_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = inventory.parse(copy.deepcopy(VALID))
    monkeypatch.delenv("DB_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="DB_PASSWORD is not set"):
        site.credentials.db.password.reveal()
    monkeypatch.setenv("DB_PASSWORD", "s3cret")
    assert site.credentials.db.password.reveal() == "s3cret"
    secret = inventory.Secret(file=tmp_path / "pw")
    (tmp_path / "pw").write_text("from-file\n")
    assert secret.reveal() == "from-file"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chaos.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_cli_check_accepts_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(VALID))
    result = run_cli("inventory", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert "3 controllers, 1 computes" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (yaml.safe_dump(mutate("controllers[1].address", "nope")),
         "controllers[1].address: not an IP address"),
        ("controllers: [\n", "not valid YAML at line"),
        ("- just\n- a list\n", "not a mapping at the top level"),
        ("", "not a mapping at the top level"),
    ],
    ids=["bad-address", "broken-yaml", "a-list", "empty"],
)
def test_cli_check_rejects_with_one_line_and_exit_2(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    result = run_cli("inventory", "check", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_missing_file_is_exit_2() -> None:
    result = run_cli("inventory", "check", "/nonexistent/site.yaml")
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_example_inventories_validate() -> None:
    examples = sorted((Path(__file__).parents[2] / "docs" / "examples").glob("*.yaml"))
    assert examples, "docs/examples has no inventory"
    for example in examples:
        inventory.load(example)


def _k8s_site(**extra: object) -> dict[str, object]:
    target = "k8s://openstack/mariadb-server-0?container=mariadb"
    return {
        "name": "osh", "kind": "kubernetes",
        "credentials": {"db": {"user": "root", "password": {"env": "P"}},
                        "rabbitmq": {"user": "u", "password": {"env": "P"}},
                        "erlang_cookie": {"env": "C"}},
        "kubernetes": {"kubeconfig": "/tmp/kubeconfig"},
        "controllers": [{"name": "ctl1", "address": "127.0.0.1",
                         "galera": {"target": target, "datadir": "/var/lib/mysql",
                                    "reach": "port-forward"}}],
        **extra,
    }


def test_a_cluster_the_platform_recovers_is_stated_per_cluster() -> None:
    site = inventory.parse(_k8s_site(clusters={"galera": {
        "recovered_by": "platform", "platform": "openstack-helm",
        "state_configmap": "mariadb-mariadb-state"}}))
    assert site.cluster("galera").recovered_by == "platform"
    assert site.cluster("rabbitmq").recovered_by == "harness"  # unnamed: the harness


def test_a_platform_cluster_names_its_platform_and_openstack_helm_its_state() -> None:
    with pytest.raises(ConfigError, match=r"clusters.galera: .*needs platform"):
        inventory.parse(_k8s_site(clusters={"galera": {"recovered_by": "platform"}}))
    with pytest.raises(ConfigError, match=r"needs state_configmap"):
        inventory.parse(_k8s_site(clusters={"galera": {"recovered_by": "platform",
                                             "platform": "openstack-helm"}}))
    # openstack-helm's RabbitMQ has no state ConfigMap: its cluster needs none
    site = inventory.parse(_k8s_site(clusters={"rabbitmq": {"recovered_by": "platform",
                                                "platform": "openstack-helm"}}))
    assert site.cluster("rabbitmq").platform == "openstack-helm"


def test_clusters_are_services_with_a_quorum() -> None:
    with pytest.raises(ConfigError, match=r"clusters: etcd: not a service"):
        inventory.parse(_k8s_site(clusters={"etcd": {}}))
    with pytest.raises(ConfigError, match=r"libvirt: not a cluster"):
        inventory.parse(_k8s_site(clusters={"libvirt": {}}))


def test_port_forward_reaches_only_pods() -> None:
    data = _k8s_site()
    data["controllers"][0]["galera"]["target"] = "local://"  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"reach: port-forward needs a k8s:// target"):
        inventory.parse(data)
