"""RabbitMQ's home: the cluster as one node's management API sees it — running nodes,
partitions, and each quorum queue's leader, members and online members; its data-loss
oracle (a publisher with confirms, read back by draining the queue); and what the
harness's faults need of it."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pika
import pika.exceptions

from chaos.dryrun import refuse
from chaos.errors import ConfigError
from chaos.fanout import ask_each
from chaos.inventory import Controller
from chaos.journal import Event
from chaos.oracle import CONFIRM_TIMEOUT, CONNECT_TIMEOUT, IO_TIMEOUT, Endpoint, OpLedger
from chaos.services import ProcessService, Section, endpoint

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
        address, port = endpoint(site, c, "rabbitmq", c.rabbitmq.management_port).address()
        return probe(f"http://{address}:{port}", user, password,
                     timeout=timeout, queues=queues)

    # a node that does not answer is an observation: its state is None, with the reason
    return RabbitView(*ask_each(nodes, ask, deadline=3 * timeout + 1),
                      {c.name: c.rabbitmq.node for c in nodes if c.rabbitmq})


# -- the data-loss oracle: a bounded publisher with confirms, read back by draining ---


@dataclass(frozen=True)
class RabbitVerdict:
    confirmed: int
    unknown: int
    lost: int
    duplicated: int
    phantom: int
    lost_ids: list[str]

    @property
    def event(self) -> Event:
        return Event.ORACLE_RABBITMQ

    @property
    def acknowledged_total(self) -> int:
        return self.confirmed

    @property
    def first_lost(self) -> object:
        return self.lost_ids

    def fields(self) -> dict[str, Any]:
        return {"confirmed": self.confirmed, "unknown": self.unknown, "lost": self.lost,
                "duplicated": self.duplicated, "phantom": self.phantom}

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.phantom == 0

    def summary(self) -> str:
        return (f"rabbitmq (at-least-once): {self.confirmed} confirmed, {self.unknown} unknown, "
                f"lost {self.lost}, duplicated {self.duplicated}, phantom {self.phantom}")


class RabbitPublisher:
    """Publishes persistent messages with confirms to a quorum queue, failing over."""

    name = "rabbitmq"
    kind: Literal["data", "availability"] = "data"

    def __init__(self, site: Site, *, queue: str | None = None, interval: float = 0.02,
                 max_ops: int = 5000, max_seconds: float = 600.0) -> None:
        self.endpoints = [endpoint(site, c, "rabbitmq", c.rabbitmq.amqp_port)
                          for c in site.controllers if c.rabbitmq]
        self.user = site.credentials.rabbitmq.user
        self._secret = site.credentials.rabbitmq.password
        self.queue = queue or f"chaos-oracle-{uuid.uuid4().hex[:8]}"
        self.interval = interval
        self.max_ops = max_ops
        self.max_seconds = max_seconds
        self.ledger = OpLedger()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @functools.cached_property
    def password(self) -> str:
        return self._secret.reveal()

    def describe(self) -> str:
        return (f"RabbitMQ publisher with confirms on {', '.join(ep.name for ep in self.endpoints)}"
                f" (persistent messages to quorum queue {self.queue}, failing over)")

    def promise(self) -> str:
        return (f"every confirmed message is consumed from {self.queue} at least once "
                "(duplicates reported, not failed), no phantom, at least one confirmed; "
                "unknown outcomes counted apart")

    def _params(self, ep: Endpoint) -> pika.ConnectionParameters:
        refuse(f"connecting to RabbitMQ on {ep.name}")
        host, port = ep.address()
        return pika.ConnectionParameters(
            host=host, port=port, credentials=pika.PlainCredentials(self.user, self.password),
            socket_timeout=CONNECT_TIMEOUT, blocked_connection_timeout=IO_TIMEOUT,
            stack_timeout=IO_TIMEOUT * 2, connection_attempts=1, heartbeat=5)

    @contextlib.contextmanager
    def _channel(self, ep: Endpoint) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
        conn = pika.BlockingConnection(self._params(ep))
        try:
            yield conn.channel()
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def prepare(self) -> None:
        errors = []
        for ep in self.endpoints:
            try:
                with self._channel(ep) as ch:
                    ch.queue_declare(self.queue, durable=True,
                                     arguments={"x-queue-type": "quorum"})
                return
            except pika.exceptions.AMQPError as exc:
                errors.append(f"{ep.name}: {exc!r}")
        raise ConnectionError("no RabbitMQ node accepted the oracle queue: " + "; ".join(errors))

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        n = 0
        node = 0
        while not self._stop.is_set() and n < self.max_ops and time.monotonic() < deadline:
            ep = self.endpoints[node % len(self.endpoints)]
            try:
                conn = pika.BlockingConnection(self._params(ep))
                ch = conn.channel()
                ch.confirm_delivery()
            except Exception:  # any failure to connect: nothing was sent, try the next node
                with self.ledger.lock:
                    self.ledger.failed += 1
                node += 1
                self._stop.wait(max(self.interval, 0.2))
                n += 1
                continue
            refused = 0
            try:
                while (not self._stop.is_set() and n < self.max_ops
                       and time.monotonic() < deadline):
                    n += 1
                    op = uuid.uuid4().hex
                    with self.ledger.lock:
                        self.ledger.attempts += 1
                    # pika waits for a confirm without any limit; a confirm that never
                    # comes (the queue's leader died with the request in flight) would
                    # stall the publisher for good, so a watchdog closes the connection
                    watchdog = threading.Timer(
                        CONFIRM_TIMEOUT, conn.add_callback_threadsafe, (conn.close,))
                    watchdog.daemon = True
                    watchdog.start()
                    try:
                        ch.basic_publish("", self.queue, op.encode(),
                                         pika.BasicProperties(delivery_mode=2, message_id=op),
                                         mandatory=True)
                    except (pika.exceptions.NackError, pika.exceptions.UnroutableError):
                        with self.ledger.lock:
                            self.ledger.failed += 1
                        # measured: after the queue's leader died, a channel that was in
                        # use can go on being refused although a new leader serves; a
                        # fresh connection is not
                        refused += 1
                        if refused >= 3:
                            raise ConnectionResetError("publishes refused: reconnecting") from None
                    except Exception:
                        # sent, but the answer never came (pika raises socket errors
                        # unwrapped too): the broker may or may not have it
                        with self.ledger.lock:
                            self.ledger.unknown.add(op)
                        raise
                    else:
                        refused = 0
                        with self.ledger.lock:
                            self.ledger.acked.add(op)
                    finally:
                        watchdog.cancel()
                    self._stop.wait(self.interval)
            except Exception:  # the connection is gone: fail over to the next node
                node += 1
            finally:
                with contextlib.suppress(Exception):
                    conn.close()

    def start(self) -> None:
        self.prepare()
        self._thread = threading.Thread(target=self._loop, name="rabbit-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def verdict(self, *, drain_seconds: float = 60.0) -> RabbitVerdict:
        """Drain the queue (bounded in time and count) and compare with the ledger."""
        with self.ledger.lock:
            confirmed, unknown = set(self.ledger.acked), set(self.ledger.unknown)
        received: Counter[str] = Counter()
        limit = (self.ledger.attempts + 10) * 3
        deadline = time.monotonic() + drain_seconds
        last_error: Exception | None = None
        for ep in self.endpoints * 2:
            if time.monotonic() > deadline:
                break
            try:
                with self._channel(ep) as ch:
                    while time.monotonic() < deadline and sum(received.values()) < limit:
                        method, _, body = ch.basic_get(self.queue, auto_ack=True)
                        if method is None:
                            break
                        received[body.decode()] += 1
                last_error = None
                break
            except pika.exceptions.AMQPError as exc:
                last_error = exc
        if last_error is not None:
            raise ConnectionError(f"could not drain {self.queue}: {last_error!r}")
        lost = sorted(confirmed - received.keys())
        return RabbitVerdict(
            confirmed=len(confirmed), unknown=len(unknown), lost=len(lost),
            duplicated=sum(c - 1 for c in received.values() if c > 1),
            phantom=len(received.keys() - confirmed - unknown), lost_ids=lost[:20])

    def delete_queue(self) -> None:
        for ep in self.endpoints:
            try:
                with self._channel(ep) as ch:
                    ch.queue_delete(self.queue)
                return
            except pika.exceptions.AMQPError:
                continue

    def cleanup(self) -> None:
        self.delete_queue()


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

    def oracle(self, site: Site) -> RabbitPublisher:
        return RabbitPublisher(site)

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
