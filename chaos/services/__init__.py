"""Each service's home: one module per service (galera, rabbitmq, libvirt, docker) with
the code that asks it about itself (typed answers, used by probes, recovery and the
lab) and what the harness's faults need of it, behind one small protocol, ``Service``.

The core (faults, the blast-radius guard, the plugin, the CLI) talks to services only
through ``SERVICES``, a table that imports each module when first asked, the way the
target table does: adding a service is a module here and one line in ``_BUILTIN``.
Where a service runs on a host is its ``Placement``, read once from the inventory.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Protocol

from chaos.errors import ConfigError
from chaos.targets import Where, host_target, where

if TYPE_CHECKING:
    from chaos.inventory import Compute, Controller, Site
    from chaos.oracle import Endpoint, Oracle
    from chaos.steps import Step

__all__ = ["SERVICES", "Placement", "Process", "ProcessService", "Section", "Service", "Where",
           "placement"]


@dataclass(frozen=True)
class Placement:
    """Where a service runs on one host. (Who brings its cluster back is the site's
    word, per cluster: ``Site.cluster(name).recovered_by``.)

    ``url`` is the inventory's word for the place (the process's target, the container,
    the pod); ``None`` where the service is a process of the host itself, reached as the
    host's ``access`` says (the docker daemon)."""

    where: Where
    url: str | None = None

    @classmethod
    def at(cls, url: str) -> Placement:
        """The placement an inventory's target URL states (its scheme, read once here)."""
        return cls(where(url), url)

    @property
    def in_pod(self) -> bool:
        return self.where is Where.POD

    @property
    def namespace(self) -> str:
        """The Kubernetes namespace of a pod placement (``k8s://NAMESPACE/…``)."""
        if not self.in_pod or self.url is None:
            raise ConfigError(f"{self.url}: not a pod")
        return self.url.partition("://")[2].split("/", 1)[0]


@dataclass(frozen=True)
class Process:
    """A service run as a process, as its faults need it: where a shell reaches it, its
    pidfile, the command that starts it as is, and its data directory."""

    service: str
    target: str
    pidfile: str
    start: str
    datadir: str | None

    @classmethod
    def of(cls, host: str, service: str, target: str, pidfile: str | None,
           start: str | None, datadir: str | None) -> Process:
        """From an inventory section; a kill without a way back is refused."""
        if not (pidfile and start):
            raise ConfigError(f"{host}.{service}: pidfile and start are needed for this fault")
        return cls(service, target, pidfile, start, datadir)


class Service(Protocol):
    """What the core needs of a service. Attributes are class-level facts."""

    name: str
    # a cluster with a quorum: the blast-radius guard counts its members
    quorum: bool
    # the ports a partition of this service alone cuts (iptables multiport syntax);
    # None: it cannot be partitioned apart from its host
    ports: str | None
    # the service this one runs under on a host (libvirt in a container of docker): a
    # whole-host fault (power-off, partition) reaches it through that one
    under: str | None
    # the fault kinds that apply to it (chaos.faults.KINDS names them all)
    kinds: frozenset[str]

    def runs_on(self, host: Controller | Compute) -> bool:
        """The inventory gives this service on ``host``."""
        ...

    def placement(self, host: Controller | Compute) -> Placement:
        """Where it runs on ``host``; ConfigError where it does not run there."""
        ...

    def process(self, site: Site, host: Controller | Compute) -> Process:
        """Its process on ``host``, for kill, stop, freeze, wipe, fill-disk, power-off;
        ConfigError where the inventory does not say enough."""
        ...

    def fault_steps(self, site: Site, kind: str, host: Controller | Compute,
                    fault_id: str) -> tuple[list[Step], list[Step]] | None:
        """Inject and revert Steps of its own for ``kind``, or None: the harness's
        generic plan for a process (or a pod) applies."""
        ...

    def oracle(self, site: Site) -> Oracle | None:
        """Its data-loss oracle's workload client for ``site``, or None: it has none."""
        ...

    def lanes(self, site: Site, *, timeout: float = 1.5) -> dict[str, str]:
        """One sample of its members' states for the report's timeline: lane name
        (``<service>/<host>[/<item>]``) -> state word; its members asked in parallel,
        each within ``timeout``. A member that does not answer is a state ("down")."""
        ...


@dataclass(frozen=True)
class Section:
    """What an inventory section says of a service run as a process."""

    target: str | None  # None: a process of the host itself, reached as its access says
    pidfile: str | None
    start: str | None
    datadir: str | None


class ProcessService:
    """A base for a service the inventory describes as a process (a target URL, a
    pidfile, a start command, a data directory): a subclass names itself, its facts, and
    how to read its section of a host; the generic faults then apply to it."""

    name: str
    quorum = False
    ports: str | None = None
    kinds: frozenset[str] = frozenset({"kill", "stop", "freeze"})

    def section(self, host: Controller | Compute) -> Section | None:
        raise NotImplementedError

    def _section(self, host: Controller | Compute) -> Section:
        found = self.section(host)
        if found is None:
            raise ConfigError(f"host {host.name} has no {self.name} service in the inventory")
        return found

    def runs_on(self, host: Controller | Compute) -> bool:
        return self.section(host) is not None

    def placement(self, host: Controller | Compute) -> Placement:
        target = self._section(host).target
        return Placement(Where.HOST) if target is None else Placement.at(target)

    def process(self, site: Site, host: Controller | Compute) -> Process:
        s = self._section(host)
        target = s.target or host_target(site, host.name, need=f"act on its {self.name}").url
        return Process.of(host.name, self.name, target, s.pidfile, s.start, s.datadir)

    def fault_steps(self, site: Site, kind: str, host: Controller | Compute,
                    fault_id: str) -> tuple[list[Step], list[Step]] | None:
        return None  # a process (or a pod) like any other

    def lanes(self, site: Site, *, timeout: float = 1.5) -> dict[str, str]:
        return {}  # no lanes of its own: what runs under it has them

    def oracle(self, site: Site) -> Oracle | None:
        return None  # no data of its own to lose


# name -> the module whose SERVICE implements it; imported at first use
_BUILTIN = {
    "galera": "chaos.services.galera",
    "rabbitmq": "chaos.services.rabbitmq",
    "libvirt": "chaos.services.libvirt",
    "docker": "chaos.services.docker",
    "keystone": "chaos.services.keystone",
}


class Registry(MutableMapping[str, "Service"]):
    """The service table: built-in services by module name, imported lazily (their
    clients pull in drivers), and services registered as objects (``SERVICES[name] =
    service``; a test uses ``monkeypatch.setitem`` and leaves nothing behind)."""

    def __init__(self, modules: dict[str, str]) -> None:
        self._modules = dict(modules)
        self._loaded: dict[str, Service] = {}

    def __getitem__(self, name: str) -> Service:
        if name not in self._loaded:
            module = self._modules.get(name)
            if module is None:
                raise KeyError(name)
            service: Service = import_module(module).SERVICE
            self._loaded[name] = service
        return self._loaded[name]

    def __setitem__(self, name: str, service: Service) -> None:
        self._loaded[name] = service
        self._modules.setdefault(name, "")

    def __delitem__(self, name: str) -> None:
        if name not in self._modules:
            raise KeyError(name)
        del self._modules[name]
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._modules))

    def __len__(self) -> int:
        return len(self._modules)

    def get_known(self, name: str) -> Service:
        """The service ``name``, or a ConfigError listing the known ones."""
        if name not in self._modules:
            raise ConfigError(f"unknown service {name!r} (services: {', '.join(self)})")
        return self[name]

    def on(self, host: Controller | Compute) -> list[Service]:
        """The services the inventory gives on ``host``, in table order."""
        return [s for s in self.values() if s.runs_on(host)]

    def clusters(self) -> list[Service]:
        """The services with a quorum, which the blast-radius guard counts."""
        return [s for s in self.values() if s.quorum]


SERVICES = Registry(_BUILTIN)


def endpoint(site: Site, host: Controller, service: str, port: int) -> Endpoint:
    """``port`` of ``service`` on ``host`` as a client reaches it: at the host's address,
    or through the Kubernetes API to the service's pod (``reach: port-forward``)."""
    from chaos.oracle import Endpoint

    section = getattr(host, service)
    if section is None or section.reach == "address":
        return Endpoint(host.name, host.address, port)

    def forwarded() -> tuple[str, int]:
        from chaos.targets import for_url
        from chaos.targets.portforward import forward

        return forward(for_url(section.target, site), port)

    return Endpoint(host.name, host.address, port, forwarded)


def placement(service: str, host: Controller | Compute) -> Placement:
    """Where ``service`` runs on ``host``."""
    return SERVICES.get_known(service).placement(host)
