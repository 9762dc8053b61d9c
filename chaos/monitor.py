"""A background observer: samples every cluster member's state while a scenario runs,
so the report can draw lanes (Galera members, RabbitMQ members, domains) under the
fault bands. Bounded: one sample per ``interval``, every probe with its own timeout,
and it stops by itself after ``max_seconds``."""

from __future__ import annotations

import threading
import time

from chaos import probes
from chaos.inventory import Site
from chaos.journal import Event, Journal


def galera_lane_states(site: Site) -> dict[str, str]:
    view = probes.galera(site, timeout=1.5)
    out = {}
    for node, state in view.states.items():
        if state is None:
            out[f"galera/{node}"] = "down"
        elif state.status != "Primary":
            out[f"galera/{node}"] = "non-Primary"
        else:
            out[f"galera/{node}"] = "Synced" if state.healthy else state.local_state
    return out


def rabbit_lane_states(site: Site) -> dict[str, str]:
    view = probes.rabbitmq(site, timeout=1.5, queues=False)
    running = view.running()
    out = {}
    for host, state in view.states.items():
        if state is None:
            out[f"rabbitmq/{host}"] = "down"
        elif state.partitioned:
            out[f"rabbitmq/{host}"] = "partitioned"
        else:
            out[f"rabbitmq/{host}"] = "running" if view.nodes[host] in running else "alone"
    return out


def domain_lane_states(site: Site) -> dict[str, str]:
    out = {}
    for host in (c.name for c in site.computes if c.libvirt):
        try:
            for dom in probes.domains(site, host, timeout=1.5):
                out[f"vm/{dom.name}"] = (f"running pid {dom.qemu_pid}" if dom.qemu_pid
                                         else dom.state)
        except Exception:  # libvirt down is what the lane shows
            out[f"libvirt/{host}"] = "down"
    return out


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
        tick = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            lanes: dict[str, str] = {}
            for sample in (galera_lane_states, rabbit_lane_states) + (
                    (domain_lane_states,) if tick % 2 == 0 else ()):
                try:
                    lanes.update(sample(self.site))
                except Exception as exc:  # an observer never ends a scenario
                    lanes[f"monitor/{sample.__name__}"] = f"error: {exc}"[:80]
            self.journal.event(Event.SAMPLE, lanes=lanes)
            tick += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
