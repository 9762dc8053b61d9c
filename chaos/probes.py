"""Probes: read-only looks at a site's services, each bounded by timeouts, returning
typed states. A node that does not answer is an observation (``None`` plus the reason),
never an exception that ends a scenario."""

from __future__ import annotations

from chaos.dryrun import refuse
from chaos.fanout import Gathered, gather
from chaos.inventory import Site
from chaos.services.galera import GaleraState, GaleraView
from chaos.services.galera import view as galera
from chaos.services.libvirt import DomainIdentity, host_domains, with_libvirt
from chaos.services.rabbitmq import RabbitView
from chaos.services.rabbitmq import view as rabbitmq

__all__ = ["DomainIdentity", "GaleraState", "GaleraView", "RabbitView", "domains", "fleet",
           "galera", "rabbitmq", "with_libvirt"]


# -- libvirt domains -----------------------------------------------------------------


def domains(site: Site, host_name: str, *, timeout: float = 5.0) -> list[DomainIdentity]:
    """Every domain of a compute host, with its qemu pid and start time read on the host
    itself (through its target), so it works as well over ssh as on the lab."""
    refuse(f"listing the domains of {host_name}")
    return host_domains(site, host_name, timeout=timeout)


def fleet(site: Site, hosts: list[str] | None = None, *, timeout: float = 5.0,
          deadline: float | None = None) -> Gathered[list[DomainIdentity]]:
    """Every domain of ``hosts`` (default: every compute with libvirt), the hosts asked
    in parallel; a host that does not answer within ``timeout`` is in ``errors``."""
    names = hosts if hosts is not None else [c.name for c in site.computes if c.libvirt]
    refuse(f"listing the domains of {', '.join(names)}")
    return gather(names, lambda h: host_domains(site, h, timeout=timeout),
                  deadline=deadline if deadline is not None else 2 * timeout + 1)
