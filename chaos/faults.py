"""Faults: each an inject/revert pair of Steps, recorded in the ledger before it acts.

Planning is pure (``plan(site, kind, host, service)`` returns a :class:`Fault` whose
steps can be printed); :class:`Faults` injects, remembers, and reverts — on success,
failure, exception, Ctrl-C and SIGTERM alike. ``heal`` reverts whatever a dead harness
left in the ledger. Every revert is idempotent, so healing twice is harmless. In a dry
run (:mod:`chaos.dryrun`) ``Faults`` shows each fault's Steps instead, blast-radius
guard included.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from chaos import dryrun
from chaos.errors import ConfigError, FaultError, HarnessError
from chaos.fanout import gather
from chaos.inventory import Compute, Controller, Site
from chaos.journal import Event, Journal
from chaos.ledger import Ledger
from chaos.services import SERVICES, Process, Service
from chaos.steps import ALIVE, Step, restart_log, start_unless_running
from chaos.targets import host_target
from chaos.targets.base import Action, quote


@dataclass(frozen=True)
class FaultKind:
    """One kind of fault, as ``chaos fault --help`` and the README list it."""

    summary: str
    # the kind names its service (kill-docker: the docker daemon); else --service does
    service: str | None = None
    # takes the whole host when no --service is given
    whole_host: bool = False
    # applies to compute hosts only
    computes_only: bool = False


# Every kind, once; which services each applies to is each service's ``kinds``.
KINDS_TABLE: dict[str, FaultKind] = {
    "kill": FaultKind("SIGKILL the service's process (libvirt: libvirtd in its container)"),
    "stop": FaultKind("a clean stop (SIGTERM), awaited as an operator's stop would be"),
    "freeze": FaultKind("SIGSTOP: alive, holding its sockets, answering nobody"),
    "partition": FaultKind("iptables DROP between the host and every other host, on the "
                           "service's ports or the whole host's", whole_host=True),
    "power-off": FaultKind("kill every service of the host at once, as a power cut would",
                           whole_host=True),
    "wipe": FaultKind("kill the service and delete its data, as on a lost disk"),
    "kill-container": FaultKind("SIGKILL the whole libvirt container", service="libvirt",
                                computes_only=True),
    "kill-docker": FaultKind("SIGKILL the compute host's docker daemon", service="docker",
                             computes_only=True),
    "fill-disk": FaultKind("take space (bounded) under the service's data directory"),
    "delete-pod": FaultKind("delete the service's pod; its controller makes a new one"),
    "drain": FaultKind("cordon the node of the host's pods and evict them; the revert "
                       "uncordons it and awaits Ready pods", whole_host=True),
}
KINDS: tuple[str, ...] = tuple(KINDS_TABLE)


def kind_rows() -> list[tuple[str, str, str]]:
    """Each kind: its name, what it does, what it applies to (from the service table)."""
    rows = []
    for name, spec in KINDS_TABLE.items():
        # a service without ports of its own is partitioned only with its whole host
        applies = ", ".join(s.name for s in SERVICES.values() if name in s.kinds
                            and (name != "partition" or s.ports is not None))
        rows.append((name, spec.summary, applies + (", or the whole host" if spec.whole_host
                                                    else "")))
    return rows


def kinds_help() -> str:
    """The kinds for ``chaos fault --help``."""
    return "fault kinds:\n" + "\n".join(f"  {name:<15}{summary}\n  {'':<15}({applies})"
                                         for name, summary, applies in kind_rows())


def kinds_markdown() -> str:
    """The kinds as the README's table (a unit test keeps the README equal to it)."""
    return "\n".join(["| kind | what it does | applies to |", "|---|---|---|",
                      *(f"| `{name}` | {summary} | {applies} |"
                        for name, summary, applies in kind_rows())])

FILL_MAX_MIB = 1024


@dataclass(frozen=True)
class Fault:
    id: str
    kind: str
    host: str
    service: str | None
    inject: list[Step]
    revert: list[Step]
    # which cluster members this fault takes away: {"galera": ["ctl1"], ...}
    down: dict[str, list[str]] = field(default_factory=dict)

    def what(self) -> str:
        return f"{self.kind} {self.service or 'host'} on {self.host}"

    def describe(self) -> str:
        lines = [f"fault {self.id}: {self.what()}", "  inject:"]
        lines += [f"    {s.describe()}" for s in self.inject]
        lines += ["  revert:"] + [f"    {s.describe()}" for s in self.revert]
        return "\n".join(lines)

    def describe_revert(self) -> str:
        return "\n".join([f"revert {self.id} ({self.what()}):"]
                         + [f"    {s.describe()}" for s in self.revert])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "host": self.host, "service": self.service,
                "inject": [s.to_json() for s in self.inject],
                "revert": [s.to_json() for s in self.revert], "down": self.down}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        return cls(id=data["id"], kind=data["kind"], host=data["host"], service=data["service"],
                   inject=[Step.from_json(s) for s in data["inject"]],
                   revert=[Step.from_json(s) for s in data["revert"]],
                   down=data.get("down", {}))


# -- planning (pure) -----------------------------------------------------------------


def _kill_step(proc: Process, host: str) -> Step:
    return Step(proc.target,
                quote("pid=$(cat %s) && kill -s KILL \"$pid\"", proc.pidfile),
                f"{proc.service} on {host} is gone (SIGKILL)", service=proc.service)


def _start_step(proc: Process, host: str) -> Step:
    command = start_unless_running(proc.pidfile, proc.start, restart_log(proc.pidfile))
    return Step(proc.target, command, f"{proc.service} on {host} is started again", timeout=30,
                service=proc.service)


def _from_node(svc: Service, host: Controller | Compute) -> tuple[str, str] | None:
    """(pod URL, process name) where a signal to the service goes through its pod's node;
    None: the service is a process, or its process is reached as the inventory says."""
    placed = svc.placement(host)
    name = getattr(svc, "command_name", None)
    if placed.in_pod and placed.url is not None and name and host.access is not None:
        return placed.url, name
    return None


def _kill_and_back(site: Site, svc: Service, host: Controller | Compute) -> tuple[Step, Step]:
    """SIGKILL the service's process, and the step that brings it back.

    A service in a pod crashes from its node's PID namespace (``Action.CRASH``), where
    its process is visible whatever it is in the pod: PID 1 of its container, or a
    child of a start script. Where the platform recovers the cluster, the way back is
    the platform's: the revert awaits a Ready pod (up to the cluster's deadline);
    elsewhere the harness starts the process again as the inventory says."""
    placed = svc.placement(host)
    cluster = site.cluster(svc.name)
    if (node := _from_node(svc, host)) is not None:
        url, name = node
        kill = Step(url, f"SIGKILL {name} in the container of {url}, from its "
                    "node's PID namespace", f"{svc.name} on {host.name} has crashed",
                    action=Action.CRASH, subject=name, service=svc.name)
        if cluster.recovered_by == "platform":
            back = Step(url, f"wait for a Ready pod behind {url} (the platform "
                        "restarts it)", f"{svc.name} on {host.name} is back, by the platform",
                        action=Action.AWAIT_READY, timeout=cluster.deadline_seconds,
                        service=svc.name)
            return kill, back
        return kill, _start_step(svc.process(site, host), host.name)
    if cluster.recovered_by == "platform" and placed.in_pod:
        raise ConfigError(f"{host.name}.{svc.name}: a crash of its pod is sent from the node: "
                          f"give host {host.name} an access (ssh, or local)")
    proc = svc.process(site, host)
    return _kill_step(proc, host.name), _start_step(proc, host.name)


def _taken_by(kind: str, host: Controller | Compute) -> list[Service]:
    """The host's services a whole-host fault of ``kind`` takes down."""
    return [s for s in SERVICES.on(host) if kind in s.kinds]


def _in_pods(host: Controller | Compute) -> dict[str, str]:
    """The host's services that run in pods: service -> the pod's target URL."""
    pods = {}
    for service in SERVICES.on(host):
        placed = service.placement(host)
        if placed.in_pod and placed.url is not None:
            pods[service.name] = placed.url
    return pods


def _partition_rules(site: Site, host: Controller | Compute, fault_id: str,
                     ports: str | None, action: str) -> str:
    others = [h.address for h in [*site.controllers, *site.computes]
              if h.name != host.name and h.address != host.address]
    match = quote("-p tcp -m multiport --ports %s ", ports) if ports else ""
    tag = quote("-m comment --comment %s", f"chaos:{fault_id}")
    rules = []
    for other in others:
        # OUTPUT from the host and INPUT to it: right on a real host, and on the lab's
        # single kernel the pair still cuts both directions of loopback traffic
        rules.append(quote(f"iptables -w 5 {action} OUTPUT -s %s -d %s ", host.address, other)
                     + match + tag + " -j DROP")
        rules.append(quote(f"iptables -w 5 {action} INPUT -s %s -d %s ", other, host.address)
                     + match + tag + " -j DROP")
    return " && ".join(rules)


def unpartition_command(fault_id: str) -> str:
    """Shell: delete exactly the iptables rules tagged with this fault (wherever run: a
    host, or a pod's network namespace)."""
    return _unpartition(fault_id)


def _unpartition(fault_id: str) -> str:
    # delete exactly the rules carrying this fault's tag, however many are left
    # iptables-save may or may not quote the comment; ids are [a-z0-9-], safe in a regex
    return quote("iptables-save -t filter | grep -E -- %s | sed 's/^-A /-D /' | "
                 "while read -r rule; do eval iptables -w 5 $rule || exit 1; done",
                 f"chaos:{fault_id}(\"| |$)")


def plan(site: Site, kind: str, host_name: str, service: str | None = None, *,
         fault_id: str | None = None, fill_mib: int = 64) -> Fault:
    """The fault as Steps; raises ConfigError for what the site cannot support."""
    spec = KINDS_TABLE.get(kind)
    if spec is None:
        raise ConfigError(f"unknown fault kind {kind!r} (kinds: {', '.join(KINDS)})")
    if service is not None:
        SERVICES.get_known(service)
    host = site.host(host_name)
    if spec.computes_only and not isinstance(host, Compute):
        raise ConfigError(f"{kind} applies to compute hosts; {host.name} is a controller")
    fid = fault_id or f"{kind}-{host.name}{'-' + service if service else ''}-{uuid.uuid4().hex[:6]}"
    service = spec.service or service

    if kind == "delete-pod":
        return _delete_pod(host, service, fid)
    if kind == "drain":
        return _drain(host, service, fid)
    if kind == "partition":
        return _partition(site, host, service, fid)
    if kind == "power-off":
        taken = _taken_by(kind, host)
        if not taken:
            raise ConfigError(f"host {host.name} runs no service this harness can power off")
        steps = [_kill_and_back(site, s, host) for s in taken]
        return Fault(fid, kind, host.name, None, [k for k, _ in steps], [b for _, b in steps],
                     {s.name: [host.name] for s in taken})

    if service is None:
        raise ConfigError(f"fault {kind} needs --service ({', '.join(SERVICES)})")
    svc = SERVICES[service]
    if kind not in svc.kinds:
        raise ConfigError(f"fault {kind} does not apply to {service} (its faults: "
                          f"{', '.join(k for k in KINDS if k in svc.kinds)})")
    own = svc.fault_steps(site, kind, host, fid)
    if own is not None:
        return Fault(fid, kind, host.name, service, *own, {service: [host.name]})
    if kind in ("kill", "kill-docker"):
        kill, back = _kill_and_back(site, svc, host)
        return Fault(fid, kind, host.name, service, [kill], [back], {service: [host.name]})
    if kind == "freeze" and (node := _from_node(svc, host)) is not None:
        url, name = node
        inject = [Step(url, f"SIGSTOP {name} in the container of {url}, from its node's PID "
                       "namespace", f"{service} on {host.name} is frozen (SIGSTOP)",
                       action=Action.SIGNAL, subject=f"STOP {name}", service=service)]
        revert = [Step(url, f"SIGCONT {name} in the container of {url}, from its node's PID "
                       "namespace", f"{service} on {host.name} runs again (SIGCONT)",
                       action=Action.SIGNAL, subject=f"CONT {name}", service=service)]
        return Fault(fid, kind, host.name, service, inject, revert, {service: [host.name]})
    if kind == "wipe" and site.cluster(service).recovered_by == "platform" \
            and (node := _from_node(svc, host)) is not None:
        url, _ = node
        datadir = svc.section(host).datadir if hasattr(svc, "section") else None
        if not datadir:
            raise ConfigError(f"{host.name}.{service}: no data directory to wipe")
        cluster = site.cluster(service)
        inject = [Step(url, f"delete the data behind {datadir} of {url} on its node (PVC "
                       "or hostPath), then the pod", f"{service} data on {host.name} is "
                       "gone, as on a lost disk", action=Action.WIPE_POD, subject=datadir,
                       timeout=60, service=service)]
        revert = [Step(url, f"wait for a Ready pod behind {url} (the platform makes it "
                       "anew)", f"{service} on {host.name} is back, by the platform",
                       action=Action.AWAIT_READY, timeout=cluster.deadline_seconds,
                       service=service)]
        return Fault(fid, kind, host.name, service, inject, revert, {service: [host.name]})
    proc = svc.process(site, host)
    if kind == "stop":
        # a clean shutdown, as an operator's stop would do it; bounded wait for the exit
        inject = [Step(proc.target, ALIVE + quote(
            "pid=$(cat %s) && kill -s TERM \"$pid\" && i=0 && "
            "while alive \"$pid\" && [ $i -lt 240 ]; do sleep 0.25; i=$((i+1)); done; "
            "! alive \"$pid\"", proc.pidfile),
            f"{service} on {host.name} has shut down cleanly", timeout=75)]
        revert = [_start_step(proc, host.name)]
    elif kind == "freeze":
        inject = [Step(proc.target, quote("kill -s STOP \"$(cat %s)\"", proc.pidfile),
                       f"{service} on {host.name} is frozen (SIGSTOP)")]
        revert = [Step(proc.target, quote("kill -s CONT \"$(cat %s)\" || true", proc.pidfile),
                       f"{service} on {host.name} runs again (SIGCONT)")]
    elif kind == "wipe":
        if not proc.datadir or proc.datadir.rstrip("/") in ("", "/", "/var", "/var/lib"):
            raise ConfigError(f"{host.name}.{service}: no safe data directory to wipe")
        inject = [_kill_step(proc, host.name),
                  Step(proc.target, quote("find %s -mindepth 1 -delete", proc.datadir),
                       f"{service} data on {host.name} is gone, as on a lost disk")]
        revert = [_start_step(proc, host.name)]
    elif kind == "fill-disk":
        if not proc.datadir:
            raise ConfigError(f"{host.name}.{service}: no data directory to fill")
        size = max(1, min(fill_mib, FILL_MAX_MIB))
        filler = f"{proc.datadir.rstrip('/')}/.chaos-fill-{fid}"
        inject = [Step(proc.target, quote("fallocate -l %s %s", f"{size}M", filler),
                       f"{size} MiB less free space under {proc.datadir}")]
        revert = [Step(proc.target, quote("rm -f %s", filler), "the space is back")]
        return Fault(fid, kind, host.name, service, inject, revert, {})
    else:
        raise ConfigError(f"{service} has no plan for a {kind} of its own")
    return Fault(fid, kind, host.name, service, inject, revert, {service: [host.name]})


def _partition(site: Site, host: Controller | Compute, service: str | None,
               fid: str) -> Fault:
    ports = None
    if service is not None:
        ports = SERVICES[service].ports
        if ports is None:
            cut = [s.name for s in SERVICES.values() if s.ports is not None]
            raise ConfigError(f"partition takes --service {', '.join(cut)}, or none "
                              "(whole host)")
    where = ("local://" if site.firewall == "local"
             else host_target(site, host.name, need="partition it").url)
    inject = [Step(where, _partition_rules(site, host, fid, ports, "-I"),
                   f"{host.name} cannot reach or be reached by the other hosts"
                   + (f" on {service}'s ports" if service else ""))]
    revert = [Step(inject[0].target, _unpartition(fid), f"{host.name} is reachable again")]
    # pods on a pod network carry none of the hosts' addresses: each is cut inside its
    # own network namespace, from the pods on the other nodes
    for svc in SERVICES.on(host):
        if service is not None and svc.name != service:
            continue
        placed = svc.placement(host)
        section = getattr(host, svc.name, None)
        if not (placed.in_pod and placed.url and getattr(section, "reach", None)
                == "port-forward"):
            continue
        what = f"{fid} {svc.ports}" if service is not None and svc.ports else fid
        inject.append(Step(placed.url, f"cut the pod behind {placed.url} from the pods on "
                           "other nodes, in its own network namespace",
                           f"{svc.name} on {host.name} is cut off on the pod network",
                           action=Action.PARTITION_POD, subject=what, service=svc.name))
        revert.insert(0, Step(placed.url, f"remove the partition of the pod behind "
                              f"{placed.url}", f"{svc.name} on {host.name} is reachable "
                              "again on the pod network", action=Action.UNPARTITION_POD,
                              subject=fid, service=svc.name))
    down = {svc: [host.name] for svc in ([service] if service else
                                         [s.name for s in _taken_by("partition", host)])}
    return Fault(fid, "partition", host.name, service, inject, revert, down)


def _drain(host: Controller | Compute, service: str | None, fid: str) -> Fault:
    """Drain the Kubernetes node a host's pods run on: cordon it and evict every pod
    but DaemonSets'. Pods pinned there (the seed pins Galera per controller) stay
    Pending until the revert uncordons the node; the revert then waits for each of the
    host's service pods to be Ready."""
    every = _in_pods(host)
    pods = {s: u for s, u in every.items() if service is None or s == service}
    if not pods:
        raise ConfigError(f"drain needs a service of {host.name} that runs in a k8s:// pod")
    url = next(iter(pods.values()))
    down = {s: [host.name] for s in every}
    return Fault(fid, "drain", host.name, service,
                 [Step(url, f"cordon the node of {url} and evict its pods",
                       f"the node of {host.name} is cordoned and empty",
                       action=Action.DRAIN_NODE, timeout=60, subject=host.name)],
                 [Step(url, f"uncordon the node of {url}", f"the node of {host.name} takes "
                       "pods again", action=Action.UNCORDON_NODE, subject=host.name),
                  *[Step(u, f"wait for a Ready pod behind {u}", f"the {s} pod on {host.name} "
                         "is Ready again", action=Action.AWAIT_READY, timeout=300)
                    for s, u in every.items()]],
                 down)


def _delete_pod(host: Controller | Compute, service: str | None, fid: str) -> Fault:
    """Delete the pod running a service; its controller (Deployment, DaemonSet) makes a
    new one, and the revert waits until a pod is Ready again."""
    if service is None or not (url := _in_pods(host).get(service)):
        raise ConfigError(f"delete-pod needs --service naming a service of {host.name} "
                          "that runs in a k8s:// pod")
    return Fault(fid, "delete-pod", host.name, service,
                 [Step(url, f"delete the pod behind {url} (a clean restart: SIGTERM and the "
                       "pod's grace period, not a crash)", f"{service} pod on {host.name} "
                       "is deleted", action=Action.DELETE_POD)],
                 [Step(url, f"wait for a Ready pod behind {url}", f"a new {service} pod on "
                       f"{host.name} is Ready", action=Action.AWAIT_READY, timeout=300)],
                 {service: [host.name]})


# -- blast radius -------------------------------------------------------------------


def cluster_sizes(site: Site) -> dict[str, int]:
    """Members of each quorum cluster, and the controllers."""
    hosts: list[Controller | Compute] = [*site.controllers, *site.computes]
    sizes = {s.name: sum(1 for h in hosts if s.runs_on(h)) for s in SERVICES.clusters()}
    return {**sizes, "controllers": len(site.controllers)}


def allow_everything() -> dict[str, int]:
    """What --allow-quorum-loss declares: any number of members of every cluster."""
    return {**{s.name: 99 for s in SERVICES.clusters()}, "controllers": 99}


def open_on_site(ledger: Ledger, inventory_path: str | None) -> list[Fault]:
    """The ledger's open faults injected into this site. Faults open on another site
    (the process lab beside the Kubernetes tier, with the same host names) take no
    member of this one down."""
    return [Fault.from_json(e["fault"]) for e in ledger.open_faults()
            if e.get("inventory") == inventory_path]


def check_blast_radius(site: Site, open_faults: list[Fault], new: Fault,
                       allowed: dict[str, int] | None = None) -> None:
    """Refuse a fault that would take more than floor(N/2) members of a cluster down at
    once, or every controller, unless ``allowed`` declares that many."""
    allowed = allowed or {}
    sizes = cluster_sizes(site)
    controllers = {c.name for c in site.controllers}
    for cluster in (s.name for s in SERVICES.clusters()):
        members = {h for f in [*open_faults, new] for h in f.down.get(cluster, [])}
        limit = allowed.get(cluster, sizes[cluster] // 2)
        if new.down.get(cluster) and len(members) > limit:
            raise FaultError(
                f"blast radius: {new.kind} on {new.host} would take {len(members)} of "
                f"{sizes[cluster]} {cluster} members down at once ({', '.join(sorted(members))}); "
                f"more than {limit} must be declared (blast_radius({cluster}={len(members)}) "
                "or --allow-quorum-loss)")
    hit = {h for f in [*open_faults, new] for hosts in f.down.values() for h in hosts
           if h in controllers}
    limit = allowed.get("controllers", sizes["controllers"] - 1)
    if new.host in controllers and len(hit) > limit:
        raise FaultError(
            f"blast radius: {new.kind} on {new.host} would hit every controller; "
            "declare it (blast_radius(controllers=N) or --allow-quorum-loss)")


# -- acting ---------------------------------------------------------------------------


class Faults:
    """Inject faults and guarantee their revert.

    Use as a context manager: every fault still open when the block ends — normally, by
    an exception, Ctrl-C or SIGTERM — is reverted, newest first, before it returns.
    """

    def __init__(self, site: Site, *, inventory_path: str | None = None,
                 ledger: Ledger | None = None, allowed: dict[str, int] | None = None,
                 journal: Journal | None = None,
                 confirm: Callable[[Step], None] | None = None,
                 before_inject: Callable[[], None] | None = None) -> None:
        self.site = site
        # runbook mode: called before every step that injects a fault
        self.confirm = confirm
        # called before a fault is recorded and acts: in a reported run the plugin holds
        # the first fault until the monitor's first sample (the steady state) is journaled
        self.before_inject = before_inject
        self.inventory_path = inventory_path
        self.ledger = ledger or Ledger()
        self.allowed = allowed or {}
        self.open: list[Fault] = []
        self.journal = journal

    def _event(self, name: Event, **data: Any) -> None:
        if self.journal is not None:
            self.journal.event(name, **data)

    def inject(self, fault: Fault, *, context: dict[str, Any] | None = None) -> Fault:
        """Record the fault (with ``context``, e.g. the VMs seen before it), then act.
        In a dry run: the same guard, then the fault's Steps shown, nothing done."""
        rehearsal = dryrun.active()
        # a real run heals what the ledger holds before its first scenario: a dry run
        # plans without it
        ledgered = [] if rehearsal is not None else open_on_site(self.ledger,
                                                                  self.inventory_path)
        known = {f.id for f in self.open}
        check_blast_radius(self.site, self.open + [f for f in ledgered if f.id not in known],
                           fault, self.allowed)
        if rehearsal is not None:
            self.open.append(fault)
            self._event(Event.FAULT_PLANNED, fault=fault.id, plan=fault.describe())
            rehearsal.step(fault.describe())
            return fault
        if self.before_inject is not None:
            self.before_inject()
        self.ledger.record(fault.id, {"id": fault.id, "created": time.time(),
                                      "inventory": self.inventory_path,
                                      "fault": fault.to_json(), **(context or {})})
        self.open.append(fault)
        self._event(Event.FAULT_INJECT, fault=fault.id, kind=fault.kind, host=fault.host,
                    service=fault.service)
        try:
            for step in fault.inject:
                if self.confirm is not None:
                    self.confirm(step)
                step.execute(self.site)
        except BaseException as exc:
            self._event(Event.FAULT_INJECT_FAILED, fault=fault.id, error=str(exc))
            self.revert(fault)
            if isinstance(exc, HarnessError):
                raise FaultError(f"fault {fault.id} could not be injected: {exc}") from exc
            raise
        return fault

    def add(self, kind: str, host: str, service: str | None = None, **kw: Any) -> Fault:
        return self.inject(plan(self.site, kind, host, service, **kw))

    def execute(self, step: Step) -> None:
        """Run one Step by hand, e.g. part of a fault's revert (in a dry run: show it)."""
        rehearsal = dryrun.active()
        if rehearsal is not None:
            rehearsal.step(f"run {step.describe()}")
            return
        step.execute(self.site)

    def revert(self, fault: Fault) -> None:
        rehearsal = dryrun.active()
        if rehearsal is not None:
            rehearsal.step(fault.describe_revert())
            if fault in self.open:
                self.open.remove(fault)
            return
        errors = []
        for step in fault.revert:
            try:
                step.execute(self.site)
            except HarnessError as exc:
                errors.append(str(exc))
        if errors:
            self._event(Event.FAULT_REVERT_FAILED, fault=fault.id, errors=errors)
            raise FaultError(f"revert of {fault.id} failed (left in the ledger for "
                             f"'chaos heal'): {'; '.join(errors)}")
        self.ledger.clear(fault.id)
        if fault in self.open:
            self.open.remove(fault)
        self._event(Event.FAULT_REVERT, fault=fault.id)

    def revert_all(self) -> None:
        """Revert every open fault, newest first on each host, the hosts at once (a
        rolling fault over a fleet leaves one per host); every failure reported once."""
        newest_first = list(reversed(self.open))
        if dryrun.active() is not None:  # a plan is read in order: one after another
            for fault in newest_first:
                self.revert(fault)
            return
        errors = per_host(newest_first, self.revert)
        if errors:
            raise FaultError("; ".join(errors))

    def __enter__(self) -> Faults:
        return self

    def __exit__(self, *exc: object) -> None:
        with _sigterm_as_interrupt():
            self.revert_all()


@contextlib.contextmanager
def _on_sigterm(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """Install ``handler`` for SIGTERM for the block (only the main thread can)."""
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While reverting, a SIGTERM must not cut the revert short: defer it."""
    pending: list[int] = []
    with _on_sigterm(lambda signum, frame: pending.append(signum)):
        yield
    if pending:
        raise KeyboardInterrupt("SIGTERM")


def sigterm_raises() -> contextlib.AbstractContextManager[None]:
    """Turn SIGTERM into KeyboardInterrupt so ``finally`` blocks (and reverts) run."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt("SIGTERM")

    return _on_sigterm(handler)


def heal(site_for: Callable[[str | None], Site],
         ledger: Ledger | None = None) -> tuple[list[str], list[str]]:
    """Revert every fault left open in the ledger. Returns (healed ids, error lines).

    ``site_for(inventory_path)`` loads the site a fault was injected into.
    """
    ledger = ledger or Ledger()
    healed: list[str] = []
    entries = {entry["fault"]["id"]: entry for entry in ledger.open_faults()}
    faults = [Fault.from_json(e["fault"]) for e in reversed(list(entries.values()))]

    def revert(fault: Fault) -> None:
        try:
            Faults(site_for(entries[fault.id].get("inventory")), ledger=ledger).revert(fault)
        except HarnessError as exc:
            raise FaultError(f"{fault.id}: {exc}") from exc
        healed.append(fault.id)

    errors = per_host(faults, revert)
    return [f.id for f in faults if f.id in healed], errors


# a revert's steps carry their own timeouts (a drain's waits reach 300 s per pod); this
# bounds a host's whole list, after which its faults stay in the ledger for 'chaos heal'
REVERT_DEADLINE = 900.0


def per_host(faults: list[Fault], revert: Callable[[Fault], None]) -> list[str]:
    """``revert`` each fault: in the given order on each host, the hosts in parallel.
    Returns one error line per fault not reverted, each naming it."""
    by_host: dict[str, list[Fault]] = {}
    for fault in faults:
        by_host.setdefault(fault.host, []).append(fault)

    def host_errors(host: str) -> list[str]:
        errors = []
        for fault in by_host[host]:
            try:
                revert(fault)
            except HarnessError as exc:
                errors.append(str(exc))
        return errors

    gathered = gather(by_host, host_errors, deadline=REVERT_DEADLINE)
    return ([e for found in gathered.results.values() for e in found]
            + [f"{host}: {why}" for host, why in gathered.errors.items()])
