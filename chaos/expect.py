"""What scenarios wait for and assert, in the words of a runbook.

Every wait goes through :func:`chaos.wait.wait_for` (bounded, reports what it last saw)
and journals what it observed, so the timeline shows when the site degraded and when it
was whole again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chaos import probes
from chaos.inventory import Site
from chaos.journal import Journal
from chaos.probes import DomainIdentity
from chaos.wait import wait_for
from chaos.workload import Ledger as OpLedger


def _observe(journal: Journal | None, name: str, **data: Any) -> None:
    if journal is not None:
        journal.event(name, **data)


def galera_quorum(site: Site, members: list[str], *, journal: Journal | None = None,
                  timeout: float = 60.0) -> probes.GaleraView:
    """``members`` form the Primary component, size == len(members)."""
    __tracebackhide__ = True

    def check() -> tuple[bool, probes.GaleraView]:
        view = probes.galera(site)
        ok = all((s := view.states.get(m)) is not None and s.status == "Primary"
                 and s.size == len(members) for m in members)
        return ok, view

    view = wait_for(check, what=f"Galera quorum of {', '.join(members)}", timeout=timeout)
    _observe(journal, "degraded", service="galera", view=view.describe())
    return view


def galera_non_primary(site: Site, node: str, *, journal: Journal | None = None,
                       timeout: float = 60.0) -> probes.GaleraView:
    __tracebackhide__ = True

    def check() -> tuple[bool, probes.GaleraView]:
        view = probes.galera(site)
        state = view.states.get(node)
        return state is not None and state.status != "Primary", view

    view = wait_for(check, what=f"{node} to leave the Primary component", timeout=timeout)
    _observe(journal, "degraded", service="galera", view=view.describe())
    return view


def galera_healthy(site: Site, *, journal: Journal | None = None,
                   timeout: float = 120.0) -> probes.GaleraView:
    __tracebackhide__ = True

    def check() -> tuple[bool, probes.GaleraView]:
        view = probes.galera(site)
        return view.healthy(), view

    view = wait_for(check, what="every Galera node Primary and Synced", timeout=timeout)
    _observe(journal, "quorum", service="galera", view=view.describe())
    return view


def rabbit_running(site: Site, hosts: list[str], *, journal: Journal | None = None,
                   timeout: float = 90.0) -> probes.RabbitView:
    """Exactly ``hosts`` are running, as seen from each of them."""
    __tracebackhide__ = True

    def check() -> tuple[bool, probes.RabbitView]:
        view = probes.rabbitmq(site, queues=False)
        want = {view.nodes[h] for h in hosts}
        ok = all((s := view.states.get(h)) is not None and set(s.running_nodes) == want
                 for h in hosts)
        return ok, view

    view = wait_for(check, what=f"RabbitMQ running on exactly {', '.join(hosts)}",
                    timeout=timeout, interval=0.5)
    _observe(journal, "degraded", service="rabbitmq", view=view.describe())
    return view


def rabbit_healthy(site: Site, *, journal: Journal | None = None,
                   timeout: float = 120.0) -> probes.RabbitView:
    __tracebackhide__ = True

    def check() -> tuple[bool, probes.RabbitView]:
        view = probes.rabbitmq(site)
        return view.healthy(), view

    view = wait_for(check, what="every RabbitMQ node running, no partition, every quorum "
                    "queue member online", timeout=timeout, interval=0.5)
    _observe(journal, "quorum", service="rabbitmq", view=view.describe())
    return view


# -- VM identity --------------------------------------------------------------------


@dataclass(frozen=True)
class VmVerdict:
    """Same qemu pid and start time as before the fault: survived. Anything else:
    restarted (a new qemu) or died (no qemu)."""

    survived: list[str]
    restarted: list[str]
    died: list[str]

    @property
    def all_survived(self) -> bool:
        return not self.restarted and not self.died

    def summary(self) -> str:
        return (f"VMs survived: {len(self.survived)}, restarted: {self.restarted or 0}, "
                f"died: {self.died or 0}")


def vm_snapshot(site: Site, hosts: list[str]) -> dict[str, DomainIdentity]:
    """Every running domain on ``hosts``, keyed by UUID."""
    found = {}
    for host in hosts:
        for dom in probes.domains(site, host):
            if dom.state == "running" and dom.qemu_pid:
                found[dom.uuid] = dom
    return found


def vm_verdict(before: dict[str, DomainIdentity], after: dict[str, DomainIdentity],
               *, journal: Journal | None = None) -> VmVerdict:
    survived, restarted, died = [], [], []
    for uuid, dom in before.items():
        now = after.get(uuid)
        if now is None or not now.qemu_pid:
            died.append(dom.name)
        elif (now.qemu_pid, now.start_ticks) == (dom.qemu_pid, dom.start_ticks):
            survived.append(dom.name)
        else:
            restarted.append(dom.name)
    verdict = VmVerdict(survived, restarted, died)
    _observe(journal, "oracle.vms", survived=survived, restarted=restarted, died=died)
    return verdict


def more_acknowledged(ledger: OpLedger, more_than: int, *, what: str,
                      timeout: float = 60.0) -> int:
    """Wait until a workload has more than ``more_than`` acknowledged operations: proof
    that the service takes writes (again) while the scenario runs."""
    __tracebackhide__ = True
    return wait_for(lambda: (len(ledger.acked) > more_than, len(ledger.acked)),
                    what=f"more than {more_than} {what}", timeout=timeout)
