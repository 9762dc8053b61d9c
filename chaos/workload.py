"""Workload and data-loss oracle.

While a scenario runs, a bounded writer commits rows to Galera and a bounded publisher
sends persistent messages with publisher confirms to a quorum queue. Each operation
carries a unique id recorded client-side, in one of three sets:

- acknowledged: the server said yes (COMMIT returned / broker confirmed);
- unknown: the connection broke after the request was sent and before the answer came,
  so it may or may not have happened — counted separately, never as lost;
- failed: the server said no, or nothing was sent.

After recovery the oracle reads every Galera node and drains the queue:
- Galera: every acknowledged id must be on *every* node; an id present more than once
  is a duplicate; an id present but never attempted is a phantom.
- RabbitMQ: at-least-once is what quorum queues with confirms promise, so a confirmed
  message must be consumed at least once (lost otherwise); redelivered copies are
  reported as duplicates but do not fail the verdict.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pika
import pika.exceptions
import pymysql

from chaos import dryrun
from chaos.dryrun import refuse
from chaos.inventory import Site
from chaos.journal import Event, Journal

DB = "chaos_oracle"
CONNECT_TIMEOUT = 3
IO_TIMEOUT = 5
CONFIRM_TIMEOUT = 5.0


@dataclass(frozen=True)
class Endpoint:
    name: str
    host: str
    port: int


def galera_endpoints(site: Site) -> list[Endpoint]:
    return [Endpoint(c.name, c.address, c.galera.port) for c in site.controllers if c.galera]


def rabbit_endpoints(site: Site) -> list[Endpoint]:
    return [Endpoint(c.name, c.address, c.rabbitmq.amqp_port)
            for c in site.controllers if c.rabbitmq]


@dataclass
class OpLedger:
    """What a workload client knows about its own operations: acknowledged, unknown,
    failed. (Not the fault ledger of :mod:`chaos.ledger`.)"""

    acked: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    failed: int = 0
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass(frozen=True)
class GaleraVerdict:
    acknowledged: int
    unknown: int
    lost: dict[str, int]  # per node: acknowledged ids missing there
    duplicated: dict[str, int]
    phantom: dict[str, int]
    unreadable: dict[str, str]  # nodes the oracle could not read, and why
    lost_ids: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        return (not self.unreadable and not any(self.lost.values())
                and not any(self.duplicated.values()) and not any(self.phantom.values()))

    def summary(self) -> str:
        return (f"galera: {self.acknowledged} acknowledged, {self.unknown} unknown, "
                f"lost {self.lost}, duplicated {self.duplicated}, phantom {self.phantom}"
                + (f", unreadable {self.unreadable}" if self.unreadable else ""))


@dataclass(frozen=True)
class RabbitVerdict:
    confirmed: int
    unknown: int
    lost: int
    duplicated: int
    phantom: int
    lost_ids: list[str]

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.phantom == 0

    def summary(self) -> str:
        return (f"rabbitmq (at-least-once): {self.confirmed} confirmed, {self.unknown} unknown, "
                f"lost {self.lost}, duplicated {self.duplicated}, phantom {self.phantom}")


Conn = pymysql.connections.Connection


def _connect(ep: Endpoint, user: str, password: str) -> Conn:
    refuse(f"connecting to Galera on {ep.name}")
    return pymysql.connect(host=ep.host, port=ep.port, user=user, password=password,
                           connect_timeout=CONNECT_TIMEOUT, read_timeout=IO_TIMEOUT,
                           write_timeout=IO_TIMEOUT, autocommit=True)


class GaleraWriter:
    """Commits one row per operation, round-robin over the nodes that answer."""

    def __init__(self, site: Site, *, table: str = "writes", interval: float = 0.02,
                 max_ops: int = 5000, max_seconds: float = 600.0) -> None:
        self.endpoints = galera_endpoints(site)
        self.user = site.credentials.db.user
        self._secret = site.credentials.db.password
        self.table = table
        self.interval = interval
        self.max_ops = max_ops
        self.max_seconds = max_seconds
        self.ledger = OpLedger()
        # every writer tags its rows, so runs sharing the table never see each other's
        self.run = uuid.uuid4().hex[:12]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @functools.cached_property
    def password(self) -> str:
        # read when first needed: a writer that only describes itself (dry run) needs none
        return self._secret.reveal()

    def describe(self) -> str:
        return (f"Galera writer on {', '.join(ep.name for ep in self.endpoints)} (one row "
                "per operation, round-robin over the nodes that answer)")

    def promise(self) -> str:
        """What its oracle proves, in words."""
        return ("every acknowledged write is on every Galera node "
                f"({', '.join(ep.name for ep in self.endpoints)}), none duplicated, no "
                "phantom, at least one acknowledged; unknown outcomes counted apart")

    def prepare(self) -> None:
        """Create the oracle's table through the first node that answers."""
        errors = []
        for ep in self.endpoints:
            try:
                with _connect(ep, self.user, self.password) as conn, conn.cursor() as cur:
                    cur.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
                    cur.execute(f"CREATE TABLE IF NOT EXISTS {DB}.{self.table} ("
                                "pk BIGINT AUTO_INCREMENT PRIMARY KEY, run CHAR(12) NOT NULL, "
                                "op_id CHAR(32) NOT NULL, via VARCHAR(32) NOT NULL, "
                                "at DOUBLE NOT NULL, KEY (run, op_id))")
                return
            except pymysql.MySQLError as exc:
                errors.append(f"{ep.name}: {exc}")
        raise ConnectionError("no Galera node accepted the oracle table: " + "; ".join(errors))

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        conns: dict[str, Conn] = {}
        n = 0
        while not self._stop.is_set() and n < self.max_ops and time.monotonic() < deadline:
            ep = self.endpoints[n % len(self.endpoints)]
            n += 1
            op = uuid.uuid4().hex
            try:
                conn = conns.get(ep.name) or _connect(ep, self.user, self.password)
                conns[ep.name] = conn
            except pymysql.MySQLError:
                with self.ledger.lock:
                    self.ledger.failed += 1  # nothing was sent
                self._stop.wait(self.interval)
                continue
            with self.ledger.lock:
                self.ledger.attempts += 1
            try:
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {DB}.{self.table} (run, op_id, via, at) "
                                "VALUES (%s, %s, %s, %s)", (self.run, op, ep.name, time.time()))
                with self.ledger.lock:
                    self.ledger.acked.add(op)
            except pymysql.err.OperationalError as exc:
                conns.pop(ep.name, None)
                with contextlib.suppress(Exception):
                    conn.close()
                code = exc.args[0] if exc.args else 0
                # 1047 (WSREP not ready) and 1213 (certification conflict) are refusals:
                # the write did not happen. A broken connection leaves it unknown.
                with self.ledger.lock:
                    if code in (1047, 1213, 1205):
                        self.ledger.failed += 1
                    else:
                        self.ledger.unknown.add(op)
            except pymysql.MySQLError:
                with self.ledger.lock:
                    self.ledger.failed += 1
            except Exception:  # a socket error pymysql did not wrap: outcome unknown
                conns.pop(ep.name, None)
                with self.ledger.lock:
                    self.ledger.unknown.add(op)
            self._stop.wait(self.interval)
        for conn in conns.values():
            with contextlib.suppress(Exception):
                conn.close()

    def start(self) -> None:
        self.prepare()
        self._thread = threading.Thread(target=self._loop, name="galera-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def verdict(self) -> GaleraVerdict:
        """Read every node (each bounded by timeouts) and compare with the ledger."""
        with self.ledger.lock:
            acked, unknown = set(self.ledger.acked), set(self.ledger.unknown)
        lost: dict[str, int] = {}
        lost_ids: dict[str, list[str]] = {}
        dup: dict[str, int] = {}
        phantom: dict[str, int] = {}
        unreadable: dict[str, str] = {}
        for ep in self.endpoints:
            try:
                with _connect(ep, self.user, self.password) as conn, conn.cursor() as cur:
                    cur.execute(f"SELECT op_id FROM {DB}.{self.table} WHERE run = %s",
                                (self.run,))
                    counts = Counter(row[0] for row in cur.fetchall())
            except pymysql.MySQLError as exc:
                unreadable[ep.name] = str(exc)
                continue
            missing = sorted(acked - counts.keys())
            lost[ep.name] = len(missing)
            lost_ids[ep.name] = missing[:20]
            dup[ep.name] = sum(1 for c in counts.values() if c > 1)
            phantom[ep.name] = len(counts.keys() - acked - unknown)
        return GaleraVerdict(len(acked), len(unknown), lost, dup, phantom, unreadable, lost_ids)


class RabbitPublisher:
    """Publishes persistent messages with confirms to a quorum queue, failing over."""

    def __init__(self, site: Site, *, queue: str | None = None, interval: float = 0.02,
                 max_ops: int = 5000, max_seconds: float = 600.0) -> None:
        self.endpoints = rabbit_endpoints(site)
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
        return pika.ConnectionParameters(
            host=ep.host, port=ep.port, credentials=pika.PlainCredentials(self.user, self.password),
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


class Workload:
    """Background writers and the data-loss oracle, for one scenario."""

    def __init__(self, site: Site, journal: Journal) -> None:
        self.site = site
        self.journal = journal
        self.writer: GaleraWriter | None = None
        self.publisher: RabbitPublisher | None = None

    @contextlib.contextmanager
    def running(self, *, galera: bool = True, rabbitmq: bool = True) -> Iterator[Workload]:
        """The writer and the publisher, each where the site runs its service."""
        services = self.site.services()
        galera = galera and "galera" in services
        rabbitmq = rabbitmq and "rabbitmq" in services
        self.writer = GaleraWriter(self.site) if galera else None
        self.publisher = RabbitPublisher(self.site) if rabbitmq else None
        started = [w for w in (self.writer, self.publisher) if w is not None]
        rehearsal = dryrun.active()
        if rehearsal is not None:
            # described, never started: no thread, no connection
            rehearsal.step("start workload: " + "; ".join(w.describe() for w in started))
            yield self
            rehearsal.step("stop workload")
            return
        try:
            for w in started:
                w.start()
            self.journal.event(Event.WORKLOAD_START, galera=galera, rabbitmq=rabbitmq)
            time.sleep(0.5)  # something acknowledged before the fault
            yield self
        finally:
            for w in started:
                w.stop()
            self.journal.event(Event.WORKLOAD_STOP)

    def galera_verdict(self) -> GaleraVerdict:
        assert self.writer is not None, "the Galera writer did not run"
        verdict = self.writer.verdict()
        self.journal.event(Event.ORACLE_GALERA, acknowledged=verdict.acknowledged,
                           unknown=verdict.unknown, lost=verdict.lost,
                           duplicated=verdict.duplicated, phantom=verdict.phantom,
                           unreadable=verdict.unreadable)
        return verdict

    def rabbit_verdict(self) -> RabbitVerdict:
        assert self.publisher is not None, "the RabbitMQ publisher did not run"
        try:
            verdict = self.publisher.verdict()
        finally:
            self.publisher.delete_queue()
        self.journal.event(Event.ORACLE_RABBITMQ, confirmed=verdict.confirmed,
                           unknown=verdict.unknown, lost=verdict.lost,
                           duplicated=verdict.duplicated, phantom=verdict.phantom)
        return verdict

    def assert_nothing_lost(self) -> None:
        """Every acknowledged write on every Galera node; every confirmed message there."""
        __tracebackhide__ = True
        rehearsal = dryrun.active()
        if rehearsal is not None:
            for w in (self.writer, self.publisher):
                if w is not None:
                    rehearsal.step("oracle: " + w.promise())
            return
        problems = []
        if self.writer is not None:
            g = self.galera_verdict()
            assert g.acknowledged > 0, "the Galera writer got no acknowledgement at all"
            if not g.ok:
                problems.append(g.summary() + f"; first lost ids {g.lost_ids}")
        if self.publisher is not None:
            r = self.rabbit_verdict()
            assert r.confirmed > 0, "the publisher got no confirm at all"
            if not r.ok:
                problems.append(r.summary() + f"; first lost ids {r.lost_ids}")
        assert not problems, "DATA LOST: " + " | ".join(problems)
