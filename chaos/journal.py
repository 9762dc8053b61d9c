"""The journal: every event of a run with a timestamp; MTTR and downtime come from it.

Events are appended as JSON lines as they happen (so a killed run still leaves its
story), and kept in memory for the report.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


class Journal:
    def __init__(self, path: Path | None = None, *, scenario: str | None = None) -> None:
        self.path = path
        self.scenario = scenario
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

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
