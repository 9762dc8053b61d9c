"""Galera recovery: bring a cluster back to N Synced nodes without losing what it
acknowledged.

1. Classify: healthy; a Primary component with members missing ("degraded"); survivors
   stuck non-Primary; full outage.
2. Gather every stopped node's position: grastate.dat (uuid, seqno, safe_to_bootstrap),
   and ``mariadbd --wsrep-recover`` where seqno is -1 — in parallel.
3. Choose the bootstrap node: the highest seqno among nodes sharing the cluster UUID;
   ties go to the first in inventory order, and say so. Refuse (exit 1) on differing
   UUIDs (split history) or an unknown position, unless the operator names ``--node``.
   safe_to_bootstrap=1 is never trusted on its own (mariadb-operator #1108: an empty node
   claiming it lost data); only the chosen node is marked.
4. Non-Primary survivors: ``pc.bootstrap=YES`` on the most advanced survivor, in place.
5. Joiners start with their recovered ``--wsrep-start-position``, so the donor serves IST
   where it can, one at a time, each awaited to Synced: restarting a member while a joiner
   is mid-IST aborts the joiner (kolla-ansible's joiner race).
6. gvwstate.dat: on a full outage it is removed from every node before the bootstrap,
   so the primary component is formed by the chosen node alone rather than re-formed by
   pc.recovery from a stale view — the plan says so.

``plan`` is pure: observation in, Steps out. ``observe`` and ``execute`` act. In a
dry run all three show the procedure in words instead (``PROCEDURE``).
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from chaos import probes
from chaos.errors import ConfigError, HarnessError
from chaos.inventory import Controller, Site
from chaos.steps import ALIVE, Step, detached, restart_log
from chaos.targets import for_url
from chaos.targets.base import quote
from recovery.plan import Plan, Procedure
from recovery.plan import execute as run_plan

PROCEDURE = Procedure(
    "galera",
    observes="every node: SQL where it answers; where it does not, grastate.dat (uuid, "
             "seqno, safe_to_bootstrap), and mariadbd --wsrep-recover where seqno is -1",
    decides="a Primary component with members missing: start each missing node with its "
            "position, one at a time, to join by IST; survivors outside any Primary "
            "component: pc.bootstrap=YES on the most advanced survivor, in place; full "
            "outage: remove gvwstate.dat everywhere, bootstrap from the most advanced node "
            "(highest seqno of the one cluster UUID, ties by inventory order; refused on "
            "split history or an unknown position), then the joiners one at a time by IST, "
            "each awaited to Synced",
    done="every node is Primary and Synced")

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
RECOVERED = re.compile(r"Recovered position:?\s+([0-9a-f-]{36}):(-?\d+)")


@dataclass(frozen=True)
class Position:
    node: str
    running: bool  # answers SQL
    uuid: str | None
    seqno: int | None  # None: unknown
    safe_to_bootstrap: bool | None
    source: str  # "running", "grastate.dat", "wsrep-recover", or why it is unknown

    @property
    def empty(self) -> bool:
        """No data worth keeping: a zero UUID, or nothing ever committed."""
        return self.uuid in (None, ZERO_UUID) or self.seqno == -1


@dataclass(frozen=True)
class Observation:
    view: probes.GaleraView
    positions: dict[str, Position]


@dataclass
class GaleraPlan(Plan):
    positions: dict[str, Position] = field(default_factory=dict)

    def details(self) -> list[str]:
        lines = ["positions:",
                 f"  {'node':<8} {'running':<8} {'uuid':<37} {'seqno':>7}  safe  source"]
        for p in self.positions.values():
            lines.append(f"  {p.node:<8} {'yes' if p.running else 'no':<8} {p.uuid or '?':<37} "
                         f"{'?' if p.seqno is None else p.seqno:>7}  "
                         f"{'-' if p.safe_to_bootstrap is None else int(p.safe_to_bootstrap):>4}"
                         f"  {p.source}")
        return lines


def _nodes(site: Site) -> list[Controller]:
    nodes = [c for c in site.controllers if c.galera]
    if not nodes:
        raise ConfigError("the site has no Galera node")
    return nodes


def _grastate(text: str) -> tuple[str | None, int | None, bool | None]:
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    uuid = fields.get("uuid", "").strip() or None
    seqno_text = fields.get("seqno", "").strip()
    seqno = int(seqno_text) if re.fullmatch(r"-?\d+", seqno_text) else None
    safe = fields.get("safe_to_bootstrap", "").strip()
    return uuid, seqno, (safe == "1") if safe in ("0", "1") else None


def parse_recovered(log: str) -> tuple[str, int] | None:
    """The last 'Recovered position' in a --wsrep-recover log (with or without GTID)."""
    found = RECOVERED.findall(log)
    return (found[-1][0], int(found[-1][1])) if found else None


def _position(site: Site, node: Controller, state: probes.GaleraState | None) -> Position:
    assert node.galera is not None
    if state is not None:
        return Position(node.name, True, state.cluster_uuid, state.last_committed, None,
                        "running")
    g = node.galera
    grastate = f"{g.datadir.rstrip('/')}/grastate.dat"
    log = f"/tmp/chaos-wsrep-recover-{node.name}.log"
    # one round trip per node: is it alive, what does grastate.dat say, and only when
    # its seqno is -1, what InnoDB recovers (the node's own binary and config)
    script = ALIVE
    if g.pidfile:
        script += quote("if alive \"$(cat %s 2>/dev/null)\"; then echo ALIVE; exit 0; fi; ",
                        g.pidfile)
    script += quote("[ -f %s ] || { echo NO-GRASTATE; exit 0; }; cat %s; ", grastate, grastate)
    if g.start:
        script += (quote("if grep -q '^seqno: *-1' %s; then rm -f %s; touch %s; "
                         "chown mysql %s 2>/dev/null; ", grastate, log, log, log)
                   + g.start + quote(" --wsrep-recover --log-error=%s >/dev/null 2>&1; "
                                     "echo WSREP-RECOVER; cat %s; fi", log, log))
    try:
        out = for_url(g.target, site).run(script, timeout=120).stdout
    except HarnessError as exc:
        return Position(node.name, False, None, None, None, f"unknown: {exc}")
    if out.startswith("ALIVE"):
        return Position(node.name, False, None, None, None,
                        "process alive but not answering SQL (frozen or starting?)")
    if out.startswith("NO-GRASTATE"):
        return Position(node.name, False, None, None, None, "unknown: no grastate.dat")
    text, _, recover_log = out.partition("WSREP-RECOVER")
    uuid, seqno, safe = _grastate(text)
    if seqno is not None and seqno >= 0:
        return Position(node.name, False, uuid, seqno, safe, "grastate.dat")
    if not g.start:
        return Position(node.name, False, uuid, None, safe,
                        "unknown: seqno -1 and no start command to run --wsrep-recover")
    recovered = parse_recovered(recover_log)
    if recovered is None:
        return Position(node.name, False, uuid, None, safe,
                        "unknown: wsrep-recover printed no position")
    return Position(node.name, False, recovered[0], recovered[1], safe, "wsrep-recover")


def observe(site: Site) -> Observation:
    if PROCEDURE.rehearse("observe"):
        return Observation(probes.GaleraView({}, {}), {})
    nodes = _nodes(site)
    view = probes.galera(site)
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        positions = list(pool.map(lambda n: _position(site, n, view.states.get(n.name)), nodes))
    return Observation(view, {p.node: p for p in positions})


# -- planning (pure) -------------------------------------------------------------------


def _start(node: Controller, *extra: str, effect: str, wait: str) -> Step:
    assert node.galera is not None and node.galera.start
    log = restart_log(node.galera.pidfile) if node.galera.pidfile else "/dev/null"
    command = node.galera.start + "".join(" " + shlex.quote(e) for e in extra)
    return Step(node.galera.target, detached(command, log), effect, wait=wait,
                wait_timeout=120)


def _joiner_steps(nodes: dict[str, Controller], joiners: list[str],
                  positions: dict[str, Position], cluster_uuid: str | None) -> list[Step]:
    steps = []
    for name in joiners:
        p = positions[name]
        extra = []
        if p.uuid == cluster_uuid and p.seqno is not None and p.seqno >= 0:
            extra = [f"--wsrep-start-position={p.uuid}:{p.seqno}"]
            how = f"joins by IST from seqno {p.seqno}"
        else:
            how = "joins by full state transfer (no usable position)"
        steps.append(_start(nodes[name], *extra, effect=f"{name} {how}", wait=f"synced:{name}"))
    return steps


def plan(site: Site, obs: Observation, *, force_node: str | None = None) -> GaleraPlan:
    if PROCEDURE.rehearse("plan"):
        return PROCEDURE.rehearsed(GaleraPlan)
    nodes = {n.name: n for n in _nodes(site)}
    order = list(nodes)
    if force_node is not None and force_node not in nodes:
        raise ConfigError(f"--node: {force_node!r} is not a Galera node "
                          f"(nodes: {', '.join(order)})")
    states = obs.view.states
    positions = obs.positions
    missing_start = [n for n in order if states.get(n) is None and not nodes[n].galera.start]  # type: ignore[union-attr]
    if obs.view.healthy(len(order)):
        return GaleraPlan("galera", "healthy", positions=positions)
    if missing_start:
        return GaleraPlan("galera", "unknown", positions=positions, refused=(
            f"the inventory gives no start command for {', '.join(missing_start)}"))
    primaries = [n for n in order if (s := states.get(n)) is not None and s.status == "Primary"]
    if primaries:
        cluster_uuid = states[primaries[0]].cluster_uuid  # type: ignore[union-attr]
        down = [n for n in order if states.get(n) is None]
        stuck = [n for n in order if n not in primaries and n not in down]
        result = GaleraPlan("galera", "degraded", positions=positions)
        if stuck:
            result.notes.append(f"{', '.join(stuck)} answer but are outside the Primary "
                                "component; they normally rejoin by themselves once they "
                                "can reach it, so they are only awaited")
        result.steps = _joiner_steps(nodes, down, positions, cluster_uuid)
        result.steps += [Step(f"galera://{n}", "SELECT 1", f"{n} is back in the component",
                              must_succeed=False, wait=f"synced:{n}") for n in stuck]
        return result

    survivors = [n for n in order if states.get(n) is not None]
    if survivors:
        result = GaleraPlan("galera", "non-primary", positions=positions)
        best = force_node if force_node in survivors else max(
            survivors, key=lambda n: (states[n].last_committed, -order.index(n)))  # type: ignore[union-attr]
        best_seqno = states[best].last_committed  # type: ignore[union-attr]
        uuid = states[best].cluster_uuid  # type: ignore[union-attr]
        ahead = [p.node for p in positions.values() if not p.running and p.uuid == uuid
                 and p.seqno is not None and p.seqno > best_seqno]
        if ahead and force_node is None:
            result.refused = (f"stopped node(s) {', '.join(ahead)} hold later transactions than "
                              f"every survivor; bootstrapping {best} would lose them "
                              "(name the node with --node to override)")
            return result
        ties = [n for n in survivors if states[n].last_committed == best_seqno]  # type: ignore[union-attr]
        result.bootstrap = best
        result.why = ("named by the operator" if force_node else
                      f"most advanced survivor, last committed {best_seqno}"
                      + (f"; tie with {', '.join(t for t in ties if t != best)} broken by "
                         "inventory order" if len(ties) > 1 else ""))
        result.steps = [Step(f"galera://{best}",
                             "SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'",
                             f"{best} forms a Primary component in place, with every survivor "
                             "connected to it", wait=f"primary:{best}", wait_timeout=30)]
        result.steps += [Step(f"galera://{n}", "SELECT 1", f"{n} is Synced in the component",
                              must_succeed=False, wait=f"synced:{n}")
                         for n in survivors if n != best]
        result.steps += _joiner_steps(nodes, [n for n in order if n not in survivors],
                                      positions, uuid)
        return result

    # full outage
    result = GaleraPlan("galera", "full-outage", positions=positions)
    known = [p for p in positions.values() if p.seqno is not None and not p.empty]
    unknown = [p.node for p in positions.values() if p.seqno is None]
    uuids = sorted({p.uuid for p in known if p.uuid})
    if force_node is not None:
        best = force_node
        result.why = "named by the operator"
        if unknown or len(uuids) > 1:
            result.notes.append("forced despite: " + "; ".join(
                ([f"unknown position on {', '.join(unknown)}"] if unknown else [])
                + ([f"differing cluster UUIDs {', '.join(uuids)}"] if len(uuids) > 1 else [])))
    else:
        if len(uuids) > 1:
            groups = "; ".join(f"{u}: {', '.join(p.node for p in known if p.uuid == u)}"
                               for u in uuids)
            result.refused = (f"split history: nodes carry different cluster UUIDs ({groups}); "
                              "choosing one discards the other's commits (name the node "
                              "with --node to override)")
            return result
        if unknown:
            result.refused = (f"position unknown on {', '.join(unknown)} "
                              f"({positions[unknown[0]].source}); bootstrapping without it may "
                              "lose acknowledged commits (name the node with --node to override)")
            return result
        if not known:
            result.refused = ("no node has data (every position is empty or zero); refusing to "
                              "bootstrap an empty cluster over lost data")
            return result
        top = max(p.seqno for p in known)  # type: ignore[type-var]
        ties = [p.node for p in known if p.seqno == top]
        best = min(ties, key=order.index)
        result.why = (f"highest seqno {top} of cluster {uuids[0]}"
                      + (f"; tie with {', '.join(t for t in ties if t != best)} broken by "
                         "inventory order" if len(ties) > 1 else ""))
        empties = [p.node for p in positions.values() if p.empty and p.seqno is not None]
        if empties:
            result.notes.append(f"{', '.join(empties)} hold no data and will receive a full "
                                "state transfer, whatever their safe_to_bootstrap says")
    result.bootstrap = best
    chosen = positions[best]
    uuid = chosen.uuid if chosen.uuid not in (None, ZERO_UUID) else (uuids[0] if uuids else None)
    result.notes.append("gvwstate.dat is removed on every node so the Primary component is "
                        f"formed by {best} alone, not re-formed by pc.recovery from a stale view")
    for name in order:
        g = nodes[name].galera
        assert g is not None
        datadir = g.datadir.rstrip("/")
        safe = "1" if name == best else "0"
        result.steps.append(Step(
            g.target,
            quote("rm -f %s; if [ -f %s ]; then sed -i 's/^safe_to_bootstrap:.*/"
                  f"safe_to_bootstrap: {safe}/' %s; fi",
                  f"{datadir}/gvwstate.dat", f"{datadir}/grastate.dat", f"{datadir}/grastate.dat"),
            f"{name}: no saved view; safe_to_bootstrap={safe}"))
    extra = ["--wsrep-new-cluster"]
    if chosen.seqno is not None and chosen.seqno >= 0 and uuid:
        extra.append(f"--wsrep-start-position={uuid}:{chosen.seqno}")
    result.steps.append(_start(nodes[best], *extra, effect=f"{best} bootstraps a new Primary "
                               "component from its own data", wait=f"synced:{best}"))
    result.steps += _joiner_steps(nodes, [n for n in order if n != best], positions, uuid)
    return result


# -- acting ------------------------------------------------------------------------------


def _condition(site: Site, condition: str) -> tuple[bool, str]:
    kind, _, node = condition.partition(":")
    view = probes.galera(site, timeout=2.0)
    state = view.states.get(node)
    if kind == "primary":
        return state is not None and state.status == "Primary", view.describe()
    if kind == "synced":
        return state is not None and state.healthy, view.describe()
    if kind == "healthy":
        return view.healthy(), view.describe()
    raise AssertionError(condition)


def execute(site: Site, plan_: Plan, *, journal: Any = None,
            confirm: Callable[[Step], None] | None = None) -> None:
    """Run the plan, then require every node Primary and Synced."""
    run_plan(site, plan_, _condition, PROCEDURE, journal=journal, confirm=confirm)


def recover(site: Site, *, force_node: str | None = None, journal: Any = None) -> GaleraPlan:
    """Observe, plan and execute: the whole procedure, for scenarios."""
    if PROCEDURE.rehearse("recover"):
        return PROCEDURE.rehearsed(GaleraPlan)
    started = time.monotonic()
    the_plan = plan(site, observe(site), force_node=force_node)
    execute(site, the_plan, journal=journal)
    if journal is not None:
        journal.event("recovery.seconds", procedure="galera",
                      seconds=round(time.monotonic() - started, 2))
    return the_plan
