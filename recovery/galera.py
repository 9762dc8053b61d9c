"""Galera recovery: bring a cluster back to N Synced nodes without losing what it
acknowledged, whatever the operator types.

1. Observe every node: SQL where it answers. Where it does not: is its process alive
   (pidfile, or any process holding the data directory's ``ibdata1`` open), is the data
   directory empty, what grastate.dat says, and ``mariadbd --wsrep-recover`` where the
   seqno is -1 or grastate.dat is missing beside data. Never beside a live process, and
   never in a dry run: a dry run reads files only (``--wsrep-recover`` runs InnoDB crash
   recovery, which writes), and says which positions the real run will learn.
2. Classify (``classify``): healthy; split brain (two Primary components); degraded (one
   Primary component, members missing); non-Primary survivors; full outage.
3. One small planner per situation. Each refuses rather than lose an acknowledged commit:
   - a member alive but not answering may be in a component of its own and holds its data
     directory: nothing is bootstrapped beside it;
   - an unreachable member or an unknown position could be ahead: refused unless the
     operator names the bootstrap node (``--node``), which accepts that;
   - the bootstrap node is the highest seqno of the one history (cluster UUID), ties by
     inventory order. A node the operator names is used only if no node of its history is
     known to be ahead of it; otherwise the refusal names the node that must bootstrap.
     It is never silently replaced by another;
   - split history (differing cluster UUIDs) is refused unless the operator names the
     node whose history wins;
   - a joiner whose history differs from the cluster's, or whose position is unknown,
     would have its data replaced by a full state transfer: refused unless the operator
     lists it in ``discard``;
   - safe_to_bootstrap=1 is never trusted on its own (mariadb-operator #1108), and an
     empty data directory never bootstraps (#1701).
4. Non-Primary survivors: ``pc.bootstrap=YES`` on the most advanced survivor, in place, when
   it is the most advanced node of all. When a stopped node is ahead of every survivor, the
   survivors are stopped (cleanly: they are outside any Primary component, so they serve
   nothing) and the most advanced node bootstraps, as after a full outage.
5. Joiners start with their recovered ``--wsrep-start-position``, so the donor serves IST
   where it can, one at a time, each awaited to Synced: restarting a member while a joiner
   is mid-IST aborts the joiner (kolla-ansible's joiner race). A start never runs while
   the node's process is alive (a second mariadbd aborts on the gcomm port).
6. gvwstate.dat is removed from every node before a bootstrap, so the Primary component
   is formed by the chosen node alone rather than re-formed by pc.recovery from a stale
   view.
7. The site's durability (``innodb_flush_log_at_trx_commit``, ``sync_binlog``) is shown
   as found, so a loss on a site that flushes lazily can be told from a loss caused by
   recovery.

``plan`` is pure: observation in, Steps out. ``observe`` and ``execute`` act. In a
dry run all three show the procedure in words instead (``PROCEDURE``).
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

from chaos import probes
from chaos.errors import ConfigError, HarnessError
from chaos.inventory import Controller, Site
from chaos.journal import Event, Journal
from chaos.steps import (
    ALIVE,
    OWNS,
    PROC_INFO,
    Await,
    Step,
    detached,
    port_released,
    restart_log,
    start_unless_running,
)
from chaos.targets import for_url
from chaos.targets.base import Action, quote
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

PROCEDURE = Procedure(
    "galera",
    observes="every node: SQL where it answers; where it does not, whether its process is "
             "alive, whether its data directory is empty, grastate.dat (uuid, seqno, "
             "safe_to_bootstrap), and mariadbd --wsrep-recover where the seqno is -1 (never "
             "beside a live process)",
    decides="split brain: refused; a Primary component with members missing: start each "
            "missing node with its position, one at a time, to join by IST; survivors "
            "outside any Primary component: pc.bootstrap=YES on the most advanced survivor "
            "in place, or, when a stopped node is ahead of them, stop the survivors and "
            "bootstrap that node; full outage: remove gvwstate.dat everywhere, bootstrap from "
            "the most advanced node (highest seqno of the one cluster UUID, ties by inventory "
            "order; refused on split history, an unknown position or a member alive but not "
            "answering), then the joiners one at a time by IST, each awaited to Synced",
    done="every node is Primary and Synced")

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
RECOVERED = re.compile(r"Recovered position:?\s+([0-9a-f-]{36}):(-?\d+)")
DURABILITY = ("innodb_flush_log_at_trx_commit", "sync_binlog")
# a live server younger than this that is running or sleeping is taken to be starting
# (awaited); older, or stopped (T) or stuck (D), it is silent (given SILENT_GRACE, then
# killed). A joiner's rsync SST of the lab's data takes 6-12 s; real ones take longer, and
# the await that follows is bounded by the same figure.
STARTING_GRACE = 120


class Situation(StrEnum):
    HEALTHY = "healthy"
    SPLIT_BRAIN = "split-brain"
    DEGRADED = "degraded"
    NON_PRIMARY = "non-primary"
    FULL_OUTAGE = "full-outage"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Position:
    node: str
    running: bool  # answers SQL
    uuid: str | None
    seqno: int | None  # None: unknown
    safe_to_bootstrap: bool | None
    source: str  # "running", "grastate.dat", "wsrep-recover", or why it is unknown
    # for a node that does not answer: is its process alive (True), known dead (False),
    # or could that not be learned (None: the host did not answer)
    alive: bool | None = False
    empty_datadir: bool = False  # the data directory holds nothing at all
    deferred: bool = False  # dry run: the real run learns the seqno by --wsrep-recover
    # a live process that does not answer: its pid, /proc state letter and age (seconds)
    pid: int | None = None
    pstate: str = ""
    age: int | None = None

    @property
    def starting(self) -> bool:
        """Alive, not answering, but young and not stopped or stuck: a server still
        starting (a joiner's state transfer comes before its SQL port)."""
        return (bool(self.alive) and not self.running and self.pstate in ("R", "S")
                and self.age is not None and self.age < STARTING_GRACE)

    @property
    def silent(self) -> bool:
        """Alive, not answering, and not merely starting: stopped, stuck, or hung."""
        return bool(self.alive) and not self.running and not self.starting

    @property
    def empty(self) -> bool:
        """No data worth keeping: an empty data directory, a zero UUID, or nothing ever
        committed."""
        return (self.empty_datadir or (self.seqno is not None and self.uuid in (None, ZERO_UUID))
                or self.seqno == -1)

    @property
    def known(self) -> bool:
        return self.seqno is not None and not self.deferred

    @property
    def has_history(self) -> bool:
        """Known to hold commits of some history."""
        return self.known and not self.empty

    def liveness(self) -> str:
        if self.running:
            return "answers"
        if self.alive and self.pstate:
            return f"{self.pstate} {self.age}s" if self.age is not None else self.pstate
        return {True: "ALIVE", False: "dead", None: "?"}[self.alive]


@dataclass(frozen=True)
class Durability:
    values: dict[str, str]  # setting -> value, as found
    source: str

    def lazy(self) -> list[str]:
        """Settings under which an acknowledged commit may not be on disk when a node dies."""
        lazy = []
        flush = self.values.get("innodb_flush_log_at_trx_commit")
        if flush is not None and flush != "1":
            lazy.append(f"innodb_flush_log_at_trx_commit={flush}")
        return lazy


@dataclass(frozen=True)
class Observation:
    view: probes.GaleraView
    positions: dict[str, Position]
    durability: Durability | None = None


@dataclass
class GaleraPlan(Plan):
    positions: dict[str, Position] = field(default_factory=dict)
    durability: Durability | None = None

    def details(self) -> list[str]:
        lines = []
        if self.durability is not None:
            found = " ".join(f"{k}={v}" for k, v in self.durability.values.items()) or "unknown"
            lines.append(f"durability: {found} ({self.durability.source})")
        lines += ["positions:",
                  f"  {'node':<8} {'process':<8} {'uuid':<37} {'seqno':>7}  safe  source"]
        for p in self.positions.values():
            seqno = "later" if p.deferred else "?" if p.seqno is None else p.seqno
            lines.append(f"  {p.node:<8} {p.liveness():<8} {p.uuid or '?':<37} {seqno:>7}  "
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


# -- observing ---------------------------------------------------------------------------


def _position_script(node: Controller, *, read_only: bool) -> str:
    """One round trip per node: is its process alive, is its data directory empty, what
    does grastate.dat say, and only where that gives no position (and never in a dry run
    or beside a live process), what InnoDB recovers, with the node's own binary and
    config."""
    g = node.galera
    assert g is not None
    datadir = g.datadir.rstrip("/")
    grastate = f"{datadir}/grastate.dat"
    log = f"/tmp/chaos-wsrep-recover-{node.name}.log"
    script = OWNS + PROC_INFO
    if g.pidfile:
        # the process that wrote the pidfile, not any process under that PID now: PIDs
        # come round (pid_max is 32768 on the lab's machines), and a stranger taken for
        # a silent server would be killed as one
        script += quote("p=$(cat %s 2>/dev/null); if owns \"$p\" %s; then "
                        "echo ALIVE \"$p\" $(procinfo \"$p\"); exit 0; fi; ", g.pidfile,
                        g.pidfile)
    # without a pidfile, or with a stale one: any live process holding the system
    # tablespace open is the node's server (mariadbd keeps ibdata1 open while it runs)
    script += quote("d=$(realpath -m %s); for f in $(find /proc/[0-9]*/fd -maxdepth 1 "
                    "-lname \"$d/ibdata1\" 2>/dev/null | head -n 5); do p=${f#/proc/}; "
                    "p=${p%%%%/*}; if alive \"$p\"; then echo ALIVE \"$p\" $(procinfo \"$p\"); "
                    "exit 0; fi; done; ",
                    datadir)
    # a server just started (by `chaos heal`, a kubelet, an operator) has neither
    # written its pidfile nor opened ibdata1 yet: a mariadbd naming the node's config or
    # data directory on its command line is alive too (never --wsrep-recover beside it)
    for mark in filter(None, (g.config, datadir)):
        script += quote("for p in $(pgrep -f -- %s); do case \"$(cat /proc/$p/comm "
                        "2>/dev/null)\" in mariadbd|mysqld|mariadb) if alive \"$p\"; then "
                        "echo ALIVE \"$p\" $(procinfo \"$p\"); exit 0; fi;; esac; done; ", mark)
    script += quote("if [ -z \"$(ls -A %s 2>/dev/null)\" ]; then echo EMPTY-DATADIR; "
                    "exit 0; fi; ", datadir)
    script += quote("if [ -f %s ]; then cat %s; else echo NO-GRASTATE; fi; ", grastate, grastate)
    need_recover = quote("{ [ ! -f %s ] || grep -q '^seqno: *-1' %s; }", grastate, grastate)
    if read_only:
        script += f"if {need_recover}; then echo DEFERRED; fi"
    elif g.start:
        script += (f"if {need_recover}; then "
                   + quote("rm -f %s; touch %s; chown mysql %s 2>/dev/null; ", log, log, log)
                   + g.start + quote(" --wsrep-recover --log-error=%s >/dev/null 2>&1; "
                                     "echo WSREP-RECOVER; cat %s; fi", log, log))
    return script


def parse_position(name: str, out: str, *, can_recover: bool) -> Position:
    """Read what ``_position_script`` printed (pure, so every branch is unit-tested)."""
    if out.startswith("ALIVE"):
        words = out.split()
        pid = int(words[1]) if len(words) > 1 and words[1].isdigit() else None
        pstate = words[2] if len(words) > 2 else ""
        age = int(words[3]) if len(words) > 3 and words[3].lstrip("-").isdigit() else None
        how = process_state(pstate) + (f", {age}s old" if age is not None else "")
        return Position(name, False, None, None, None,
                        f"process {pid} alive ({how}) but not answering SQL", alive=True,
                        pid=pid, pstate=pstate, age=age)
    if out.startswith("EMPTY-DATADIR"):
        return Position(name, False, None, None, None, "empty data directory",
                        empty_datadir=True)
    text, _, recover_log = out.partition("WSREP-RECOVER")
    missing = text.startswith("NO-GRASTATE")
    uuid, seqno, safe = (None, None, None) if missing else _grastate(text)
    where = "no grastate.dat beside data" if missing else "seqno -1 in grastate.dat"
    if seqno is not None and seqno >= 0:
        return Position(name, False, uuid, seqno, safe, "grastate.dat")
    if "DEFERRED" in text:
        return Position(name, False, uuid, None, safe,
                        f"{where}: the real run learns it by --wsrep-recover", deferred=True)
    if not can_recover:
        return Position(name, False, uuid, None, safe,
                        f"unknown: {where} and no start command to run --wsrep-recover")
    recovered = parse_recovered(recover_log)
    if recovered is None:
        return Position(name, False, uuid, None, safe,
                        f"unknown: {where} and --wsrep-recover printed no position")
    return Position(name, False, recovered[0], recovered[1], safe, "wsrep-recover")


def _position(site: Site, node: Controller, state: probes.GaleraState | None, *,
              read_only: bool) -> Position:
    assert node.galera is not None
    if state is not None:
        return Position(node.name, True, state.cluster_uuid, state.last_committed, None,
                        "running", alive=True)
    try:
        out = for_url(node.galera.target, site).run(
            _position_script(node, read_only=read_only), timeout=120).stdout
    except HarnessError as exc:
        return Position(node.name, False, None, None, None, f"unknown: {exc}", alive=None)
    return parse_position(node.name, out, can_recover=bool(node.galera.start))


def parse_defaults(text: str) -> dict[str, str]:
    """The durability settings in ``my_print_defaults`` output (``--name=value`` lines,
    dashes or underscores)."""
    found = {}
    for line in text.splitlines():
        name, _, value = line.strip().lstrip("-").partition("=")
        name = name.replace("-", "_")
        if name in DURABILITY:
            found[name] = value.strip()
    return found


def _durability(site: Site, nodes: list[Controller],
                states: dict[str, probes.GaleraState | None]) -> Durability | None:
    """The running value where a node answers, else what the first node's config says.
    Compiled-in defaults (1 and 0) apply where a config names neither."""
    for c in nodes:
        if states.get(c.name) is None:
            continue
        try:
            out = for_url(f"galera://{c.name}", site).run(
                "SELECT @@GLOBAL.innodb_flush_log_at_trx_commit, @@GLOBAL.sync_binlog",
                timeout=5)
        except HarnessError:
            continue
        found = out.stdout.split()
        if out.ok and len(found) == 2:
            return Durability(dict(zip(DURABILITY, found, strict=True)),
                              f"running value on {c.name}")
    for c in nodes:
        assert c.galera is not None
        if not c.galera.config:
            continue
        try:
            out = for_url(c.galera.target, site).run(
                quote("my_print_defaults --defaults-file=%s mysqld server mariadb mariadbd "
                      "galera", c.galera.config), timeout=15)
        except HarnessError:
            continue
        if out.ok:
            values = {"innodb_flush_log_at_trx_commit": "1", "sync_binlog": "0",
                      **parse_defaults(out.stdout)}
            return Durability(values, f"{c.name}'s config {c.galera.config}")
    return None


def observe(site: Site, *, read_only: bool = False) -> Observation:
    """Every node's state and position. ``read_only``: read files only, never run
    ``--wsrep-recover`` (which performs InnoDB crash recovery, a write)."""
    if PROCEDURE.rehearse("observe"):
        return Observation(probes.GaleraView({}, {}), {})
    nodes = _nodes(site)
    view = probes.galera(site)
    with ThreadPoolExecutor(max_workers=len(nodes) + 1) as pool:
        durability = pool.submit(_durability, site, nodes, view.states)
        positions = list(pool.map(
            lambda n: _position(site, n, view.states.get(n.name), read_only=read_only), nodes))
        return Observation(view, {p.node: p for p in positions}, durability.result())


# -- classifying (pure) ------------------------------------------------------------------


def primary_components(view: probes.GaleraView) -> list[list[str]]:
    """The Primary nodes grouped into components, as far as their answers tell. Nodes of
    one component share its history (cluster UUID) and each counts every member: a
    Primary node whose size is smaller than the number of Primary nodes of its history is
    in a component of its own (what a pc.bootstrap on a cut-off node makes)."""
    primaries = view.primary()
    by_uuid: dict[str, list[str]] = {}
    for n in primaries:
        state = view.states[n]
        assert state is not None
        by_uuid.setdefault(state.cluster_uuid, []).append(n)
    components: list[list[str]] = []
    for members in by_uuid.values():
        sizes = {n: view.states[n].size for n in members}  # type: ignore[union-attr]
        if all(size >= len(members) for size in sizes.values()):
            components.append(members)
            continue
        # group by the size each reports: members of one component report the same
        by_size: dict[int, list[str]] = {}
        for n in members:
            by_size.setdefault(sizes[n], []).append(n)
        for size, group in by_size.items():
            # more nodes report a size than one component of it holds: several
            # components of that size (two pods that each bootstrapped alone report 1 and
            # 1). Their count is certain; which of them belong together is not told by
            # these answers, so they are grouped in name order.
            step = max(size, 1)
            components += [group[i:i + step] for i in range(0, len(group), step)]
    return components


def classify(view: probes.GaleraView, size: int) -> Situation:
    if view.healthy(size):
        return Situation.HEALTHY
    components = primary_components(view)
    if len(components) > 1:
        return Situation.SPLIT_BRAIN
    if components:
        return Situation.DEGRADED
    if any(s is not None for s in view.states.values()):
        return Situation.NON_PRIMARY
    return Situation.FULL_OUTAGE


# -- planning (pure) -------------------------------------------------------------------


class Refused(Exception):
    """A planner's refusal: the text tells the operator why and what to do next.
    ``unknown``: the nodes whose unknown position alone caused it (a dry run, which learns
    no position by --wsrep-recover, shows such a plan as pending rather than refused)."""

    def __init__(self, text: str, *, unknown: Collection[str] = ()) -> None:
        super().__init__(text)
        self.unknown = frozenset(unknown)


@dataclass(frozen=True)
class Context:
    site: Site
    nodes: dict[str, Controller]
    obs: Observation
    force_node: str | None
    discard: frozenset[str]

    @property
    def order(self) -> list[str]:
        return list(self.nodes)

    @property
    def positions(self) -> dict[str, Position]:
        return self.obs.positions

    def state(self, name: str) -> probes.GaleraState | None:
        return self.obs.view.states.get(name)


def _start(node: Controller, *extra: str, effect: str, wait: Await) -> Step:
    g = node.galera
    assert g is not None and g.start
    command = g.start + "".join(" " + shlex.quote(e) for e in extra)
    if g.pidfile:
        # never a second server beside a live one: it would abort on the gcomm port
        # (the heal-then-recover race) and could corrupt the data directory; and an old
        # one still shutting down is waited for until its SQL port is released
        command = port_released(node.address, g.port) + start_unless_running(
            g.pidfile, command, restart_log(g.pidfile))
    else:
        command = detached(command, "/dev/null")
    return Step(g.target, command, effect, wait=wait, wait_timeout=120)


def _stop(node: Controller) -> Step:
    """A clean stop (SIGTERM): mariadbd writes its seqno to grastate.dat on the way out."""
    g = node.galera
    assert g is not None and g.pidfile
    return Step(g.target, ALIVE + quote(
        "p=$(cat %s 2>/dev/null); if alive \"$p\"; then kill -s TERM \"$p\"; fi; "
        "i=0; while alive \"$p\" && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; "
        "! alive \"$p\"", g.pidfile),
        f"{node.name}'s server stops cleanly (its position goes to grastate.dat)", timeout=75)


def _joiner_steps(ctx: Context, joiners: list[str], cluster_uuid: str | None) -> list[Step]:
    """Each joiner starts with its own position, so the donor can serve IST; a joiner whose
    data would be replaced by a full state transfer must be empty or listed in
    ``discard``, or the plan is refused."""
    steps = []
    for name in joiners:
        p = ctx.positions[name]
        extra = []
        if p.known and not p.empty and p.uuid == cluster_uuid:
            extra = [f"--wsrep-start-position={p.uuid}:{p.seqno}"]
            how = f"joins by IST from seqno {p.seqno}"
        elif p.empty:
            how = "joins by full state transfer (it holds no data)"
        elif name in ctx.discard:
            how = ("joins by full state transfer; its own data is discarded, as the "
                   "operator asked")
        elif p.known:
            raise Refused(
                f"{name} carries another history (cluster {p.uuid}, seqno {p.seqno}) than "
                f"the cluster's ({cluster_uuid}); joining it would replace its data by a full "
                f"state transfer and throw its commits away. Keep its data directory as a "
                f"backup first; then name it with --discard {name} to let it rejoin")
        else:
            raise Refused(
                f"{name}'s position is unknown ({p.source}); joining it would replace its "
                f"data by a full state transfer, and it may hold commits the cluster lacks. "
                f"Find its position (mariadbd --wsrep-recover), or name it with "
                f"--discard {name} to replace its data", unknown=[name])
        steps.append(_start(ctx.nodes[name], *extra, effect=f"{name} {how}",
                            wait=Await("synced", name)))
    return steps


def _rejoin(ctx: Context, result: GaleraPlan, joiners: list[str],
            uuid: str | None) -> list[Step]:
    """The joiners after a bootstrap. Where the operator named the bootstrap node, they
    accepted what is unknown and chose a history: nodes of other histories and nodes whose
    position could not be learned are replaced by a full state transfer, and a host that
    cannot be reached is left out (nothing can start it), each said in a note."""
    if ctx.force_node is None:
        return _joiner_steps(ctx, joiners, uuid)
    out_of_reach = [n for n in joiners if ctx.positions[n].alive is None]
    if out_of_reach:
        result.notes.append(f"{', '.join(out_of_reach)} cannot be reached and is left out; "
                            "start it once its host is back: it joins by state transfer")
    replaced = {n for n in joiners if ctx.positions[n].uuid != uuid or not ctx.positions[n].known}
    accepted = Context(ctx.site, ctx.nodes, ctx.obs, ctx.force_node, ctx.discard | replaced)
    return _joiner_steps(accepted, [n for n in joiners if n not in out_of_reach], uuid)


def _await(ctx: Context, name: str, effect: str, *, timeout: float = 90.0) -> Step:
    """Only wait for ``name`` to be Synced: the step's own command is a no-op on its host
    (an SQL one would fail on a node that does not answer yet, which is why it is awaited)."""
    g = ctx.nodes[name].galera
    assert g is not None
    return Step(g.target, "true", effect, wait=Await("synced", name), wait_timeout=timeout)


def _no_live_members(ctx: Context, absent: list[str]) -> None:
    """Nothing is bootstrapped beside a member whose server still starts: it may join a
    component of its own, and its data directory is in use. (Silent members, stopped,
    stuck or hung, are settled before any planning: ``_plan_silent``.)"""
    live = [n for n in absent if ctx.positions[n].alive]
    if live:
        p = ctx.positions[live[0]]
        raise Refused(
            f"{', '.join(live)}: {p.source}; a bootstrap beside it could make a second "
            "Primary component, and no start or --wsrep-recover may run beside its data "
            f"directory. Wait for it to answer (it is given {STARTING_GRACE}s to start), or "
            "stop it (kill -9 its mariadbd), then run this again")


def answers(node: Controller) -> str:
    """Shell: true when the node's server greets a client within 2 s (MariaDB speaks
    first). A frozen server's kernel still accepts the connection, so a connect alone
    proves nothing."""
    assert node.galera is not None
    probe = (f"exec 3<>/dev/tcp/{node.address}/{node.galera.port} && "
             '[ -n "$(head -c 4 <&3 | od -An -tx1)" ]')
    return quote("timeout 2 bash -c %s 2>/dev/null", probe)


def _plan_silent(ctx: Context, result: GaleraPlan, silent: list[str]) -> None:
    """Members alive but silent are settled first: each is given SILENT_GRACE to answer,
    then killed, so the next round recovers it as a crashed member (its position, IST).
    No second server is ever started beside one that still holds the data directory."""
    for n in silent:
        p = ctx.positions[n]
        g = ctx.nodes[n].galera
        assert g is not None
        if p.pid is None:
            raise Refused(f"{n}: {p.source}, and its pid is unknown: stop it by hand")
        age = f", {p.age}s old" if p.age is not None else ""
        result.silent.append(Silent(n, p.pid, process_state(p.pstate) + age,
                                    ctx.obs.view.errors.get(n, "")))
        result.steps.append(Step(
            g.target, await_or_kill(p.pid, answers(ctx.nodes[n]), f"{n}'s mariadbd"),
            f"{n} answers again, or its mariadbd (pid {p.pid}) is killed so it can be "
            "recovered as a crashed member", timeout=SILENT_GRACE + 45))


def _choose(ctx: Context, candidates: list[str]) -> tuple[str, str, list[str]]:
    """The bootstrap node among ``candidates`` (every member whose state counts): the
    highest seqno of the one history. Returns (node, why, notes) or raises Refused.

    The operator's ``--node`` accepts the unknown (positions that could not be learned,
    hosts that did not answer) and picks a history; it never overrides what is known: a
    named node behind another of its history is refused, naming the node that must
    bootstrap."""
    positions = ctx.positions
    unknown = [n for n in candidates if not positions[n].known and not positions[n].empty]
    with_history = [n for n in candidates if positions[n].has_history]
    uuids = sorted({u for n in with_history if (u := positions[n].uuid)})
    notes: list[str] = []
    force = ctx.force_node
    if force is not None:
        named = positions[force]
        if named.alive and not named.running:
            raise Refused(f"--node {force}: {named.source}; stop it first")
        if named.alive is None:
            raise Refused(f"--node {force}: its host cannot be reached ({named.source})")
        if named.empty:
            raise Refused(f"--node {force}: it holds no data ({named.source}); bootstrapping "
                          "it would start an empty cluster and lose every commit")
        history = named.uuid
        same = [n for n in with_history if positions[n].uuid == history]
        if named.known:
            top = max(same, key=lambda n: (positions[n].seqno, -ctx.order.index(n)))
            if positions[top].seqno > named.seqno:  # type: ignore[operator]
                raise Refused(
                    f"--node {force}: {force} is at seqno {named.seqno}, behind {top} at "
                    f"seqno {positions[top].seqno} of the same history; bootstrapping it "
                    f"would lose {positions[top].seqno - named.seqno} acknowledged "  # type: ignore[operator]
                    f"transaction(s). The node that must bootstrap is {top}: run "
                    f"`chaos recover galera` (or --node {top})")
        elif same:
            top = max(same, key=lambda n: (positions[n].seqno, -ctx.order.index(n)))
            raise Refused(
                f"--node {force}: its own position is unknown ({named.source}), so it cannot "
                f"be shown to hold what {top} holds (seqno {positions[top].seqno}); the "
                f"node that must bootstrap is {top} (--node {top})", unknown=[force])
        if unknown or len(uuids) > 1:
            notes.append("forced despite: " + "; ".join(
                ([f"unknown position on {', '.join(unknown)}"] if unknown else [])
                + ([f"differing cluster UUIDs {', '.join(uuids)}: the history of {force} "
                    "wins, the others' commits are discarded"] if len(uuids) > 1 else [])))
        return force, "named by the operator", notes
    if len(uuids) > 1:
        groups = "; ".join(f"{u}: {', '.join(n for n in with_history if positions[n].uuid == u)}"
                           for u in uuids)
        raise Refused(f"split history: nodes carry different cluster UUIDs ({groups}); "
                      "choosing one discards the other's commits (name the node whose "
                      "history wins with --node)")
    if unknown:
        where = "; ".join(f"{n}: {positions[n].source}" for n in unknown)
        raise Refused(f"position unknown on {', '.join(unknown)} ({where}); bootstrapping "
                      "without it may lose acknowledged commits (name the node with --node "
                      "to accept that)", unknown=unknown)
    if not with_history:
        raise Refused("no node has data (every position is empty or zero); refusing to "
                      "bootstrap an empty cluster over lost data")
    top_seqno = max(positions[n].seqno for n in with_history)  # type: ignore[type-var]
    ties = [n for n in with_history if positions[n].seqno == top_seqno]
    # among equals a survivor wins (bootstrapped in place, nothing stopped), then the
    # inventory's order
    best = min(ties, key=lambda n: (not positions[n].running, ctx.order.index(n)))
    survivor_won = positions[best].running and any(not positions[t].running for t in ties)
    why = (f"highest seqno {top_seqno} of cluster {uuids[0]}"
           + (f"; tie with {', '.join(t for t in ties if t != best)} broken "
              + ("in favour of a survivor" if survivor_won else "by inventory order")
              if len(ties) > 1 else ""))
    empties = [n for n in candidates if positions[n].empty]
    if empties:
        notes.append(f"{', '.join(empties)} hold no data and will receive a full state "
                     "transfer, whatever their safe_to_bootstrap says")
    return best, why, notes


def bootstrap_steps(ctx: Context, best: str, uuid: str | None) -> list[Step]:
    """Bootstrap ``best`` from its own data: every saved view removed, only ``best``
    marked safe, then started as a new Primary component."""
    steps = []
    for name in ctx.order:
        g = ctx.nodes[name].galera
        assert g is not None
        datadir = g.datadir.rstrip("/")
        safe = "1" if name == best else "0"
        steps.append(Step(
            g.target,
            quote("rm -f %s; if [ -f %s ]; then sed -i 's/^safe_to_bootstrap:.*/"
                  f"safe_to_bootstrap: {safe}/' %s; fi",
                  f"{datadir}/gvwstate.dat", f"{datadir}/grastate.dat", f"{datadir}/grastate.dat"),
            f"{name}: no saved view; safe_to_bootstrap={safe}"))
    chosen = ctx.positions[best]
    extra = ["--wsrep-new-cluster"]
    if chosen.known and chosen.seqno is not None and chosen.seqno >= 0 and uuid:
        extra.append(f"--wsrep-start-position={uuid}:{chosen.seqno}")
    steps.append(_start(ctx.nodes[best], *extra, effect=f"{best} bootstraps a new Primary "
                        "component from its own data", wait=Await("synced", best)))
    return steps


def _plan_split_brain(ctx: Context, result: GaleraPlan) -> None:
    components = primary_components(ctx.obs.view)
    described = "; ".join(
        f"{{{', '.join(c)}}} size {ctx.state(c[0]).size} "  # type: ignore[union-attr]
        f"seqno {max(ctx.state(n).last_committed for n in c)}"  # type: ignore[union-attr]
        for c in components)
    raise Refused(
        f"split brain: {len(components)} Primary components at once ({described}); each "
        "may have acknowledged commits the other lacks, so no automatic choice is safe and "
        "nothing is added to it. Stop the clients, keep a copy of the data of the component "
        "that must give way, stop its nodes, then run this again: they rejoin the other")


def _plan_degraded(ctx: Context, result: GaleraPlan) -> None:
    view = ctx.obs.view
    component = primary_components(view)[0]
    first = ctx.state(component[0])
    assert first is not None
    cluster_uuid = first.cluster_uuid
    cluster_seqno = max(ctx.state(n).last_committed for n in component)  # type: ignore[union-attr]
    down = [n for n in ctx.order if ctx.state(n) is None]
    stuck = [n for n in ctx.order if n not in component and n not in down]
    unreachable = [n for n in down if ctx.positions[n].alive is None]
    if unreachable:
        raise Refused(f"{', '.join(unreachable)} cannot be reached "
                      f"({ctx.positions[unreachable[0]].source}); nothing can start it: "
                      "restore access to the host, then run this again")
    ahead = [n for n in down if ctx.positions[n].has_history
             and ctx.positions[n].uuid == cluster_uuid
             and ctx.positions[n].seqno > cluster_seqno]  # type: ignore[operator]
    if ahead:
        n = ahead[0]
        raise Refused(
            f"{n} holds transactions up to seqno {ctx.positions[n].seqno}, beyond the running "
            f"Primary component ({', '.join(component)}, seqno {cluster_seqno}): the "
            f"component was formed from a node that was behind. {n} cannot join it without "
            f"losing those commits. Stop the component's nodes, then run `chaos recover "
            f"galera`: {n} will bootstrap")
    if stuck:
        result.notes.append(f"{', '.join(stuck)} answer but are outside the Primary "
                            "component; they normally rejoin by themselves once they "
                            "can reach it, so they are only awaited")
    starting = [n for n in down if ctx.positions[n].alive]
    if starting:
        result.notes.append(f"{', '.join(starting)}: starting (alive, young, not yet "
                            "answering); not started again, only awaited (a second server "
                            "would abort on its port)")
    dead = [n for n in down if n not in starting]
    result.steps = _joiner_steps(ctx, dead, cluster_uuid)
    result.steps += [_await(ctx, n, f"{n} answers and is Synced in the component",
                            timeout=STARTING_GRACE) for n in starting]
    result.steps += [_await(ctx, n, f"{n} is back in the component") for n in stuck]


def _plan_non_primary(ctx: Context, result: GaleraPlan) -> None:
    survivors = [n for n in ctx.order if ctx.state(n) is not None]
    absent = [n for n in ctx.order if n not in survivors]
    _no_live_members(ctx, absent)
    best, result.why, notes = _choose(ctx, ctx.order)
    result.notes += notes
    result.bootstrap = best
    uuid = ctx.positions[best].uuid
    if best in survivors:
        result.why += " (a survivor: bootstrapped in place)"
        result.steps = [Step(f"galera://{best}",
                             "SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'",
                             f"{best} forms a Primary component in place, with every survivor "
                             "connected to it", wait=Await("primary", best), wait_timeout=30)]
        result.steps += [_await(ctx, n, f"{n} is Synced in the component")
                         for n in survivors if n != best]
        result.steps += _rejoin(ctx, result, [n for n in absent if n != best], uuid)
        return
    # a stopped node is ahead of every survivor: pc.bootstrap on a survivor would lose
    # its commits. The survivors serve nothing (non-Primary), so stopping them costs no
    # availability; they rejoin by IST from the positions they have now.
    missing_pidfile = [n for n in survivors if not ctx.nodes[n].galera.pidfile]  # type: ignore[union-attr]
    if missing_pidfile:
        raise Refused(f"{best} (stopped) is ahead of every survivor, so the survivors must "
                      f"be stopped first, but the inventory gives no pidfile for "
                      f"{', '.join(missing_pidfile)}: stop them by hand, then run this again")
    result.why += " (stopped, ahead of every survivor: the survivors are stopped first)"
    result.steps = [_stop(ctx.nodes[n]) for n in survivors]
    result.steps += bootstrap_steps(ctx, best, uuid)
    result.steps += _rejoin(ctx, result, [n for n in ctx.order if n != best], uuid)


def _plan_full_outage(ctx: Context, result: GaleraPlan) -> None:
    _no_live_members(ctx, ctx.order)
    best, result.why, notes = _choose(ctx, ctx.order)
    result.notes += notes
    result.bootstrap = best
    chosen = ctx.positions[best]
    uuids = sorted({p.uuid for p in ctx.positions.values() if p.has_history and p.uuid})
    uuid = chosen.uuid if chosen.uuid not in (None, ZERO_UUID) else (uuids[0] if uuids else None)
    result.notes.append("gvwstate.dat is removed on every node so the Primary component is "
                        f"formed by {best} alone, not re-formed by pc.recovery from a stale view")
    result.steps = bootstrap_steps(ctx, best, uuid)
    result.steps += _rejoin(ctx, result, [n for n in ctx.order if n != best], uuid)


def _plan_take_over(ctx: Context, result: GaleraPlan) -> None:
    """A platform's cluster taken over at the operator's word (``--take-over``), for a
    cluster with no member up (a full outage the platform does not settle). On the
    openstack-helm shape the harness acts through the platform's own protocol: the
    state ConfigMap says the cluster reboots from the most advanced node (the harness's
    choice, by the same rules as its own procedure: an unknown position is refused, and
    ``--node`` accepts it), the pods that can run restart cleanly so their start scripts
    read it, and the chosen one bootstraps while the others join it."""
    cluster = ctx.site.cluster("galera")
    cm = cluster.state_configmap
    if cluster.platform != "openstack-helm" or cm is None:
        raise Refused(f"a take-over of a {cluster.platform} cluster is not written: act "
                      "through the platform's own tools")
    live = [n for n in ctx.order if ctx.state(n) is not None]
    if live:
        raise Refused(f"{', '.join(live)} answer: the platform has members up, and a "
                      "take-over is for a cluster with none; let the platform finish")
    runnable = [n for n in ctx.order if ctx.positions[n].alive is not None]
    best, result.why, notes = _choose(ctx, ctx.order)
    if best not in runnable:
        raise Refused(f"{best}'s pod cannot be reached ({ctx.positions[best].source}); it "
                      "cannot bootstrap the cluster")
    result.notes += notes
    result.bootstrap = best
    targets = {n: ctx.nodes[n].galera.target for n in ctx.order}  # type: ignore[union-attr]
    result.steps = [Step(
        targets[best], f"mark the cluster for a reboot led by the pod of {best} (state "
        f"ConfigMap {cm}: cluster.state=reboot, reboot.node=its pod)",
        f"the platform reboots the cluster from {best}", action=Action.REBOOT_CLUSTER,
        subject=cm)]
    result.steps += [Step(targets[n], f"delete the pod behind {targets[n]} (a clean restart: "
                          "its start script reads the new state)",
                          f"{n}'s start script starts again", action=Action.DELETE_POD)
                     for n in runnable]
    result.steps += [Step(targets[n], f"wait for a Ready pod behind {targets[n]}",
                          (f"{best} has bootstrapped the cluster" if n == best
                           else f"{n} has joined {best}"),
                          action=Action.AWAIT_READY, timeout=cluster.deadline_seconds)
                     for n in [best, *(r for r in runnable if r != best)]]
    left = [n for n in ctx.order if n not in runnable]
    if left:
        result.notes.append(f"{', '.join(left)}: no pod to restart now; the platform joins "
                            "them to the cluster when they can run")
    result.final = Await("synced", best)


PLANNERS: dict[Situation, Callable[[Context, GaleraPlan], None]] = {
    Situation.SPLIT_BRAIN: _plan_split_brain,
    Situation.DEGRADED: _plan_degraded,
    Situation.NON_PRIMARY: _plan_non_primary,
    Situation.FULL_OUTAGE: _plan_full_outage,
}


def plan(site: Site, obs: Observation, *, force_node: str | None = None,
         discard: Collection[str] = (), take_over: bool = False) -> GaleraPlan:
    if PROCEDURE.rehearse("plan"):
        return PROCEDURE.rehearsed(GaleraPlan)
    nodes = {n.name: n for n in _nodes(site)}
    for name, what in [(force_node, "--node"), *((d, "--discard") for d in discard)]:
        if name is not None and name not in nodes:
            raise ConfigError(f"{what}: {name!r} is not a Galera node "
                              f"(nodes: {', '.join(nodes)})")
    situation = classify(obs.view, len(nodes))
    result = GaleraPlan("galera", situation.value, positions=obs.positions,
                        durability=obs.durability)
    if obs.durability is not None and obs.durability.lazy():
        result.notes.append(
            f"the site runs with {', '.join(obs.durability.lazy())}: a commit acknowledged "
            "just before its nodes died may not be on any disk; a loss after a full outage "
            "can come from that setting, not from recovery")
    if situation is Situation.HEALTHY:
        return result
    if take_over:
        ctx = Context(site, nodes, obs, force_node, frozenset(discard))
        result.situation = f"{situation.value}, taken over from the platform"
        try:
            _plan_take_over(ctx, result)
        except Refused as refusal:
            result.refused, result.steps = str(refusal), []
        return result
    missing_start = [n for n in nodes if obs.view.states.get(n) is None
                     and not nodes[n].galera.start]  # type: ignore[union-attr]
    if missing_start:
        result.situation = Situation.UNKNOWN.value
        result.refused = f"the inventory gives no start command for {', '.join(missing_start)}"
        return result
    deferred = {p.node for p in obs.positions.values() if p.deferred}
    ctx = Context(site, nodes, obs, force_node, frozenset(discard))
    silent = [n for n in nodes if (p := obs.positions.get(n)) is not None and p.silent]
    try:
        if silent:
            result.situation = "members alive but silent"
            _plan_silent(ctx, result, silent)
        else:
            PLANNERS[situation](ctx, result)
    except Refused as refusal:
        if refusal.unknown and refusal.unknown <= deferred:
            result.pending = (f"the position of {', '.join(sorted(refusal.unknown))} comes from "
                              "mariadbd --wsrep-recover, which a dry run does not run (it "
                              "performs InnoDB crash recovery); the real run learns it, then "
                              "decides")
        else:
            result.refused = str(refusal)
        result.steps = []
    return result


# -- acting ------------------------------------------------------------------------------


def _condition(site: Site, condition: Await) -> tuple[bool, str]:
    kind, node = condition.kind, condition.node
    view = probes.galera(site, timeout=2.0)
    state = view.states.get(node)
    if kind == "primary":
        return state is not None and state.status == "Primary", view.describe()
    if kind == "synced":
        return state is not None and state.healthy, view.describe()
    if kind == "healthy":
        return view.healthy(), view.describe()
    raise AssertionError(condition)


def execute(site: Site, plan_: Plan, *, journal: Journal | None = None,
            confirm: Callable[[Step], None] | None = None) -> None:
    """Run the plan, then require every node Primary and Synced."""
    run_plan(site, plan_, _condition, PROCEDURE, journal=journal, confirm=confirm)


def recover(site: Site, *, force_node: str | None = None, discard: Collection[str] = (),
            journal: Journal | None = None, take_over: bool = False) -> GaleraPlan:
    """Observe, plan and execute: the whole procedure, for scenarios. Where the
    platform owns the cluster, watch it recover instead (``take_over``: act anyway)."""
    if PROCEDURE.rehearse("recover"):
        return PROCEDURE.rehearsed(GaleraPlan)
    if site.cluster("galera").recovered_by == "platform" and not take_over:
        from recovery.platform import recovered_by_platform

        return recovered_by_platform(site, "galera", GaleraPlan, journal=journal)
    started = time.monotonic()
    the_plan = rounds(lambda: plan(site, observe(site), force_node=force_node,
                                   discard=discard, take_over=take_over),
                      lambda p: execute(site, p, journal=journal))
    if journal is not None:
        journal.event(Event.RECOVERY_SECONDS, procedure="galera",
                      seconds=round(time.monotonic() - started, 2))
    return the_plan
