"""After ``eval "$(chaos lab env)"`` the usual clients reach the lab with no flag typed
by hand: mysql, rabbitmqctl, rabbitmq-queues, virsh, and kubectl on the Kubernetes tier.
Each runs in a fresh shell whose environment is only what a root login gives."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from chaoslab.lab import Lab

LOGIN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "HOME": os.environ.get("HOME", "/root"), "TERM": "dumb"}


def in_lab_shell(command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    chaos = f"{sys.executable} -m chaos.cli"
    return subprocess.run(["bash", "-c", f'eval "$({chaos} lab env)" && {command}'],
                          env=LOGIN_ENV, capture_output=True, text=True, timeout=timeout)


def test_mysql_reaches_galera(lab: Lab) -> None:
    out = in_lab_shell("mysql -N -e \"SHOW STATUS LIKE 'wsrep_cluster_size'\"")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["wsrep_cluster_size", "3"]


def test_rabbitmqctl_and_rabbitmq_queues_reach_the_nodes(lab: Lab) -> None:
    out = in_lab_shell("rabbitmqctl -q cluster_status --formatter json")
    assert out.returncode == 0, out.stderr
    for node in ("rabbit-ctl1@ctl1", "rabbit-ctl2@ctl2", "rabbit-ctl3@ctl3"):
        assert node in out.stdout
    out = in_lab_shell("rabbitmq-queues -q check_if_node_is_quorum_critical")
    assert out.returncode == 0, out.stdout + out.stderr
    # another node than the default one, by name alone
    out = in_lab_shell("rabbitmqctl -q -n rabbit-ctl3@ctl3 status --formatter json")
    assert out.returncode == 0 and "rabbit-ctl3@ctl3" in out.stdout, out.stderr


def test_virsh_reaches_cmp1s_libvirt(lab: Lab) -> None:
    out = in_lab_shell("virsh list --name")
    assert out.returncode == 0, out.stderr
    assert "cmp1-vm1" in out.stdout.split()


def test_kubectl_reaches_the_kubernetes_tier_when_it_is_up(lab: Lab) -> None:
    if not lab.kube_enabled():
        pytest.skip("the Kubernetes tier is not up (chaos lab up --kube)")
    out = in_lab_shell("kubectl get nodes -o name")
    assert out.returncode == 0, out.stderr
    assert "node/ctl1" in out.stdout.split()


def test_the_env_names_no_secret_in_a_variable_a_client_prints(lab: Lab) -> None:
    """The clients read their secrets from files of mode 600 under the lab root."""
    env = in_lab_shell("env")
    secrets = lab.secrets()
    client_vars = [line for line in env.stdout.splitlines()
                   if line.split("=", 1)[0] in ("MYSQL_HOME", "RABBITMQ_CONF_ENV_FILE",
                                                "LIBVIRT_DEFAULT_URI")]
    assert len(client_vars) == 3, env.stdout
    for line in client_vars:
        assert secrets.db_password not in line and secrets.erlang_cookie not in line
    for path in (lab.root / "clients" / "mysql" / "my.cnf",
                 lab.root / "clients" / "rabbitmq-home" / ".erlang.cookie"):
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
