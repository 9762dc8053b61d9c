"""The workload of a scenario: every service's data-loss oracle (``Service.oracle``: a
Galera writer, a RabbitMQ publisher…) run in the background while faults act, and read
back after recovery. What the oracles promise: :mod:`chaos.oracle`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

from chaos import dryrun
from chaos.errors import ConfigError
from chaos.inventory import Site
from chaos.journal import Event, Journal
from chaos.oracle import DB, Endpoint, OpLedger, Oracle, Verdict
from chaos.services import SERVICES
from chaos.services.galera import GaleraVerdict, GaleraWriter
from chaos.services.rabbitmq import RabbitPublisher, RabbitVerdict

# the oracles' homes are their services'; these names stay importable from here
__all__ = ["DB", "Endpoint", "GaleraVerdict", "GaleraWriter", "OpLedger", "RabbitPublisher",
           "RabbitVerdict", "Workload"]


class Workload:
    """Background writers and the data-loss oracle, for one scenario."""

    def __init__(self, site: Site, journal: Journal, *, availability: bool = True) -> None:
        self.site = site
        self.journal = journal
        self.oracles: dict[str, Oracle] = {}
        self.verdicts: dict[str, Verdict] = {}  # each oracle is read back once
        # whether the scenario promises the API's availability (it keeps quorum); data
        # is promised whatever the scenario
        self.availability = availability

    def oracle(self, service: str) -> Oracle | None:
        """The running oracle of ``service``, if the scenario runs one."""
        return self.oracles.get(service)

    @property
    def writer(self) -> GaleraWriter | None:
        """Galera's writer (a scenario's shorthand)."""
        found = self.oracles.get("galera")
        return found if isinstance(found, GaleraWriter) else None

    @property
    def publisher(self) -> RabbitPublisher | None:
        """RabbitMQ's publisher (a scenario's shorthand)."""
        found = self.oracles.get("rabbitmq")
        return found if isinstance(found, RabbitPublisher) else None

    @contextlib.contextmanager
    def running(self, *, also: Sequence[Oracle] = (), **wanted: bool) -> Iterator[Workload]:
        """Every service's oracle where the site runs the service; ``galera=False`` (any
        service's name) leaves one out. ``also``: oracles a scenario asks for by itself,
        run and judged beside them under their own names (the OpenStack boot/delete
        workload, ``chaos.cloud.BootDelete``: site-level, and it spends the cloud's
        capacity, so never implied by the inventory)."""
        unknown = sorted(set(wanted) - set(SERVICES))
        if unknown:
            raise ConfigError(f"workload: unknown service(s) {', '.join(unknown)} "
                              f"(services: {', '.join(SERVICES)})")
        present = self.site.services()
        self.oracles = {}
        self.verdicts = {}
        for name in SERVICES:
            if wanted.get(name, True) and name in present:
                made = SERVICES[name].oracle(self.site)
                if made is not None:
                    self.oracles[name] = made
        for extra in also:
            if extra.name in self.oracles:
                raise ConfigError(f"workload: two oracles named {extra.name}")
            self.oracles[extra.name] = extra
        started = list(self.oracles.values())
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
            self.journal.event(Event.WORKLOAD_START,
                               **{name: name in self.oracles for name in SERVICES
                                  if name in present},
                               **{extra.name: True for extra in also})
            time.sleep(0.5)  # something acknowledged before the fault
            yield self
        finally:
            for w in started:
                w.stop()
            self.journal.event(Event.WORKLOAD_STOP)

    def verdict(self, service: str) -> Verdict:
        """``service``'s oracle read back, journaled; what it left on the site removed.
        Once: a scenario that judged one itself is not judged twice for it."""
        if service in self.verdicts:
            return self.verdicts[service]
        oracle = self.oracles.get(service)
        assert oracle is not None, f"the {service} workload did not run"
        try:
            verdict = oracle.verdict()
        finally:
            oracle.cleanup()
        self.journal.event(verdict.event, **verdict.fields())
        self.verdicts[service] = verdict
        return verdict

    def galera_verdict(self) -> Verdict:
        return self.verdict("galera")

    def rabbit_verdict(self) -> Verdict:
        return self.verdict("rabbitmq")

    def assert_nothing_lost(self) -> None:
        """Every oracle's promise kept: every acknowledged write on every Galera node,
        every confirmed message consumed, and so on for each service that ran one."""
        __tracebackhide__ = True
        rehearsal = dryrun.active()
        if rehearsal is not None:
            for w in self.oracles.values():
                judged = w.kind == "data" or self.availability
                rehearsal.step("oracle: " + w.promise() + (
                    "" if judged else " (reported, not judged: this scenario may take "
                    "a majority of a cluster)"))
            return
        problems, unavailable = [], []
        for name in list(self.oracles):
            oracle = self.oracles[name]
            v = self.verdict(name)
            if oracle.kind == "availability":
                if self.availability and not v.ok:
                    unavailable.append(v.summary() + f"; first error: {v.first_lost}")
                continue
            assert v.acknowledged_total > 0, f"the {name} workload got no acknowledgement at all"
            if not v.ok:
                problems.append(v.summary() + f"; first lost ids {v.first_lost}")
        assert not problems, "DATA LOST: " + " | ".join(problems)
        assert not unavailable, "API UNAVAILABLE: " + " | ".join(unavailable)
