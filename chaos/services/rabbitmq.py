"""RabbitMQ's client side: the cluster as one node's management API sees it — running
nodes, partitions, and each quorum queue's leader, members and online members."""

from __future__ import annotations

import base64
import json
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chaos.inventory import Controller
from chaos.services import ProcessService, Section

if TYPE_CHECKING:
    from chaos.inventory import Compute


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


SERVICE = RabbitMQ()
