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

from importlib import import_module
from typing import TYPE_CHECKING

from chaos.errors import ConfigError
from chaos.targets.base import CommandResult, Target, TargetError, TargetUnreachable

if TYPE_CHECKING:
    from chaos.inventory import Site

BACKENDS = {
    "local": "chaos.targets.local:LocalTarget",
    "ssh": "chaos.targets.ssh:SshTarget",
    "docker": "chaos.targets.docker:DockerTarget",
    "k8s": "chaos.targets.k8s:K8sTarget",
    "galera": "chaos.targets.sql:SqlTarget",
}

__all__ = ["CommandResult", "Target", "TargetError", "TargetUnreachable", "backend", "for_url",
           "host_target"]


def backend(scheme: str) -> type[Target]:
    try:
        module, _, name = BACKENDS[scheme].partition(":")
    except KeyError:
        raise ConfigError(
            f"unknown target scheme {scheme!r} (known: {', '.join(BACKENDS)})") from None
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

        return SshTarget(f"ssh://{host.ssh.user}@{host.address}:{host.ssh.port}",
                         key_file=str(host.ssh.key_file) if host.ssh.key_file else None)
    raise ConfigError(f"host {host_name}: the inventory gives no access (ssh or local) — "
                      f"needed to {need}")


def for_url(url: str, site: Site | None = None) -> Target:
    """The target a URL names; ``site`` fills in keys and sockets."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigError(f"{url!r}: not a target URL (scheme://…)")
    cls = backend(scheme)
    if scheme == "ssh" and site is not None:
        from urllib.parse import urlsplit

        address = urlsplit(url).hostname
        for host in [*site.controllers, *site.computes]:
            if host.address == address and host.ssh and host.ssh.key_file:
                return cls(url, key_file=str(host.ssh.key_file))  # type: ignore[call-arg]
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
        return cls(url, host=host.address, port=host.galera.port,  # type: ignore[call-arg]
                   user=site.credentials.db.user,
                   password=site.credentials.db.password.reveal())
    return cls(url)
