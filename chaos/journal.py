"""The journal: every event of a run with a timestamp; MTTR and downtime come from it.

Events are appended as JSON lines as they happen (so a killed run still leaves its
story), and kept in memory for the report.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaos.steps import Step


class Journal:
    def __init__(self, path: Path | None = None, *, scenario: str | None = None) -> None:
        self.path = path
        self.scenario = scenario
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        # set in runbook mode: asked before every destructive step
        self.confirm: Callable[[Step], None] | None = None

    def event(self, name: str, **data: Any) -> dict[str, Any]:
        entry = {"t": round(time.time(), 3), "event": name, **data}
        if self.scenario:
            entry.setdefault("scenario", self.scenario)
        with self._lock:
            self.events.append(entry)
            if self.path is not None:
                with open(self.path, "a") as out:
                    out.write(json.dumps(entry, default=str) + "\n")
        return entry

    def first(self, name: str, after: float = 0.0) -> float | None:
        """Time of the first ``name`` event at or after ``after``."""
        for entry in self.events:
            if entry["event"] == name and entry["t"] >= after:
                return float(entry["t"])
        return None

    def mttr(self, injected: str = "fault.inject", healthy: str = "healthy") -> float | None:
        """Seconds from the first fault to the first fully healthy observation after it."""
        start = self.first(injected)
        if start is None:
            return None
        end = self.first(healthy, after=start)
        return None if end is None else round(end - start, 3)

    def properties(self) -> dict[str, object]:
        """Figures for JUnit properties: MTTR, downtime and the oracles' counts."""
        props: dict[str, object] = {}
        mttr = self.mttr(healthy="quorum")
        if mttr is not None:
            props["mttr_seconds"] = mttr
        start = self.first("fault.inject")
        degraded = self.first("degraded", after=start or 0.0) if start else None
        back = self.first("quorum", after=degraded or 0.0) if degraded else None
        if degraded is not None and back is not None:
            props["downtime_seconds"] = round(back - degraded, 3)
        for entry in self.events:
            if entry["event"] == "oracle.galera":
                props["lost_writes"] = sum(entry["lost"].values())
                props["unknown_writes"] = entry["unknown"]
                props["acknowledged_writes"] = entry["acknowledged"]
            elif entry["event"] == "oracle.rabbitmq":
                props["lost_messages"] = entry["lost"]
                props["confirmed_messages"] = entry["confirmed"]
            elif entry["event"] == "oracle.vms":
                props["vms_survived"] = len(entry["survived"])
                props["vms_died"] = len(entry["died"]) + len(entry["restarted"])
        return props
