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
from functools import partial

from chaos import probes
from chaos.errors import ConfigError, HarnessError
from chaos.inventory import Controller, Site
from chaos.journal import Journal
from chaos.steps import (
    ALIVE,
    OWNS,
    PROC_INFO,
    Await,
    Step,
    port_released,
    restart_log,
    start_unless_running,
)
from chaos.targets import for_url
from chaos.targets.base import quote
from recovery.plan import (
    SILENT_GRACE,
    Plan,
    Procedure,
    Silent,
    await_or_kill,
    process_state,
    rounds,
)
from recovery.plan import execute as run_plan

# a live beam younger than this that is running or sleeping is taken to be booting
STARTING_GRACE = 120

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
    has_data: bool | None  # its Mnesia schema is there
    running_at_shutdown: list[str] | None  # from nodes_running_at_shutdown
    # the cluster it belongs to, from its own cluster_nodes.config
    members: list[str] | None = None
    # its quorum queues' Raft data is there (None: unknown)
    quorum_data: bool | None = None
    # its metadata store is Khepri (RabbitMQ 4.x, feature flag khepri_db)
    khepri: bool | None = None
    # a live process: its pid, /proc state letter and age in seconds
    pid: int | None = None
    pstate: str = ""
    age: int | None = None

    @property
    def silent(self) -> bool:
        """Alive but not answering, and not merely booting (a cold start takes 11-16 s
        here): stopped (T), stuck (D), or hung past STARTING_GRACE."""
        if self.answers or not self.process_alive:
            return False
        booting = self.pstate in ("R", "S") and self.age is not None and self.age < STARTING_GRACE
        return not booting

    def process_words(self) -> str:
        age = f", {self.age}s old" if self.age is not None else ""
        return f"{process_state(self.pstate)}{age}"

    def lost_data(self) -> str | None:
        """Why this node cannot be trusted with its own data, or None."""
        if self.has_data is False:
            return "its data directory is wiped"
        if self.has_data and self.quorum_data is False:
            return "its quorum queue data (quorum/) is gone while its Mnesia is intact"
        return None


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
    pid: int | None = None
    pstate, age = "", None
    at_shutdown = None
    try:
        target = for_url(r.target, site)
        script = ""
        if r.pidfile:
            # the process that wrote the pidfile, not a stranger under a PID come round
            script += OWNS + PROC_INFO + quote(
                "p=$(cat %s 2>/dev/null); owns \"$p\" %s && echo ALIVE \"$p\" "
                "$(procinfo \"$p\"); ", r.pidfile, r.pidfile)
        if mnesia:
            script += _data_script(mnesia, r.node)
        if script:
            out = target.run(script, timeout=15).stdout
            alive = "ALIVE" in out if r.pidfile else None
            found = re.search(r"^ALIVE (\d+) (\S+) (-?\d+)", out, re.M)
            if found:
                pid, pstate, age = int(found[1]), found[2], int(found[3])
            if mnesia:
                has_data, at_shutdown, members, quorum, khepri = parse_data(out)
    except HarnessError:
        pass  # unknown stays None: the plan says so
    return NodeState(c.name, r.node, answers, alive, has_data, at_shutdown, members, quorum,
                     khepri, pid, pstate, age)


def _data_script(mnesia: str, node: str) -> str:
    """What the node's data directory says, read only: its Mnesia schema, the nodes
    running when it stopped, the cluster it belongs to, its quorum queue data, and whether
    its metadata store is Khepri."""
    return quote(
        "[ -f %s ] && echo DATA; "
        "printf 'AT-SHUTDOWN '; tr -d '\\n' < %s 2>/dev/null; echo; "
        "printf 'MEMBERS '; tr -d '\\n' < %s 2>/dev/null; echo; "
        "[ -d %s ] && [ -n \"$(ls -A %s 2>/dev/null)\" ] && echo QUORUM-DATA; "
        "grep -qs khepri_db %s && echo KHEPRI; true",
        f"{mnesia}/schema.DAT", f"{mnesia}/nodes_running_at_shutdown",
        f"{mnesia}/cluster_nodes.config", f"{mnesia}/quorum/{node}", f"{mnesia}/quorum/{node}",
        f"{mnesia}-feature_flags")


def parse_data(out: str) -> tuple[bool, list[str] | None, list[str] | None, bool, bool]:
    """(has_data, running_at_shutdown, members, quorum_data, khepri) from ``_data_script``."""
    lines = {line.split(" ", 1)[0]: line.partition(" ")[2] for line in out.splitlines()}

    def names(key: str) -> list[str] | None:
        # nodes_running_at_shutdown: ['a','b'].   cluster_nodes.config: {['a','b'],[...]}.
        text = lines.get(key, "")
        listed = re.search(r"\[(.*?)\]", text, re.S)
        return re.findall(r"'([^']+)'", listed.group(1)) if listed else None

    has_data = "DATA" in lines
    return (has_data, names("AT-SHUTDOWN"), names("MEMBERS"),
            "QUORUM-DATA" in lines, "KHEPRI" in lines)


def observe(site: Site, *, read_only: bool = False
            ) -> tuple[probes.RabbitView, dict[str, NodeState]]:
    """Every node's answer and its data directory. It only ever reads, so ``read_only``
    (a dry run's request) changes nothing."""
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


def _released(c: Controller) -> str:
    """Shell: wait, bounded, until the old instance let go of what a new one needs: its
    AMQP port and its name in epmd (a beam just stopped can still be registered; the new
    one then dies at once with "register/listen error: eaddrinuse", measured after a
    thawed node was restarted)."""
    r = c.rabbitmq
    assert r is not None
    # the CLI prefix's environment (ERL_EPMD_PORT and friends), without its path part
    env = r.cli.rsplit(";", 1)[0] + "; " if ";" in r.cli else ""
    short = r.node.split("@", 1)[0]
    epmd = (f"i=0; while [ $i -lt 60 ] && ({env}epmd -names 2>/dev/null) "
            f"| grep -q {quote('%s', '^name ' + short + ' ')}; do sleep 0.5; i=$((i+1)); done; ")
    return port_released(c.address, r.amqp_port) + epmd


def _start(c: Controller, effect: str) -> Step:
    """Start the node unless it runs; a start that still dies on the old instance's name
    (eaddrinuse) within its first seconds is retried after the release, bounded: 3 tries."""
    r = c.rabbitmq
    assert r is not None and r.start and r.pidfile
    log = restart_log(r.pidfile)
    tried = quote("awk '/^chaos: start /{b=\"\"} {b=b $0 \"\\n\"} END{printf \"%%s\", b}' %s "
                  "2>/dev/null | grep -q eaddrinuse", log)
    once = (_released(c) + quote("echo \"chaos: start $(date +%%s)\" >> %s; ", log)
            + start_unless_running(r.pidfile, r.start, log))
    pid = quote("\"$(cat %s 2>/dev/null)\"", r.pidfile)
    command = (ALIVE + f"t=0; while [ $t -lt 3 ]; do {once}; sleep 5; "
               f"if {tried} && ! alive {pid}; then t=$((t+1)); else break; fi; done")
    return Step(r.target, command, effect, wait=Await("running", c.name), wait_timeout=120,
                timeout=120)


def _stop(c: Controller) -> Step:
    r = c.rabbitmq
    assert r is not None and r.pidfile
    return Step(r.target, quote("kill -s TERM \"$(cat %s)\" 2>/dev/null || true", r.pidfile),
                f"{c.name}'s node stops", wait=Await("stopped", c.name), wait_timeout=60)


def _grow(c: Controller) -> Step:
    r = c.rabbitmq
    assert r is not None
    return Step(r.target, r.cli + quote("rabbitmq-queues -n %s grow %s all --quiet",
                                        r.node, r.node),
                f"every quorum queue has a member on {c.name} again", timeout=120)


class Refused(Exception):
    """A planner's refusal: why, and what the operator does next."""


@dataclass(frozen=True)
class Context:
    nodes: dict[str, Controller]
    view: probes.RabbitView
    states: dict[str, NodeState]
    force_node: str | None

    @property
    def order(self) -> list[str]:
        return list(self.nodes)

    def strangers(self) -> list[str]:
        """Nodes with data that belong to another cluster than the rest: reset and booted
        standalone, their cluster_nodes.config lists only themselves while the others list
        them among more (the RabbitMQ twin of mariadb-operator #1108: such a node lists
        only itself at shutdown too, and looks like the last node to stop)."""
        clustered = {frozenset(s.members) for s in self.states.values()
                     if s.members and len(s.members) > 1}
        return [n for n in self.order if (m := self.states[n].members) is not None
                and len(m) == 1 and any(self.states[n].node in c for c in clustered)]

    def lost(self) -> dict[str, str]:
        """Every node whose own data cannot be trusted, and why."""
        lost = {n: why for n in self.order if (why := self.states[n].lost_data())}
        for n in self.strangers():
            lost[n] = ("it was reset and booted on its own: its data belongs to a cluster of "
                       "one, not to this one")
        return lost


def _forget(survivor: Controller, gone: NodeState, name: str) -> Step:
    s = survivor.rabbitmq
    assert s is not None
    return Step(s.target, s.cli + quote("rabbitmqctl -n %s forget_cluster_node %s --quiet",
                                        s.node, gone.node),
                f"the cluster forgets the old {name} so it can join as a new member",
                must_succeed=False, timeout=60)


def _reset(c: Controller) -> Step:
    """Remove what is left of a node's data, so it boots empty and joins as new."""
    mnesia = _mnesia(c)
    assert mnesia is not None and c.rabbitmq is not None
    return Step(c.rabbitmq.target, quote("rm -rf %s %s", mnesia, f"{mnesia}-feature_flags"),
                f"{c.name}'s remaining data is cleared so it joins as a new member")


def _check_quorum_majority(ctx: Context, lost: dict[str, str]) -> None:
    """Refuse up front where a quorum queue lost its majority for good: no procedure
    brings the lost members' Raft log back, and growing it fails."""
    gone = {ctx.states[n].node for n in lost}
    doomed = {}
    for name, q in ctx.view.quorum_queues().items():
        members = set(q.members)
        remaining = members - gone
        if members and len(remaining) <= len(members) // 2:
            doomed[name] = (sorted(members & gone), sorted(remaining))
    if doomed:
        name, (lost_members, kept) = sorted(doomed.items())[0]
        raise Refused(
            f"quorum queue(s) {', '.join(sorted(doomed))} lost their majority for good: "
            f"{name} had members on {', '.join(lost_members)}, whose data is gone, and keeps "
            f"only {', '.join(kept) or 'none'}. Raft cannot elect a leader and growing it "
            "fails. Restore the lost members' data from a backup; or accept losing what only "
            "they held: delete and re-declare the queue(s), then run this again")


def _plan_all_stopped(ctx: Context, result: RabbitPlan) -> None:
    if any(s.khepri for s in ctx.states.values()):
        raise Refused(
            "the metadata store is Khepri (RabbitMQ 4.x): there is no 'last node to stop' "
            "and force_boot does not apply; start every node together and the cluster forms "
            "once a majority is up. This procedure covers Mnesia (3.x) only")
    lost = ctx.lost()
    if len(lost) > len(ctx.order) // 2 and ctx.force_node is None:
        # queues cannot be read while every node is down; with most nodes' data gone, a
        # quorum queue with members on them lost its majority for good
        raise Refused(
            f"a majority of the nodes lost their data ({', '.join(lost)}): every quorum "
            "queue with most of its members on them lost its majority for good, and "
            "forgetting them or growing it back fails. Restore their data from a backup; "
            "or accept losing what only they held: name the node to boot with --node")
    candidates = [n for n in ctx.order if ctx.states[n].has_data and n not in lost]
    at_shutdown = {n: ctx.states[n].running_at_shutdown for n in candidates}
    lasts = [n for n in candidates if at_shutdown[n] == [ctx.states[n].node]]

    def outlived(n: str) -> list[str]:
        """Candidates still running when ``n`` stopped, which ``n`` did not see running
        when they stopped: they stopped after it."""
        mine = at_shutdown[n] or []
        return [c for c in candidates if c != n and ctx.states[c].node in mine
                and ctx.states[n].node not in (at_shutdown[c] or [ctx.states[n].node])]

    # the node that stopped last among those with data: every other stopped before it
    known = [n for n in candidates if at_shutdown[n] is not None]
    latest = [n for n in known if not outlived(n)]
    if ctx.force_node is not None:
        first = ctx.force_node
        if first in lost:
            raise Refused(f"--node {first}: {lost[first]}; it cannot boot the cluster")
        if not ctx.states[first].has_data:
            raise Refused(f"--node {first}: its data is unknown ({ctx.states[first]})")
        later = outlived(first)
        if later:
            raise Refused(
                f"--node {first}: {first} stopped before {', '.join(later)} (its "
                f"nodes_running_at_shutdown lists them still running); force-booting it "
                "would lose what the cluster changed after (queues and users declared). The "
                f"node to boot first is {(lasts or latest or later)[0]} "
                f"(--node {(lasts or latest or later)[0]})")
        result.why = "named by the operator"
    elif lasts:
        first = lasts[0]
        result.why = "the last node to stop (its nodes_running_at_shutdown lists only itself)"
    elif latest:
        first = latest[0]
        result.why = ("the last node with its data to stop; nodes it saw running have lost "
                      "their data or are unknown, so it is marked to force-boot")
    elif candidates:
        first = candidates[0]
        result.why = ("the last node to stop is unknown; the first node with data is "
                      "marked to force-boot")
    else:
        raise Refused("no node has data of this cluster: nothing to recover from"
                      + (f" ({'; '.join(f'{n}: {w}' for n, w in lost.items())})" if lost else ""))
    result.bootstrap = first
    if first not in lasts:
        mnesia = _mnesia(ctx.nodes[first])
        r = ctx.nodes[first].rabbitmq
        assert r is not None
        if mnesia is None:
            raise Refused(f"{first}: no data_dir in the inventory to mark force_load")
        # exactly what `rabbitmqctl force_boot` does, without needing a CLI node
        result.steps.append(Step(r.target, quote("touch %s", f"{mnesia}/force_load"),
                                 f"{first} will boot without waiting for its peers"))
    result.steps.append(_start(ctx.nodes[first], f"{first} boots first"))
    result.notes.append("quorum queues cannot be read while every node is down: a queue "
                        "whose majority lost its data shows only when the nodes are up")
    # every member that kept its data is back before a lost one rejoins under its old
    # name: a member still down when that happens finds a stranger where its peer was
    # and does not boot (measured: ctl2 waited 120 s for a ctl1 that had rejoined as new)
    result.steps += [_start(ctx.nodes[n], f"{n} starts and rejoins") for n in ctx.order
                     if n != first and n not in lost]
    for n in lost:
        result.notes.append(f"{n}: {lost[n]}; it is forgotten and joins as a new member")
        result.steps += [_forget(ctx.nodes[first], ctx.states[n], n), _reset(ctx.nodes[n]),
                         _start(ctx.nodes[n], f"{n} starts and joins as a new member")]
    result.steps += [_grow(ctx.nodes[n]) for n in ctx.order]


def _plan_partitioned(ctx: Context, result: RabbitPlan) -> None:
    answering = [n for n in ctx.order if ctx.states[n].answers]
    down = [n for n in ctx.order if not ctx.states[n].answers]
    groups: dict[frozenset[str], list[str]] = {}
    for n in answering:
        state = ctx.view.states[n]
        assert state is not None
        groups.setdefault(frozenset(state.running_nodes), []).append(n)
    majority = max(groups.items(), key=lambda kv: (len(kv[0]), -ctx.order.index(kv[1][0])))[1]
    minority = [n for n in answering if n not in majority]
    result.notes.append(f"majority side: {', '.join(majority)}; restarting "
                        f"{', '.join(minority) or 'nobody'}")
    for n in minority:
        result.steps += [_stop(ctx.nodes[n]), _start(ctx.nodes[n], f"{n} rejoins the majority")]
    result.steps += [_start(ctx.nodes[n], f"{n} starts and rejoins") for n in down]
    result.steps += [_grow(ctx.nodes[n]) for n in minority + down]


def _plan_members_down(ctx: Context, result: RabbitPlan) -> None:
    answering = [n for n in ctx.order if ctx.states[n].answers]
    lost = ctx.lost()
    _check_quorum_majority(ctx, lost)
    down = [n for n in ctx.order if not ctx.states[n].answers]
    # a stranger that answers (reset and booted alone) is stopped and joins as new
    strangers = [n for n in lost if ctx.states[n].answers]
    crashed = [n for n in down if n not in lost]
    result.situation = ", ".join(filter(None, [
        f"crashed with data: {', '.join(crashed)}" if crashed else "",
        f"lost its data: {', '.join(n for n in down if n in lost)}"
        if any(n in lost for n in down) else "",
        f"booted on its own: {', '.join(strangers)}" if strangers else ""]))
    trusted = [n for n in answering if n not in lost]
    if not trusted:
        reasons = "; ".join(f"{n}: {lost[n]}" for n in answering)
        raise Refused(f"every node that answers lost its data ({reasons}); start a node "
                      "that kept its data first")
    survivor = ctx.nodes[trusted[0]]
    for n in lost:
        if lost[n] != "its data directory is wiped":
            result.notes.append(f"{n}: {lost[n]}; it is forgotten and joins as a new member")
        if n in strangers:
            result.steps.append(_stop(ctx.nodes[n]))
        result.steps.append(_forget(survivor, ctx.states[n], n))
        if ctx.states[n].has_data:
            result.steps.append(_reset(ctx.nodes[n]))
    for n in down + strangers:
        how = "joins as a new member" if n in lost else "restarts with its data and rejoins"
        result.steps.append(_start(ctx.nodes[n], f"{n} {how}"))
    result.steps += [_grow(ctx.nodes[n]) for n in down + strangers]


def answers(c: Controller) -> str:
    """Shell: true when the node's management listener answers HTTP within 2 s (any
    status, a 401 included). A frozen beam's kernel still accepts the connection."""
    r = c.rabbitmq
    assert r is not None
    if r.management_port is None:
        probe = (f"exec 3<>/dev/tcp/{c.address}/{r.amqp_port} && printf 'AMQP\\0\\0\\11\\1' >&3 "
                 '&& [ -n "$(head -c 1 <&3 | od -An -tx1)" ]')
        return quote("timeout 2 bash -c %s 2>/dev/null", probe)
    return quote("curl -s -o /dev/null -m 2 %s", f"http://{c.address}:{r.management_port}/")


def _plan_silent(silent: list[str], ctx: Context, result: RabbitPlan) -> None:
    """Members alive but silent are settled first: each is given SILENT_GRACE to answer,
    then its beam is killed, so the next round restarts it as a crashed node. A stop
    (SIGTERM) would do nothing to a stopped beam, and a start beside it dies on its name."""
    for n in silent:
        state = ctx.states[n]
        r = ctx.nodes[n].rabbitmq
        assert r is not None
        if state.pid is None:
            raise Refused(f"{n}: alive but not answering, and its pid is unknown: stop it "
                          "by hand")
        result.silent.append(Silent(n, state.pid, state.process_words(),
                                    ctx.view.errors.get(n, "")))
        result.steps.append(Step(
            r.target, await_or_kill(state.pid, answers(ctx.nodes[n]), f"{n}'s beam"),
            f"{n} answers again, or its beam (pid {state.pid}) is killed so it restarts as a "
            "crashed node", timeout=SILENT_GRACE + 45))


def _plan_queues(ctx: Context, result: RabbitPlan) -> None:
    missing = {m for members in ctx.view.queues_missing_members().values() for m in members}
    result.steps = [_grow(ctx.nodes[n]) for n in ctx.order if ctx.states[n].node in missing]


def classify(ctx: Context) -> tuple[str, Callable[[Context, RabbitPlan], None]]:
    if not any(ctx.states[n].answers for n in ctx.order):
        return "whole cluster stopped", _plan_all_stopped
    if ctx.view.partitioned():
        return "partitioned after the network healed", _plan_partitioned
    if any(not ctx.states[n].answers for n in ctx.order) or any(
            ctx.states[n].answers for n in ctx.lost()):
        return "members down", _plan_members_down
    return "quorum queues missing members", _plan_queues


def plan(site: Site, observed: tuple[probes.RabbitView, dict[str, NodeState]], *,
         force_node: str | None = None) -> RabbitPlan:
    if PROCEDURE.rehearse("plan"):
        return PROCEDURE.rehearsed(RabbitPlan)
    view, states = observed
    nodes = {c.name: c for c in _nodes(site)}
    if force_node is not None and force_node not in nodes:
        raise ConfigError(f"--node: {force_node!r} is not a RabbitMQ node "
                          f"(nodes: {', '.join(nodes)})")
    result = RabbitPlan("rabbitmq", "healthy", states=states)
    for name, c in nodes.items():
        if not (c.rabbitmq and c.rabbitmq.start and c.rabbitmq.pidfile):
            result.situation = "unknown"
            result.refused = f"the inventory gives no start command or pidfile for {name}"
            return result
    ctx = Context(nodes, view, states, force_node)
    if view.healthy() and not ctx.lost():
        return result
    silent = [n for n in ctx.order if states[n].silent]
    planner: Callable[[Context, RabbitPlan], None]
    if silent:
        result.situation, planner = "members alive but silent", partial(_plan_silent, silent)
    else:
        result.situation, planner = classify(ctx)
    try:
        planner(ctx, result)
    except Refused as refusal:
        result.refused = str(refusal)
        result.steps = []
    return result


# -- acting ------------------------------------------------------------------------------


def _condition(site: Site, condition: Await) -> tuple[bool, object]:
    kind, host = condition.kind, condition.node
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


def execute(site: Site, plan_: Plan, *, journal: Journal | None = None,
            confirm: Callable[[Step], None] | None = None) -> None:
    run_plan(site, plan_, _condition, PROCEDURE, journal=journal, confirm=confirm)


def recover(site: Site, *, force_node: str | None = None,
            journal: Journal | None = None, take_over: bool = False) -> RabbitPlan:
    """Observe, plan and execute; where the platform owns the cluster, watch it recover
    instead (``take_over``: act anyway)."""
    if PROCEDURE.rehearse("recover"):
        return PROCEDURE.rehearsed(RabbitPlan)
    if site.cluster("rabbitmq").recovered_by == "platform" and not take_over:
        from recovery.platform import recovered_by_platform

        return recovered_by_platform(site, "rabbitmq", RabbitPlan, journal=journal)
    return rounds(lambda: plan(site, observe(site), force_node=force_node),
                  lambda p: execute(site, p, journal=journal))
