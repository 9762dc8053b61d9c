"""The data-loss oracle's shared words: what a workload client remembers of its own
operations, and what every service's workload and verdict offer the harness.

While a scenario runs, each service with an oracle (Galera's writer, RabbitMQ's
publisher; ``Service.oracle``) runs a bounded client. Each operation carries a unique id
recorded client-side, in one of three sets:

- acknowledged: the server said yes (COMMIT returned / broker confirmed);
- unknown: the connection broke after the request was sent and before the answer came,
  so it may or may not have happened — counted separately, never as lost;
- failed: the server said no, or nothing was sent.

After recovery each oracle reads back what its service kept and gives a ``Verdict``:
Galera, every acknowledged id on *every* node (a duplicate or a phantom fails too);
RabbitMQ, at-least-once, as quorum queues with confirms promise (a confirmed message
consumed at least once; redelivered copies are reported, not failed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from chaos.journal import Event

DB = "chaos_oracle"
CONNECT_TIMEOUT = 3
IO_TIMEOUT = 5
CONFIRM_TIMEOUT = 5.0


@dataclass(frozen=True)
class Endpoint:
    """A member's client port: its host's address, or, for a pod the harness has no
    route to (inventory ``reach: port-forward``), a local address that the API server
    relays (``forward``, called when a client connects: never in a rehearsal)."""

    name: str
    host: str
    port: int
    forward: Callable[[], tuple[str, int]] | None = field(default=None, compare=False,
                                                          repr=False)

    def address(self) -> tuple[str, int]:
        return self.forward() if self.forward is not None else (self.host, self.port)


@dataclass
class OpLedger:
    """What a workload client knows about its own operations: acknowledged, unknown,
    failed. (Not the fault ledger of :mod:`chaos.ledger`.)"""

    acked: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    failed: int = 0
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Verdict(Protocol):
    """What an oracle concluded, and how the journal records it."""

    @property
    def event(self) -> Event:
        """The journal event that records it."""
        ...

    @property
    def ok(self) -> bool: ...

    @property
    def acknowledged_total(self) -> int:
        """Operations the service acknowledged: none at all proves nothing."""
        ...

    @property
    def first_lost(self) -> object:
        """The first lost ids, for the failure message."""
        ...

    def summary(self) -> str: ...

    def fields(self) -> dict[str, Any]:
        """The journal event's fields."""
        ...


class Oracle(Protocol):
    """A service's bounded workload client and its read-back."""

    name: str
    # "data": what the service acknowledged is kept, whatever the scenario; or
    # "availability": the service kept answering, promised only where quorum is kept
    kind: Literal["data", "availability"]
    ledger: OpLedger

    def describe(self) -> str: ...

    def promise(self) -> str:
        """What its verdict proves, in words (a dry run's plan)."""
        ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 15.0) -> None: ...

    def verdict(self) -> Verdict: ...

    def cleanup(self) -> None:
        """Remove what the workload left on the site (a queue), after the verdict."""
        ...
