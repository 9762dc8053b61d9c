"""Galera's client side: what one node says about itself and its cluster, read with
``SHOW GLOBAL STATUS`` (allowed on a non-Primary node, where ordinary queries fail with
error 1047)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pymysql

from chaos.dryrun import refuse
from chaos.fanout import ask_each
from chaos.inventory import Controller
from chaos.services import ProcessService, Section

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
        return probe(c.address, c.galera.port, user, password, timeout=timeout)

    # any failure to answer is an observation: the node's state is None, with the reason
    return GaleraView(*ask_each([c for c in site.controllers if c.galera], ask,
                                deadline=3 * timeout + 1))


class Galera(ProcessService):
    """Galera as the harness's faults see it: a quorum cluster of one node per controller."""

    name = "galera"
    quorum = True
    # group communication, IST and SST: cut, the node leaves the component; SQL stays
    ports = "4567,4568,4444"
    kinds = frozenset({"kill", "stop", "freeze", "wipe", "fill-disk", "partition",
                       "power-off", "delete-pod", "drain"})

    def section(self, host: Controller | Compute) -> Section | None:
        g = host.galera if isinstance(host, Controller) else None
        return None if g is None else Section(g.target, g.pidfile, g.start, g.datadir)

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
