"""RabbitMQ's client side: the cluster as one node's management API sees it — running
nodes, partitions, and each quorum queue's leader, members and online members."""

from __future__ import annotations

import base64
import json
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chaos.dryrun import refuse
from chaos.errors import ConfigError
from chaos.fanout import ask_each
from chaos.inventory import Controller
from chaos.services import ProcessService, Section

if TYPE_CHECKING:
    from chaos.inventory import Compute, Site


@dataclass(frozen=True)
class QuorumQueue:
    leader: str
    members: list[str]
    online: list[str]


@dataclass(frozen=True)
class RabbitState:
    """What one node's management API says about the cluster."""

    running_nodes: list[str]
    partitions: dict[str, list[str]]
    # every node the cluster knows, running or not
    cluster_nodes: list[str] = field(default_factory=list)
    # "vhost/name" -> leader, members, online (quorum queues only)
    quorum_queues: dict[str, QuorumQueue] = field(default_factory=dict)

    @property
    def partitioned(self) -> bool:
        return any(self.partitions.values())


def _http_get(url: str, user: str, password: str, timeout: float) -> Any:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def queue_key(vhost: str, name: str) -> str:
    return name if vhost == "/" else f"{vhost}/{name}"


def probe(
    mgmt_url: str,
    user: str,
    password: str,
    *,
    timeout: float = 3.0,
    queues: bool = True,
) -> RabbitState:
    """Cluster view of the node behind ``mgmt_url`` (e.g. http://127.0.0.11:15672).

    One HTTP call (two with ``queues``), each bounded by ``timeout``; raises OSError
    (URLError, TimeoutError) when the node does not answer. Measured trap: right after
    a partition starts, the majority's API blocks until net_ticktime declares the lost
    node down (~15 s on the lab), so a timeout here means "unknown", not "dead".
    Quorum queues are keyed by name, or "vhost/name" outside the default vhost.
    """
    base = mgmt_url.rstrip("/")
    nodes = _http_get(f"{base}/api/nodes?columns=name,running,partitions", user, password, timeout)
    listed = (
        _http_get(
            f"{base}/api/queues?columns=name,vhost,type,leader,members,online",
            user,
            password,
            timeout,
        )
        if queues
        else []
    )
    quorum = {
        queue_key(q.get("vhost", "/"), q["name"]): QuorumQueue(
            leader=str(q.get("leader", "")),
            members=list(q.get("members", [])),
            online=list(q.get("online", [])),
        )
        for q in listed
        if q.get("type") == "quorum"
    }
    return RabbitState(
        running_nodes=sorted(n["name"] for n in nodes if n.get("running")),
        partitions={n["name"]: list(n.get("partitions") or []) for n in nodes},
        cluster_nodes=sorted(n["name"] for n in nodes),
        quorum_queues=quorum,
    )


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


def view(site: Site, *, timeout: float = 3.0, queues: bool = True) -> RabbitView:
    """Each RabbitMQ node's own view of the cluster, the nodes asked in parallel."""
    refuse("probing RabbitMQ")
    user, password = site.credentials.rabbitmq.user, site.credentials.rabbitmq.password.reveal()
    nodes = [c for c in site.controllers if c.rabbitmq]

    def ask(c: Controller) -> RabbitState:
        if c.rabbitmq is None or c.rabbitmq.management_port is None:
            raise ConfigError("no management port in the inventory")
        return probe(f"http://{c.address}:{c.rabbitmq.management_port}", user, password,
                     timeout=timeout, queues=queues)

    # a node that does not answer is an observation: its state is None, with the reason
    return RabbitView(*ask_each(nodes, ask, deadline=3 * timeout + 1),
                      {c.name: c.rabbitmq.node for c in nodes if c.rabbitmq})


class RabbitMQ(ProcessService):
    """RabbitMQ as the harness's faults see it: a quorum cluster of one node per controller."""

    name = "rabbitmq"
    quorum = True
    # Erlang distribution and epmd: cut, the node is partitioned; AMQP stays
    ports = "25672,4369"
    kinds = frozenset({"kill", "stop", "freeze", "wipe", "fill-disk", "partition",
                       "power-off", "delete-pod", "drain"})

    def section(self, host: Controller | Compute) -> Section | None:
        r = host.rabbitmq if isinstance(host, Controller) else None
        return None if r is None else Section(r.target, r.pidfile, r.start, r.data_dir)

    def lanes(self, site: Site, *, timeout: float = 1.5) -> dict[str, str]:
        found = view(site, timeout=timeout, queues=False)
        running = found.running()
        out = {}
        for host, state in found.states.items():
            if state is None:
                out[f"rabbitmq/{host}"] = "down"
            elif state.partitioned:
                out[f"rabbitmq/{host}"] = "partitioned"
            else:
                out[f"rabbitmq/{host}"] = "running" if found.nodes[host] in running else "alone"
        return out


SERVICE = RabbitMQ()
