"""The lab described as a site: the inventory file ``chaos lab up`` writes (the same
format an operator writes for a real site) and the ``chaos lab env`` variables."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from chaos.errors import LabError
from chaoslab.fleet import FleetLab
from chaoslab.model import COMPUTES, CONTROLLERS, SSH_PORT, Component, LabSecrets
from chaoslab.nova import FLAVOR, IMAGE, NovaLab
from chaoslab.openstack import ADMIN_PROJECT, ADMIN_USER, KeystoneLab

# RabbitMQ's own CLI scripts (Debian's /usr/sbin ones are wrappers that switch user)
RABBITMQ_CLI = "/usr/lib/rabbitmq/bin"

if TYPE_CHECKING:
    from chaoslab.galera import GaleraLab
    from chaoslab.kube import KubeLab
    from chaoslab.rabbitmq import RabbitLab


class Lab(Protocol):
    """What the inventory writers read of the lab (``chaoslab.lab.Lab`` is one): a
    protocol, so that this module and the orchestrator do not import each other."""

    root: Path
    inventory_file: Path
    kube_inventory_file: Path

    def secrets(self) -> LabSecrets: ...

    def components(self) -> list[Component]: ...

    def kube(self) -> KubeLab: ...

    def kube_enabled(self) -> bool: ...


def _parts(lab: Lab) -> dict[str, Any]:
    return {c.name: c for c in lab.components()}


def lab_inventory(lab: Lab) -> dict[str, Any]:
    parts = _parts(lab)
    galera, rabbit, compute = parts["galera"], parts["rabbitmq"], parts["compute"]
    sshd = parts["sshd"]
    ssh = {"user": "root", "port": SSH_PORT, "key_file": str(sshd.client_key)}

    def target(address: str) -> str:
        return f"ssh://root@{address}:{SSH_PORT}"

    keystone = parts.get("keystone")
    controllers = []
    for host in CONTROLLERS:
        rabbit.write_node_env(host.name)
        controllers.append({
            "name": host.name,
            "address": host.address,
            "ssh": ssh,
            "galera": galera_section(galera, host.name, target(host.address)),
            "rabbitmq": rabbit_section(rabbit, host.name, target(host.address)),
        })
        if isinstance(keystone, KeystoneLab) and keystone.address == host.address:
            controllers[-1]["keystone"] = {"url": keystone.auth_url,
                                           "target": target(host.address),
                                           "pidfile": str(keystone.pidfile),
                                           "start": keystone.start_command()}
    computes = []
    for name, address, mode in COMPUTES:
        computes.append({
            "name": name,
            "address": address,
            "ssh": ssh,
            "docker": {"socket": compute.docker_socket(name),
                       "pidfile": str(compute.dockerd_pidfile(name)),
                       "start": compute.dockerd_start_command(name)},
            "libvirt": {"uri": compute.libvirt_uri(name),
                        "container": f"docker://{name}/{compute.container_name(name)}"},
            "expect_vms": "survive" if mode == "right" else "die",
        })
    fleet = parts.get("fleet")
    if isinstance(fleet, FleetLab):
        fleet_ssh = {"user": "root", "port": SSH_PORT, "key_file": str(fleet.sshd.client_key)}
        for host in fleet.hosts:
            computes.append({
                "name": host.name,
                "address": host.address,
                "ssh": fleet_ssh,
                # libvirtd as a process of the host: no docker on a fleet host
                "libvirt": {"uri": fleet.uri(host),
                            "pidfile": str(fleet.pidfile(host.name)),
                            "start": fleet.start_command(host.name)},
                "expect_vms": "survive",
            })
    creds = credentials(lab)
    if isinstance(keystone, KeystoneLab):
        creds["openstack"] = {"user": ADMIN_USER, "project": ADMIN_PROJECT,
                              "password": {"file": str(keystone.password_file)}}
    site: dict[str, Any] = {
        "name": "lab",
        "kind": "process",
        # every host is a loopback address of this machine: one kernel filters them all
        "firewall": "local",
        "credentials": creds,
        "controllers": controllers,
        "computes": computes,
    }
    if isinstance(keystone, KeystoneLab) and isinstance(parts.get("openstack"), NovaLab):
        # the whole of OpenStack runs (lab up --openstack): the cloud as its users reach
        # it, which the OpenStack workload and the scenarios' OpenStack checks use
        site["openstack"] = {
            "auth": {"auth_url": keystone.auth_url, "username": ADMIN_USER,
                     "password": {"file": str(keystone.password_file)},
                     "project_name": ADMIN_PROJECT},
            "region_name": keystone.region, "image": IMAGE, "flavor": FLAVOR}
    return site


def credentials(lab: Lab) -> dict[str, Any]:
    """The lab's secrets by reference: files under its root, never the values."""
    secrets = lab.root / "secrets"
    return {
        "db": {"user": lab.secrets().db_user,
               "password": {"file": str(secrets / "db-password")}},
        "rabbitmq": {"user": lab.secrets().rabbit_user,
                     "password": {"file": str(secrets / "rabbitmq-password")}},
        "erlang_cookie": {"file": str(secrets / "erlang-cookie")},
    }


def galera_section(galera: GaleraLab, node: str, target: str) -> dict[str, Any]:
    return {
        "port": galera.port,
        "target": target,
        "datadir": str(galera.datadir(node)),
        "config": str(galera.config_file(node)),
        "pidfile": str(galera.pid_file(node)),
        "start": shlex.join(galera.node_argv(node)),
    }


def rabbit_section(rabbit: RabbitLab, node: str, target: str) -> dict[str, Any]:
    return {
        "node": rabbit.node_name(node),
        "amqp_port": rabbit.amqp_port,
        "management_port": rabbit.mgmt_port,
        "target": target,
        "data_dir": str(rabbit.data_dir(node)),
        "pidfile": str(rabbit.pidfile(node)),
        "start": rabbit.start_command(node),
        "cli": rabbit.cli_prefix(node),
    }


def client_files(lab: Lab) -> dict[str, str]:
    """Files that let the usual clients reach the lab with no flag typed by hand, and the
    variables that point at them. Secrets stay in files of mode 600 under the lab root:
    the mysql client's password in a ``[client]`` group, the Erlang cookie where the
    RabbitMQ CLI's Erlang looks for it (``$HOME/.erlang.cookie``, HOME set for the CLI
    alone by its env file)."""
    parts = _parts(lab)
    galera, rabbit, compute = parts["galera"], parts["rabbitmq"], parts["compute"]
    s = lab.secrets()
    folder = lab.root / "clients"
    (folder / "mysql").mkdir(parents=True, exist_ok=True)
    (folder / "rabbitmq-home").mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    first = CONTROLLERS[0]
    # MariaDB's clients read $MYSQL_HOME/my.cnf; the lab's servers use --defaults-file
    _private(folder / "mysql" / "my.cnf",
             f"[client]\nhost={first.address}\nport={galera.port}\nuser={s.db_user}\n"
             f"password={s.db_password}\n", 0o600)
    _private(folder / "rabbitmq-home" / ".erlang.cookie", s.erlang_cookie, 0o400)
    # sourced by RabbitMQ's CLI scripts (rabbitmq-env, under `set -a`): what they need to
    # find the lab's nodes, for the CLI's own process only
    _private(folder / "rabbitmq-env.conf",
             f"HOME={folder / 'rabbitmq-home'}\nERL_INETRC={rabbit.inetrc}\n"
             f"ERL_EPMD_PORT={rabbit.epmd_port}\n"
             f"RABBITMQ_NODENAME={rabbit.node_name(first.name)}\n"
             "LANG=C.UTF-8\nLC_ALL=C.UTF-8\n", 0o600)
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    if RABBITMQ_CLI not in path.split(":"):
        # the CLI itself, not Debian's /usr/sbin wrapper, which becomes the rabbitmq user
        # and reads that user's cookie
        path = f"{RABBITMQ_CLI}:{path}"
    keystone = parts.get("keystone")
    extra: dict[str, str] = {}
    if isinstance(keystone, KeystoneLab):
        # the openstack CLI lives in keystone's venv; only it goes on PATH (that venv's
        # python3 must not shadow the operator's)
        (folder / "bin").mkdir(exist_ok=True)
        link = folder / "bin" / "openstack"
        link.unlink(missing_ok=True)
        link.symlink_to(keystone.venv / "bin" / "openstack")
        path = f"{folder / 'bin'}:{path}"
        extra = keystone.openstack_env()
    return {
        **extra,
        "MYSQL_HOME": str(folder / "mysql"),
        "RABBITMQ_CONF_ENV_FILE": str(folder / "rabbitmq-env.conf"),
        "LIBVIRT_DEFAULT_URI": compute.libvirt_uri(COMPUTES[0][0]),
        "PATH": path,
    }


def _private(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path``, readable by root alone, replacing what was there."""
    if path.exists():
        path.chmod(0o600)
    path.touch(mode=0o600)
    path.write_text(text)
    path.chmod(mode)


def lab_env(lab: Lab) -> dict[str, str]:
    parts = _parts(lab)
    galera, rabbit, compute = parts["galera"], parts["rabbitmq"], parts["compute"]
    s = lab.secrets()
    return {
        **client_files(lab),
        "CHAOS_INVENTORY": str(lab.inventory_file),
        "CHAOS_GALERA": " ".join(f"{h.name}={h.address}:{galera.port}" for h in CONTROLLERS),
        "CHAOS_DB_USER": s.db_user,
        "CHAOS_DB_PASSWORD": s.db_password,
        "CHAOS_RABBITMQ": " ".join(f"{h.name}={rabbit.amqp_url(h.name)}" for h in CONTROLLERS),
        "CHAOS_RABBITMQ_NODES": " ".join(f"{h.name}={rabbit.node_name(h.name)}"
                                         for h in CONTROLLERS),
        "CHAOS_ERLANG_COOKIE": s.erlang_cookie,
        "CHAOS_LIBVIRT": " ".join(f"{n}={compute.libvirt_uri(n)}" for n, _, _ in COMPUTES),
        **({"CHAOS_KUBE_INVENTORY": str(lab.kube_inventory_file),
            "KUBECONFIG": str(lab.kube().kubeconfig)} if lab.kube_enabled() else {}),
    }


def kube_inventory(lab: Lab) -> dict[str, Any]:
    """The Kubernetes tier as a site: the same services, reached as pods by label
    selector, so a pod recreated under a new name is still the target. The
    openstack-helm shape's is discovered from the cluster, as a user's would be."""
    from chaoslab.kubetopology import selector_target

    kube = lab.kube()
    if kube.platform == "openstack-helm":
        return discovered_inventory(lab)
    galera, rabbit, compute = kube.galera(), kube.rabbit(), kube.compute()
    controllers = []
    for node in kube.controllers:
        controllers.append({
            "name": node.name,
            "address": node.address,
            # no sshd at the tier's addresses: the node is this machine, reached as such
            "access": "local",
            "galera": galera_section(galera, node.name,
                                     selector_target("galera", node.name, "mariadb")),
            "rabbitmq": rabbit_section(rabbit, node.name,
                                       selector_target("rabbitmq", node.name, "rabbitmq")),
        })
    return {
        "name": "lab-kube",
        "kind": "kubernetes",
        "firewall": "local",
        "credentials": credentials(lab),
        "kubernetes": {"kubeconfig": str(kube.kubeconfig)},
        "controllers": controllers,
        "computes": [{
            "name": node.name,
            "address": node.address,
            "access": "local",
            # the node's own docker, under the kubelet: what kill-docker kills
            "docker": {"socket": kube.docker_socket(node.name),
                       "pidfile": str(kube.dockerd_pidfile(node.name)),
                       "start": kube.dockerd_start_command(node.name)},
            "libvirt": {"uri": compute.libvirt_uri(node.name),
                        "container": selector_target("libvirt", node.name, "libvirt")},
            "expect_vms": "survive",
        } for node in kube.computes],
    }


def discovered_inventory(lab: Lab) -> dict[str, Any]:
    """The openstack-helm shape's site, as ``chaos inventory discover --access local``
    finds it; the lab then names its own secret files for the credentials (discover
    never reads a Secret) and each compute node's docker daemon (not visible through
    the API)."""
    from chaos.discover import discover

    kube = lab.kube()
    secrets = lab.secrets()
    found = discover(kube.kubeconfig, namespace="openstack", access="local",
                     name="lab-openstack-helm", db_user=secrets.db_user,
                     rabbitmq_user=secrets.rabbit_user)
    if found.inventory is None:
        raise LabError("discover found no site on the openstack-helm shape: "
                       + "; ".join(found.lines()[:3]))
    site = dict(found.inventory)
    site["credentials"] = credentials(lab)
    for compute in site.get("computes", []):
        compute["docker"] = {"socket": kube.docker_socket(compute["name"]),
                             "pidfile": str(kube.dockerd_pidfile(compute["name"])),
                             "start": kube.dockerd_start_command(compute["name"])}
    return site
