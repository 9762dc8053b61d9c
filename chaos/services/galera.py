"""Galera's home: what one node says about itself and its cluster, read with ``SHOW
GLOBAL STATUS`` (allowed on a non-Primary node, where ordinary queries fail with error
1047); its data-loss oracle (a bounded writer, every acknowledged row on every node);
and what the harness's faults need of it."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pymysql

from chaos.dryrun import refuse
from chaos.fanout import ask_each
from chaos.inventory import Controller
from chaos.journal import Event
from chaos.oracle import CONNECT_TIMEOUT, DB, IO_TIMEOUT, Endpoint, OpLedger
from chaos.services import ProcessService, Section, endpoint

if TYPE_CHECKING:
    from chaos.inventory import Compute, Site


@dataclass(frozen=True)
class GaleraState:
    """What one node says about itself and its cluster (``SHOW STATUS LIKE 'wsrep_%'``)."""

    size: int
    status: str  # wsrep_cluster_status: Primary, non-Primary, Disconnected
    local_state: str  # wsrep_local_state_comment: Synced, Donor/Desynced, Joining...
    ready: bool
    last_committed: int
    cluster_uuid: str

    @property
    def healthy(self) -> bool:
        return self.status == "Primary" and self.local_state == "Synced" and self.ready

    def describe(self) -> str:
        text = f"size={self.size} {self.status} {self.local_state} seqno={self.last_committed}"
        return text if self.ready else text + " not-ready"


STATUS_QUERY = (
    "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_size', "
    "'wsrep_cluster_status', 'wsrep_local_state_comment', 'wsrep_ready', "
    "'wsrep_last_committed', 'wsrep_cluster_state_uuid')"
)


def state_from_rows(rows: dict[str, str]) -> GaleraState:
    """The typed state from ``STATUS_QUERY``'s (name, value) rows; a missing or
    unparsable number is -1, a missing word "unknown"."""

    def number(name: str) -> int:
        text = rows.get(name, "")
        return int(text) if text.lstrip("-").isdigit() else -1

    return GaleraState(
        size=number("wsrep_cluster_size"),
        status=rows.get("wsrep_cluster_status", "unknown"),
        local_state=rows.get("wsrep_local_state_comment", "unknown"),
        ready=rows.get("wsrep_ready", "OFF").upper() == "ON",
        last_committed=number("wsrep_last_committed"),
        cluster_uuid=rows.get("wsrep_cluster_state_uuid", ""),
    )


def query_state(conn: pymysql.connections.Connection[pymysql.cursors.Cursor]) -> GaleraState:
    """Ask a node over an open connection, however it was opened (TCP, unix socket)."""
    with conn.cursor() as cur:
        cur.execute(STATUS_QUERY)
        rows = {str(name): str(value) for name, value in cur.fetchall()}
    return state_from_rows(rows)


def probe(
    address: str, port: int, user: str, password: str, *, timeout: float = 3.0
) -> GaleraState:
    """Ask one node over TCP, every phase bounded by ``timeout``."""
    conn = pymysql.connect(
        host=address,
        port=port,
        user=user,
        password=password,
        connect_timeout=timeout,
        read_timeout=timeout,
        write_timeout=timeout,
    )
    try:
        return query_state(conn)
    finally:
        conn.close()


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


def view(site: Site, *, timeout: float = 3.0) -> GaleraView:
    """Every Galera node's answer, the nodes asked in parallel."""
    refuse("probing Galera")
    user, password = site.credentials.db.user, site.credentials.db.password.reveal()

    def ask(c: Controller) -> GaleraState:
        assert c.galera is not None
        return probe(*endpoint(site, c, "galera", c.galera.port).address(), user, password,
                     timeout=timeout)

    # any failure to answer is an observation: the node's state is None, with the reason
    return GaleraView(*ask_each([c for c in site.controllers if c.galera], ask,
                                deadline=3 * timeout + 1))


# -- the data-loss oracle: a bounded writer, every acknowledged row on every node ------


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
    def event(self) -> Event:
        return Event.ORACLE_GALERA

    @property
    def acknowledged_total(self) -> int:
        return self.acknowledged

    @property
    def first_lost(self) -> object:
        return self.lost_ids

    def fields(self) -> dict[str, Any]:
        return {"acknowledged": self.acknowledged, "unknown": self.unknown, "lost": self.lost,
                "duplicated": self.duplicated, "phantom": self.phantom,
                "unreadable": self.unreadable}

    @property
    def ok(self) -> bool:
        return (not self.unreadable and not any(self.lost.values())
                and not any(self.duplicated.values()) and not any(self.phantom.values()))

    def summary(self) -> str:
        return (f"galera: {self.acknowledged} acknowledged, {self.unknown} unknown, "
                f"lost {self.lost}, duplicated {self.duplicated}, phantom {self.phantom}"
                + (f", unreadable {self.unreadable}" if self.unreadable else ""))


Conn = pymysql.connections.Connection


def _connect(ep: Endpoint, user: str, password: str) -> Conn:
    refuse(f"connecting to Galera on {ep.name}")
    host, port = ep.address()
    return pymysql.connect(host=host, port=port, user=user, password=password,
                           connect_timeout=CONNECT_TIMEOUT, read_timeout=IO_TIMEOUT,
                           write_timeout=IO_TIMEOUT, autocommit=True)


# how long the writer leaves a node alone after it refused a connection
RECONNECT_BACKOFF = 1.0


class GaleraWriter:
    """Commits one row per operation, round-robin over the nodes that answer."""

    name = "galera"
    kind: Literal["data", "availability"] = "data"

    def __init__(self, site: Site, *, table: str = "writes", interval: float = 0.02,
                 max_ops: int = 5000, max_seconds: float = 600.0) -> None:
        self.endpoints = [endpoint(site, c, "galera", c.galera.port) for c in site.controllers
                          if c.galera]
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
        # a node that refused a connection is left alone for a while: each attempt costs
        # a connect timeout on a site, and a port-forward stream (an exec in the node's
        # kubelet) where the pod is reached through the API
        retry_at: dict[str, float] = {}
        n = turn = 0
        while not self._stop.is_set() and n < self.max_ops and time.monotonic() < deadline:
            ep = self.endpoints[turn % len(self.endpoints)]
            turn += 1
            resting = [e for e in self.endpoints if e.name not in conns
                       and time.monotonic() < retry_at.get(e.name, 0.0)]
            if ep in resting:
                if len(resting) == len(self.endpoints):
                    self._stop.wait(self.interval)  # every node rests: nothing to try now
                continue
            n += 1
            op = uuid.uuid4().hex
            try:
                conn = conns.get(ep.name) or _connect(ep, self.user, self.password)
                conns[ep.name] = conn
            except pymysql.MySQLError:
                retry_at[ep.name] = time.monotonic() + RECONNECT_BACKOFF
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

    def cleanup(self) -> None:
        """The rows stay: each run has its own id, and a later read ignores the others."""


class Galera(ProcessService):
    """Galera as the harness's faults see it: a quorum cluster of one node per controller."""

    name = "galera"
    quorum = True
    # group communication, IST and SST: cut, the node leaves the component; SQL stays
    ports = "4567,4568,4444"
    command_name = "mariadbd"
    kinds = frozenset({"kill", "stop", "freeze", "wipe", "fill-disk", "partition",
                       "power-off", "delete-pod", "drain"})

    def section(self, host: Controller | Compute) -> Section | None:
        g = host.galera if isinstance(host, Controller) else None
        return None if g is None else Section(g.target, g.pidfile, g.start, g.datadir)

    def oracle(self, site: Site) -> GaleraWriter:
        return GaleraWriter(site)

    def lanes(self, site: Site, *, timeout: float = 1.5) -> dict[str, str]:
        out = {}
        for node, state in view(site, timeout=timeout).states.items():
            if state is None:
                out[f"galera/{node}"] = "down"
            elif state.status != "Primary":
                out[f"galera/{node}"] = "non-Primary"
            else:
                out[f"galera/{node}"] = "Synced" if state.healthy else state.local_state
        return out


SERVICE = Galera()
