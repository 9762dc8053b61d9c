"""A background observer: samples every cluster member's state while a scenario runs,
so the report can draw lanes (Galera members, RabbitMQ members, domains) under the
fault bands. Bounded: one sample per ``interval``, every probe with its own timeout,
and it stops by itself after ``max_seconds``."""

from __future__ import annotations

import threading
import time

from chaos.fanout import gather
from chaos.inventory import Site
from chaos.journal import Event, Journal
from chaos.services import SERVICES

# each member's answer within this, or its lane says "down" for that sample
LANE_TIMEOUT = 1.5


class Monitor:
    def __init__(self, site: Site, journal: Journal, *, interval: float = 1.0,
                 max_seconds: float = 900.0) -> None:
        self.site = site
        self.journal = journal
        self.interval = interval
        self.max_seconds = max_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="monitor", daemon=True)

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            asked = round(time.time(), 3)
            self.journal.event(Event.SAMPLE, lanes=self.sample(), at=asked)
            self._stop.wait(self.interval)

    def sample(self) -> dict[str, str]:
        """One sample of every service's lanes, the services asked at once (each fans
        out over its own members), so a sample costs about the slowest member's answer:
        on a 50-compute site well within the one-second interval (bench/scale.py)."""
        present = self.site.services()
        gathered = gather([name for name in SERVICES if name in present],
                          lambda name: SERVICES[name].lanes(self.site, timeout=LANE_TIMEOUT),
                          deadline=3 * LANE_TIMEOUT)
        lanes: dict[str, str] = {}
        for found in gathered.results.values():
            lanes.update(found)
        for name, error in gathered.errors.items():  # an observer never ends a scenario
            lanes[f"monitor/{name}"] = f"error: {error}"[:80]
        return lanes

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
