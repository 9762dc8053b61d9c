"""Probes: read-only looks at a site's services, each bounded by timeouts, returning
typed states. A node that does not answer is an observation (``None`` plus the reason),
never an exception that ends a scenario."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from chaos.dryrun import refuse
from chaos.errors import ConfigError
from chaos.inventory import Compute, Controller, Site
from chaos.services.galera import GaleraState
from chaos.services.galera import probe as _galera_probe
from chaos.services.libvirt import STATE_NAMES, DomainIdentity, with_libvirt
from chaos.services.rabbitmq import QuorumQueue, RabbitState
from chaos.services.rabbitmq import probe as _rabbit_probe
from chaos.targets import host_target

__all__ = ["DomainIdentity", "GaleraState", "GaleraView", "RabbitView", "domains", "galera",
           "rabbitmq", "with_libvirt"]


@dataclass(frozen=True)
class GaleraView:
    """Every node's answer at one moment."""

    states: dict[str, GaleraState | None]
    errors: dict[str, str]

    def primary(self) -> list[str]:
        return [n for n, s in self.states.items() if s is not None and s.status == "Primary"]

    def healthy(self, size: int | None = None) -> bool:
        want = size if size is not None else len(self.states)
        return all(s is not None and s.healthy and s.size == want for s in self.states.values())

    def describe(self) -> str:
        return ", ".join(f"{n}: {s.describe() if s else 'down (' + self.errors[n][:40] + ')'}"
                         for n, s in self.states.items())


def galera(site: Site, *, timeout: float = 3.0) -> GaleraView:
    refuse("probing Galera")
    nodes = [c for c in site.controllers if c.galera]
    user = site.credentials.db.user
    password = site.credentials.db.password.reveal()

    def ask(c: Controller) -> tuple[str, GaleraState | None, str]:
        assert c.galera is not None
        try:
            return c.name, _galera_probe(c.address, c.galera.port, user, password,
                                         timeout=timeout), ""
        except Exception as exc:  # any failure to answer is an observation
            return c.name, None, f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        answers = list(pool.map(ask, nodes))
    return GaleraView({n: s for n, s, _ in answers}, {n: e for n, _, e in answers if e})


# -- RabbitMQ ------------------------------------------------------------------------


@dataclass(frozen=True)
class RabbitView:
    """Each node's own view of the cluster (management API), or why it gave none."""

    states: dict[str, RabbitState | None]
    errors: dict[str, str]
    nodes: dict[str, str]  # host name -> Erlang node name

    def running(self) -> set[str]:
        """Erlang names every answering node agrees are running."""
        views = [set(s.running_nodes) for s in self.states.values() if s is not None]
        return set.intersection(*views) if views else set()

    def partitioned(self) -> bool:
        return any(s.partitioned for s in self.states.values() if s is not None)

    def healthy(self) -> bool:
        return (all(s is not None for s in self.states.values())
                and self.running() == set(self.nodes.values()) and not self.partitioned()
                and not self.queues_missing_members())

    def quorum_queues(self) -> dict[str, QuorumQueue]:
        """Every quorum queue, as the first answering node lists it."""
        for state in self.states.values():
            if state is not None:
                return state.quorum_queues
        return {}

    def queues_missing_members(self) -> dict[str, list[str]]:
        """Quorum queues lacking an online member on some cluster node."""
        want = set(self.nodes.values())
        for state in self.states.values():
            if state is not None:
                return {name: sorted(want - set(q.online))
                        for name, q in state.quorum_queues.items() if want - set(q.online)}
        return {}

    def describe(self) -> str:
        parts = []
        for host, state in self.states.items():
            if state is None:
                parts.append(f"{host}: down ({self.errors.get(host, '')[:40]})")
            else:
                parts.append(f"{host}: {len(state.running_nodes)} running"
                             + (" PARTITIONED" if state.partitioned else ""))
        missing = self.queues_missing_members()
        if missing:
            parts.append(f"queues missing members: {len(missing)}")
        return ", ".join(parts)


def rabbitmq(site: Site, *, timeout: float = 3.0, queues: bool = True) -> RabbitView:
    refuse("probing RabbitMQ")
    nodes = [c for c in site.controllers if c.rabbitmq]
    user = site.credentials.rabbitmq.user
    password = site.credentials.rabbitmq.password.reveal()

    def ask(c: Controller) -> tuple[str, RabbitState | None, str]:
        assert c.rabbitmq is not None
        if c.rabbitmq.management_port is None:
            return c.name, None, "no management port in the inventory"
        try:
            return c.name, _rabbit_probe(f"http://{c.address}:{c.rabbitmq.management_port}",
                                         user, password, timeout=timeout, queues=queues), ""
        except Exception as exc:  # a node that does not answer is an observation
            return c.name, None, f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        answers = list(pool.map(ask, nodes))
    return RabbitView({n: s for n, s, _ in answers}, {n: e for n, _, e in answers if e},
                      {c.name: c.rabbitmq.node for c in nodes if c.rabbitmq})


# -- libvirt domains -----------------------------------------------------------------


def domains(site: Site, host_name: str, *, timeout: float = 5.0) -> list[DomainIdentity]:
    """Every domain of a compute host, with its qemu pid and start time read on the host
    itself (through its target), so it works as well over ssh as on the lab."""
    refuse(f"listing the domains of {host_name}")
    host = site.host(host_name)
    if not isinstance(host, Compute) or host.libvirt is None:
        raise ConfigError(f"host {host_name} has no libvirt in the inventory")
    listed = with_libvirt(
        host.libvirt.uri,
        lambda conn: [(d.name(), d.UUIDString(), d.ID(), d.state()[0])
                      for d in conn.listAllDomains(0)],
        timeout=timeout, what=f"list domains on {host_name}")
    running = [uuid for _, uuid, dom_id, _ in listed if dom_id >= 0]
    pids: dict[str, tuple[int, int]] = {}
    if running:
        # one round trip: "<uuid> <pid> <start ticks>" per live qemu of those domains
        script = ("for u in %s; do for p in $(pgrep -f -- \"-uuid $u\"); do "
                  "s=$(sed 's/.*) //' /proc/$p/stat 2>/dev/null) || continue; "
                  "set -- $s; [ \"$1\" = Z ] && continue; shift 19; echo \"$u $p $1\"; "
                  "done; done")
        out = host_target(site, host_name, need="read its VMs' qemu pids").run(
            script % " ".join(running), timeout=timeout)
        for line in out.stdout.splitlines():
            uuid, pid, ticks = line.split()
            if pid.isdigit() and ticks.isdigit():
                pids[uuid] = (int(pid), int(ticks))
    return [DomainIdentity(name=name, uuid=uuid, id=dom_id,
                           state=STATE_NAMES.get(state, str(state)),
                           qemu_pid=pids[uuid][0] if uuid in pids else None,
                           start_ticks=pids[uuid][1] if uuid in pids else None)
            for name, uuid, dom_id, state in sorted(listed)]
