"""Targets: where a command runs or a process lives, named by a URL.

One table maps a scheme to its backend, imported lazily; an unknown scheme is one
clear error. A site (inventory) supplies what a URL alone cannot: ssh keys, the docker
socket of a host.

    local://                          this machine
    ssh://root@10.0.0.5:22            a host, over ssh (fabric)
    docker://cmp1/libvirt             container "libvirt" on host cmp1's docker daemon
    k8s://openstack/mariadb-0/mariadb pod (and container) in a namespace
    k8s://openstack/?selector=app=mariadb,node=ctl1&container=mariadb
    galera://ctl1                     an SQL session on host ctl1's Galera node
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from importlib import import_module
from typing import TYPE_CHECKING

from chaos.errors import ConfigError
from chaos.targets.base import CommandResult, Target, TargetError, TargetUnreachable

if TYPE_CHECKING:
    from chaos.inventory import Site



class Where(StrEnum):
    """What kind of place a target URL names, when a service's process can live there."""

    HOST = "process on a host"
    CONTAINER = "container on the host's docker"
    POD = "pod in Kubernetes"


@dataclass(frozen=True)
class Scheme:
    backend: str  # "module:Class", imported at first use
    # where a process named by such a URL lives; None for a session that is no place
    # (galera:// is SQL to a node, not where its process runs)
    place: Where | None


# The one list of schemes: the inventory's target fields, placement and backends read it.
SCHEMES: dict[str, Scheme] = {
    "local": Scheme("chaos.targets.local:LocalTarget", Where.HOST),
    "ssh": Scheme("chaos.targets.ssh:SshTarget", Where.HOST),
    "docker": Scheme("chaos.targets.docker:DockerTarget", Where.CONTAINER),
    "k8s": Scheme("chaos.targets.k8s:K8sTarget", Where.POD),
    "galera": Scheme("chaos.targets.sql:SqlTarget", None),
}
# the schemes that name where a process lives: what an inventory's target field takes
PLACE_SCHEMES = tuple(name for name, scheme in SCHEMES.items() if scheme.place is not None)

__all__ = ["PLACE_SCHEMES", "SCHEMES", "CommandResult", "Scheme", "Target", "TargetError",
           "TargetUnreachable", "Where", "backend", "for_url", "host_target", "where"]


def where(url: str) -> Where:
    """The kind of place a process URL names (the inventory has validated its scheme)."""
    scheme = SCHEMES.get(url.partition("://")[0])
    if scheme is None or scheme.place is None:
        raise ConfigError(f"{url!r}: not where a process lives (schemes: "
                          f"{', '.join(PLACE_SCHEMES)})")
    return scheme.place


def backend(scheme: str) -> type[Target]:
    try:
        module, _, name = SCHEMES[scheme].backend.partition(":")
    except KeyError:
        raise ConfigError(
            f"unknown target scheme {scheme!r} (known: {', '.join(SCHEMES)})") from None
    cls: type[Target] = getattr(import_module(module), name)
    return cls


def host_target(site: Site, host_name: str, *, need: str) -> Target:
    """How to reach a host itself, as its inventory says: over ssh, or this machine
    (``access: local``). A host the inventory gives no access to is a ConfigError naming
    it and what needed it: ``need``, e.g. "partition it"."""
    host = site.host(host_name)
    if host.access == "local":
        return backend("local")("local://")
    if host.access == "ssh" and host.ssh is not None:
        from chaos.targets.ssh import SshTarget

        return SshTarget.shared(f"ssh://{host.ssh.user}@{host.address}:{host.ssh.port}",
                                key_file=str(host.ssh.key_file) if host.ssh.key_file else None)
    raise ConfigError(f"host {host_name}: the inventory gives no access (ssh or local) — "
                      f"needed to {need}")


def for_url(url: str, site: Site | None = None) -> Target:
    """The target a URL names; ``site`` fills in keys and sockets."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigError(f"{url!r}: not a target URL (scheme://…)")
    cls = backend(scheme)
    if scheme == "ssh":
        from urllib.parse import urlsplit

        from chaos.targets.ssh import SshTarget

        address = urlsplit(url).hostname
        for host in [*site.controllers, *site.computes] if site is not None else []:
            if host.address == address and host.ssh and host.ssh.key_file:
                return SshTarget.shared(url, key_file=str(host.ssh.key_file))
        return SshTarget.shared(url)
    if scheme == "docker":
        from chaos.inventory import Compute
        from chaos.targets.docker import parse

        if site is None:
            raise ConfigError(f"{url}: a docker target needs the site's inventory")
        host_name, _ = parse(url)
        host = site.host(host_name)
        socket = (host.docker.socket if isinstance(host, Compute) and host.docker
                  else "unix:///var/run/docker.sock")
        via = host_target(site, host_name, need=f"reach its docker daemon ({url})")
        return cls(url, via=via, socket=socket)  # type: ignore[call-arg]
    if scheme == "k8s":
        from chaos.targets.k8s import api_client

        if site is None:
            raise ConfigError(f"{url}: a k8s target needs the site's inventory")
        return cls(url, api=api_client(site.kubernetes))  # type: ignore[call-arg]
    if scheme == "galera":
        from chaos.inventory import Controller
        from chaos.targets.sql import parse_node

        if site is None:
            raise ConfigError(f"{url}: an SQL target needs the site's inventory")
        host = site.host(parse_node(url))
        if not isinstance(host, Controller) or host.galera is None:
            raise ConfigError(f"{url}: host {host.name} runs no Galera node")
        from chaos.services import endpoint

        return cls(url, address=endpoint(site, host, "galera",  # type: ignore[call-arg]
                                          host.galera.port).address,
                   user=site.credentials.db.user,
                   password=site.credentials.db.password.reveal())
    return cls(url)
