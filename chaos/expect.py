"""What scenarios wait for and assert, in the words of a runbook.

Every wait goes through :func:`chaos.wait.wait_for` (bounded, reports what it last saw)
and journals what it observed, so the timeline shows when the site degraded and when it
was whole again. Claims about outcomes go through :func:`check`.

In a dry run (:mod:`chaos.dryrun`) nothing here probes: each wait adds "wait for <what>,
up to <timeout>s" to the plan and returns an empty value of its type, and each check
adds "check: <claim>" without evaluating it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from chaos import dryrun, probes
from chaos.inventory import Site
from chaos.journal import Event, Journal
from chaos.oracle import OpLedger
from chaos.probes import DomainIdentity
from chaos.wait import wait_for

if TYPE_CHECKING:
    from chaos.cloud import NovaHost

T = TypeVar("T")


def _observe(journal: Journal | None, name: Event, **data: Any) -> None:
    if journal is not None:
        journal.event(name, **data)


def _wait(probe: Callable[[], tuple[bool, T]], *, what: str, timeout: float, empty: T,
          interval: float = 0.25) -> tuple[T, bool]:
    """``wait_for``; in a dry run, the wait in words and ``empty`` in place of what it
    would have observed. Also says whether it really waited (only then is it journaled)."""
    __tracebackhide__ = True
    rehearsal = dryrun.active()
    if rehearsal is not None:
        rehearsal.step(f"wait for {what}, up to {timeout:g}s")
        return empty, False
    return wait_for(probe, what=what, timeout=timeout, interval=interval), True


def check(description: str, predicate: Callable[[], bool],
          detail: Callable[[], str] | None = None, *, journal: Journal | None = None) -> None:
    """A scenario's claim about an outcome, e.g. "the bootstrap node is not ctl1".

    Evaluated here, lazily: fails with ``AssertionError(description: detail)`` when the
    predicate is false, and journals a ``check`` event. A dry run cannot know outcomes:
    it adds "check: <description>" to the plan and evaluates nothing.
    """
    __tracebackhide__ = True
    rehearsal = dryrun.active()
    if rehearsal is not None:
        rehearsal.step(f"check: {description}")
        return
    ok = bool(predicate())
    _observe(journal, Event.CHECK, what=description, ok=ok)
    if not ok:
        raise AssertionError(description + (f": {detail()}" if detail is not None else ""))


def galera_quorum(site: Site, members: list[str], *, journal: Journal | None = None,
                  timeout: float = 60.0, at_least: bool = False) -> probes.GaleraView:
    """``members`` form the Primary component, size == len(members). ``at_least``: of
    that size or more, for a site whose platform may have taken the lost member back
    before anyone looks (the kubelet restarts a crashed container at once)."""
    __tracebackhide__ = True

    def look() -> tuple[bool, probes.GaleraView]:
        view = probes.galera(site)
        ok = all((s := view.states.get(m)) is not None and s.status == "Primary"
                 and (s.size >= len(members) if at_least else s.size == len(members))
                 for m in members)
        return ok, view

    view, seen = _wait(look, what=f"Galera quorum of {', '.join(members)}", timeout=timeout,
                       empty=probes.GaleraView({}, {}))
    if seen:
        _observe(journal, Event.DEGRADED, service="galera", view=view.describe())
    return view


def galera_non_primary(site: Site, node: str, *, journal: Journal | None = None,
                       timeout: float = 60.0) -> probes.GaleraView:
    __tracebackhide__ = True

    def look() -> tuple[bool, probes.GaleraView]:
        view = probes.galera(site)
        state = view.states.get(node)
        return state is not None and state.status != "Primary", view

    view, seen = _wait(look, what=f"{node} to leave the Primary component", timeout=timeout,
                       empty=probes.GaleraView({}, {}))
    if seen:
        _observe(journal, Event.DEGRADED, service="galera", view=view.describe())
    return view


def galera_healthy(site: Site, *, journal: Journal | None = None,
                   timeout: float = 120.0) -> probes.GaleraView:
    __tracebackhide__ = True

    def look() -> tuple[bool, probes.GaleraView]:
        view = probes.galera(site)
        return view.healthy(), view

    view, seen = _wait(look, what="every Galera node Primary and Synced", timeout=timeout,
                       empty=probes.GaleraView({}, {}))
    if seen:
        _observe(journal, Event.QUORUM, service="galera", view=view.describe())
    return view


def rabbit_running(site: Site, hosts: list[str], *, journal: Journal | None = None,
                   timeout: float = 90.0, at_least: bool = False) -> probes.RabbitView:
    """Exactly ``hosts`` are running, as seen from each of them (``at_least``: these and
    maybe more, where a platform may have taken a lost node back already)."""
    __tracebackhide__ = True

    def look() -> tuple[bool, probes.RabbitView]:
        view = probes.rabbitmq(site, queues=False)
        want = {view.nodes[h] for h in hosts}
        ok = all((s := view.states.get(h)) is not None
                 and (want <= set(s.running_nodes) if at_least
                      else set(s.running_nodes) == want)
                 for h in hosts)
        return ok, view

    view, seen = _wait(look, what=f"RabbitMQ running on exactly {', '.join(hosts)}",
                       timeout=timeout, interval=0.5, empty=probes.RabbitView({}, {}, {}))
    if seen:
        _observe(journal, Event.DEGRADED, service="rabbitmq", view=view.describe())
    return view


def rabbit_healthy(site: Site, *, journal: Journal | None = None,
                   timeout: float = 120.0) -> probes.RabbitView:
    __tracebackhide__ = True

    def look() -> tuple[bool, probes.RabbitView]:
        view = probes.rabbitmq(site)
        return view.healthy(), view

    view, seen = _wait(look, what="every RabbitMQ node running, no partition, every quorum "
                       "queue member online", timeout=timeout, interval=0.5,
                       empty=probes.RabbitView({}, {}, {}))
    if seen:
        _observe(journal, Event.QUORUM, service="rabbitmq", view=view.describe())
    return view


def _leader(site: Site, queue: str) -> str:
    view = probes.rabbitmq(site)
    for state in view.states.values():
        if state is not None and queue in state.quorum_queues:
            return state.quorum_queues[queue].leader
    raise AssertionError(f"queue {queue} not found: {view.describe()}")


def queue_leader(site: Site, queue: str) -> str:
    """The Erlang node leading quorum queue ``queue`` now. In a dry run it cannot be
    known: the plan goes on with the first RabbitMQ node in its place, and says so."""
    __tracebackhide__ = True
    rehearsal = dryrun.active()
    if rehearsal is not None:
        stand_in = next(c.rabbitmq.node for c in site.controllers if c.rabbitmq)
        rehearsal.step(f"look up the leader of quorum queue {queue} (this plan shows "
                       f"{stand_in} in its place; the run acts on whichever node leads)")
        return stand_in
    return _leader(site, queue)


def new_queue_leader(site: Site, queue: str, old: str, *, timeout: float = 60.0) -> str:
    """Wait until a node other than ``old`` leads quorum queue ``queue``; return it."""
    __tracebackhide__ = True
    leader, _ = _wait(lambda: ((x := _leader(site, queue)) != old, x),
                      what=f"quorum queue {queue} to elect a leader other than {old}",
                      timeout=timeout, empty="")
    return leader


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
        return (f"VMs survived: {len(self.survived)}, restarted: {_names(self.restarted)}, "
                f"died: {_names(self.died)}")


def _names(names: list[str], limit: int = 8) -> str:
    """A count, and the names while they fit on a line (a fleet has a thousand VMs)."""
    if not names:
        return "0"
    shown = ", ".join(names[:limit]) + (f", … {len(names) - limit} more"
                                         if len(names) > limit else "")
    return f"{len(names)} ({shown})"


# libvirt states in which a domain has a live qemu process the oracle can follow
LIVE = frozenset({"running", "paused", "blocked"})


def vm_snapshot(site: Site, hosts: list[str]) -> dict[str, DomainIdentity]:
    """Every live domain (running, paused or blocked: a qemu process) on ``hosts``, keyed
    by UUID. The hosts are asked in parallel; any that does not answer makes the snapshot
    fail, naming each such host and why: without it nothing can be proven of its VMs."""
    rehearsal = dryrun.active()
    if rehearsal is not None:
        rehearsal.step(f"record every running VM on {', '.join(hosts)}: its qemu pid and "
                       "start time, read on the host")
        return {}
    gathered = probes.fleet(site, hosts)
    gathered.raise_errors("VM snapshot")
    return {dom.uuid: dom for doms in gathered.results.values() for dom in doms
            if dom.state in LIVE and dom.qemu_pid}


def vm_verdict(before: dict[str, DomainIdentity], after: dict[str, DomainIdentity],
               *, journal: Journal | None = None) -> VmVerdict:
    rehearsal = dryrun.active()
    if rehearsal is not None:
        rehearsal.step("oracle: each VM recorded before, now: same qemu pid and start time = "
                       "survived, another qemu = restarted, none = died")
        return VmVerdict([], [], [])
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
    _observe(journal, Event.ORACLE_VMS, survived=survived, restarted=restarted, died=died)
    return verdict


def nova_host(nova: NovaHost | None, *, journal: Journal | None = None) -> None:
    """Where nova runs a compute service on the drilled host (``NovaHost.where_running``;
    None elsewhere: nothing to check): nova-compute up and enabled again within its
    bound, every server ACTIVE before still ACTIVE, and a new server boots there."""
    __tracebackhide__ = True
    if nova is None:
        return
    verdict = nova.verdict()
    _observe(journal, Event.ORACLE_NOVA_HOST, **verdict.fields())
    check(f"nova-compute on {nova.host} up within {nova.within:g}s, its servers still "
          "ACTIVE, a new server boots there", lambda: verdict.ok, verdict.summary,
          journal=journal)


def hold(seconds: float, *, what: str) -> None:
    """Let ``seconds`` pass with the site as it is (a fault held while a workload runs);
    a dry run says so instead of sleeping."""
    rehearsal = dryrun.active()
    if rehearsal is not None:
        rehearsal.step(f"hold {seconds:g}s: {what}")
        return
    time.sleep(max(0.0, seconds))


def more_acknowledged(ledger: OpLedger, more_than: int, *, what: str,
                      timeout: float = 60.0) -> int:
    """Wait until a workload has more than ``more_than`` acknowledged operations: proof
    that the service takes writes (again) while the scenario runs."""
    __tracebackhide__ = True
    count, _ = _wait(lambda: (len(ledger.acked) > more_than, len(ledger.acked)),
                     what=f"more than {more_than} {what}", timeout=timeout, empty=more_than)
    return count


def pace(start: float, n: int, every: float) -> None:
    """Hold a rolling fault to its stated rate: return once the ``n``-th host is due
    (``start`` + ``n`` * ``every`` seconds, monotonic clock), at once if already late.
    A dry run says so instead of sleeping."""
    rehearsal = dryrun.active()
    if rehearsal is not None:
        if n == 1:
            rehearsal.step(f"pace: one host every {every:g}s (or as fast as each recovers)")
        return
    time.sleep(max(0.0, min(every, start + n * every - time.monotonic())))
