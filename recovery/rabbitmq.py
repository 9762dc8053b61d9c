"""RabbitMQ recovery: say which case was found, handle it, verify.

- a node crashed with its data: start it as is, wait until the cluster counts it;
- a node that lost its data: forget it from a survivor, start it (it joins as new),
  then grow every quorum queue back onto it (quorum queues do not re-add a member);
- the whole cluster stopped: start the last node that stopped first (read from each
  node's ``nodes_running_at_shutdown``); when that cannot be known, mark the first node
  with data to force-boot (what ``rabbitmqctl force_boot`` writes) and start it first;
  then the rest;
- a partition after the network healed: the nodes outside the largest agreeing group
  are restarted, so they rejoin the majority's view (with ``ignore`` handling the
  cluster would otherwise stay split).

Verify: every node running, no partitions, every quorum queue with all its members
online. CLI calls are kept few: each ``rabbitmqctl`` costs a VM start. In a dry run the
procedure is shown in words instead (``PROCEDURE``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chaos import probes
from chaos.errors import ConfigError, HarnessError
from chaos.inventory import Controller, Site
from chaos.steps import ALIVE, Step, restart_log, start_unless_running
from chaos.targets import for_url
from chaos.targets.base import quote
from recovery.plan import Plan, Procedure
from recovery.plan import execute as run_plan

PROCEDURE = Procedure(
    "rabbitmq",
    observes="every node: does it answer, is its process alive, is its data there, and "
             "its nodes_running_at_shutdown",
    decides="a node down with its data: start it as is; a node that lost its data: forget "
            "it from a survivor, start it as a new member, grow every quorum queue back onto "
            "it; the whole cluster stopped: start the last node that stopped first (marked to "
            "force-boot when that cannot be known), then the rest; split after a partition: "
            "restart the nodes outside the largest agreeing group",
    done="every node is running, without partition, every quorum queue member online",
    final_timeout=120)


@dataclass(frozen=True)
class NodeState:
    host: str
    node: str  # Erlang name
    answers: bool
    process_alive: bool | None
    has_data: bool | None
    running_at_shutdown: list[str] | None  # from nodes_running_at_shutdown


def _nodes(site: Site) -> list[Controller]:
    nodes = [c for c in site.controllers if c.rabbitmq]
    if not nodes:
        raise ConfigError("the site has no RabbitMQ node")
    return nodes


def _mnesia(c: Controller) -> str | None:
    assert c.rabbitmq is not None
    if not c.rabbitmq.data_dir:
        return None
    return f"{c.rabbitmq.data_dir.rstrip('/')}/{c.rabbitmq.node}"


def _inspect(site: Site, c: Controller, answers: bool) -> NodeState:
    r = c.rabbitmq
    assert r is not None
    mnesia = _mnesia(c)
    alive = has_data = None
    at_shutdown = None
    try:
        target = for_url(r.target, site)
        script = ""
        if r.pidfile:
            script += ALIVE + quote("alive \"$(cat %s 2>/dev/null)\" && echo ALIVE; ", r.pidfile)
        if mnesia:
            script += quote("[ -n \"$(ls -A %s 2>/dev/null)\" ] && echo DATA; "
                            "cat %s 2>/dev/null", mnesia, f"{mnesia}/nodes_running_at_shutdown")
        if script:
            out = target.run(script, timeout=15).stdout
            alive = "ALIVE" in out if r.pidfile else None
            has_data = "DATA" in out if mnesia else None
            listed = re.search(r"\[(.*?)\]\.", out, re.S)
            if listed is not None:
                at_shutdown = re.findall(r"'([^']+)'", listed.group(1))
    except HarnessError:
        pass  # unknown stays None: the plan says so
    return NodeState(c.name, r.node, answers, alive, has_data, at_shutdown)


def observe(site: Site) -> tuple[probes.RabbitView, dict[str, NodeState]]:
    if PROCEDURE.rehearse("observe"):
        return probes.RabbitView({}, {}, {}), {}
    nodes = _nodes(site)
    view = probes.rabbitmq(site)
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        states = list(pool.map(lambda c: _inspect(site, c, view.states.get(c.name) is not None),
                               nodes))
    return view, {s.host: s for s in states}


@dataclass
class RabbitPlan(Plan):
    states: dict[str, NodeState] | None = None

    def details(self) -> list[str]:
        lines = [f"  {'node':<6} {'answers':<8} {'process':<8} {'data':<6} at-shutdown"]
        for s in (self.states or {}).values():
            process = "?" if s.process_alive is None else "alive" if s.process_alive else "dead"
            lines.append(f"  {s.host:<6} {'yes' if s.answers else 'no':<8} {process:<8} "
                         f"{'?' if s.has_data is None else 'yes' if s.has_data else 'WIPED':<6} "
                         f"{','.join(s.running_at_shutdown) if s.running_at_shutdown else '-'}")
        return lines


# -- planning (pure) -------------------------------------------------------------------


def _start(c: Controller, effect: str) -> Step:
    r = c.rabbitmq
    assert r is not None and r.start and r.pidfile
    return Step(r.target, start_unless_running(r.pidfile, r.start, restart_log(r.pidfile)),
                effect, wait=f"running:{c.name}", wait_timeout=120)


def _stop(c: Controller) -> Step:
    r = c.rabbitmq
    assert r is not None and r.pidfile
    return Step(r.target, quote("kill -s TERM \"$(cat %s)\" 2>/dev/null || true", r.pidfile),
                f"{c.name}'s node stops", wait=f"stopped:{c.name}", wait_timeout=60)


def _grow(c: Controller) -> Step:
    r = c.rabbitmq
    assert r is not None
    return Step(r.target, r.cli + quote("rabbitmq-queues -n %s grow %s all --quiet",
                                        r.node, r.node),
                f"every quorum queue has a member on {c.name} again", timeout=120)


def plan(site: Site, observed: tuple[probes.RabbitView, dict[str, NodeState]], *,
         force_node: str | None = None) -> RabbitPlan:
    if PROCEDURE.rehearse("plan"):
        return PROCEDURE.rehearsed(RabbitPlan)
    view, states = observed
    nodes = {c.name: c for c in _nodes(site)}
    order = list(nodes)
    if force_node is not None and force_node not in nodes:
        raise ConfigError(f"--node: {force_node!r} is not a RabbitMQ node "
                          f"(nodes: {', '.join(order)})")
    result = RabbitPlan("rabbitmq", "healthy", states=states)
    for name, c in nodes.items():
        if not (c.rabbitmq and c.rabbitmq.start and c.rabbitmq.pidfile):
            result.situation = "unknown"
            result.refused = f"the inventory gives no start command or pidfile for {name}"
            return result
    if view.healthy():
        return result
    answering = [n for n in order if states[n].answers]
    down = [n for n in order if not states[n].answers]

    if not answering:
        result.situation = "whole cluster stopped"
        lasts = [n for n in order if states[n].running_at_shutdown == [states[n].node]]
        with_data = [n for n in order if states[n].has_data]
        if force_node is not None:
            first = force_node
            result.why = "named by the operator; marked to force-boot"
        elif lasts:
            first = lasts[0]
            result.why = "the last node to stop (its nodes_running_at_shutdown lists only itself)"
        elif with_data:
            first = with_data[0]
            result.why = ("the last node to stop is unknown; the first node with data is "
                          "marked to force-boot")
        else:
            result.refused = "no node has data: nothing to recover from"
            return result
        result.bootstrap = first
        if force_node is not None or not lasts:
            mnesia = _mnesia(nodes[first])
            r = nodes[first].rabbitmq
            assert r is not None
            if mnesia is None:
                result.refused = f"{first}: no data_dir in the inventory to mark force_load"
                return result
            # exactly what `rabbitmqctl force_boot` does, without needing a CLI node
            result.steps.append(Step(r.target, quote("touch %s", f"{mnesia}/force_load"),
                                     f"{first} will boot without waiting for its peers"))
        result.steps.append(_start(nodes[first], f"{first} boots first"))
        result.steps += [_start(nodes[n], f"{n} starts and rejoins") for n in order
                         if n != first]
        result.steps += [_grow(nodes[n]) for n in order]
        return result

    partitioned = view.partitioned()
    if partitioned:
        result.situation = "partitioned after the network healed"
        groups: dict[frozenset[str], list[str]] = {}
        for n in answering:
            state = view.states[n]
            assert state is not None
            groups.setdefault(frozenset(state.running_nodes), []).append(n)
        majority = max(groups.items(), key=lambda kv: (len(kv[0]), -order.index(kv[1][0])))[1]
        minority = [n for n in answering if n not in majority]
        result.notes.append(f"majority side: {', '.join(majority)}; restarting "
                            f"{', '.join(minority) or 'nobody'}")
        for n in minority:
            result.steps += [_stop(nodes[n]), _start(nodes[n], f"{n} rejoins the majority")]
        result.steps += [_start(nodes[n], f"{n} starts and rejoins") for n in down]
        result.steps += [_grow(nodes[n]) for n in minority + down]
        return result

    if down:
        wiped = [n for n in down if states[n].has_data is False]
        crashed = [n for n in down if n not in wiped]
        result.situation = ", ".join(filter(None, [
            f"crashed with data: {', '.join(crashed)}" if crashed else "",
            f"lost its data: {', '.join(wiped)}" if wiped else ""]))
        survivor = nodes[answering[0]]
        s = survivor.rabbitmq
        assert s is not None
        for n in wiped:
            result.steps.append(Step(
                s.target, s.cli + quote("rabbitmqctl -n %s forget_cluster_node %s --quiet",
                                        s.node, states[n].node),
                f"the cluster forgets the old {n} so it can join as a new member",
                must_succeed=False, timeout=60))
        for n in down:
            how = "joins as a new member" if n in wiped else "restarts with its data and rejoins"
            result.steps.append(_start(nodes[n], f"{n} {how}"))
        result.steps += [_grow(nodes[n]) for n in down]
        return result

    result.situation = "quorum queues missing members"
    missing = {m for members in view.queues_missing_members().values() for m in members}
    result.steps = [_grow(nodes[n]) for n in order if states[n].node in missing]
    return result


# -- acting ------------------------------------------------------------------------------


def _condition(site: Site, condition: str) -> tuple[bool, object]:
    kind, _, host = condition.partition(":")
    if kind == "stopped":
        c = site.host(host)
        assert isinstance(c, Controller) and c.rabbitmq and c.rabbitmq.pidfile
        out = for_url(c.rabbitmq.target, site).run(
            ALIVE + quote("alive \"$(cat %s 2>/dev/null)\"", c.rabbitmq.pidfile), timeout=15)
        return not out.ok, "process still alive" if out.ok else "stopped"
    view = probes.rabbitmq(site, queues=kind == "healthy")
    if kind == "running":
        # it answers, and every answering node counts it as running
        return (view.states.get(host) is not None and view.nodes[host] in view.running(),
                view.describe())
    if kind == "healthy":
        return view.healthy(), view.describe()
    raise AssertionError(condition)


def execute(site: Site, plan_: Plan, *, journal: Any = None,
            confirm: Callable[[Step], None] | None = None) -> None:
    run_plan(site, plan_, _condition, PROCEDURE, journal=journal, confirm=confirm)


def recover(site: Site, *, force_node: str | None = None, journal: Any = None) -> RabbitPlan:
    if PROCEDURE.rehearse("recover"):
        return PROCEDURE.rehearsed(RabbitPlan)
    the_plan = plan(site, observe(site), force_node=force_node)
    execute(site, the_plan, journal=journal)
    return the_plan
