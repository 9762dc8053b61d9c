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
from typing import Any, Literal

from chaos import dryrun
from chaos.errors import ConfigError, FaultError, HarnessError
from chaos.inventory import Compute, Controller, Site
from chaos.journal import Journal
from chaos.ledger import Ledger
from chaos.steps import ALIVE, Step, restart_log, start_unless_running
from chaos.targets import host_target
from chaos.targets.base import quote

Kind = Literal["kill", "stop", "freeze", "partition", "power-off", "wipe", "kill-container",
               "kill-docker", "fill-disk", "delete-pod", "drain"]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]
SERVICES = ("galera", "rabbitmq", "libvirt", "docker")

GALERA_PORTS = "4567,4568,4444"
RABBIT_PORTS = "25672,4369"
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


@dataclass(frozen=True)
class _Proc:
    """A service run as a process: where, its pidfile, how to start it, its data."""

    cluster: str
    target: str
    pidfile: str
    start: str
    datadir: str | None


def _process(site: Site, host: Controller | Compute, service: str) -> _Proc:
    if isinstance(host, Controller) and service == "galera" and host.galera:
        g = host.galera
        if not (g.pidfile and g.start):
            raise ConfigError(f"{host.name}.galera: pidfile and start are needed for this fault")
        return _Proc("galera", g.target, g.pidfile, g.start, g.datadir)
    if isinstance(host, Controller) and service == "rabbitmq" and host.rabbitmq:
        r = host.rabbitmq
        if not (r.pidfile and r.start):
            raise ConfigError(f"{host.name}.rabbitmq: pidfile and start are needed for this fault")
        return _Proc("rabbitmq", r.target, r.pidfile, r.start, r.data_dir)
    if isinstance(host, Compute) and service == "docker" and host.docker:
        d = host.docker
        if not (d.pidfile and d.start):
            raise ConfigError(f"{host.name}.docker: pidfile and start are needed for this fault")
        where = host_target(site, host.name, need="act on its docker daemon").url
        return _Proc("docker", where, d.pidfile, d.start, None)
    raise ConfigError(f"host {host.name} has no {service} service in the inventory")


def _kill_steps(proc: _Proc, host: str) -> Step:
    return Step(proc.target,
                quote("pid=$(cat %s) && kill -s KILL \"$pid\"", proc.pidfile),
                f"{proc.cluster} on {host} is gone (SIGKILL)")


def _start_step(proc: _Proc, host: str) -> Step:
    command = start_unless_running(proc.pidfile, proc.start, restart_log(proc.pidfile))
    return Step(proc.target, command, f"{proc.cluster} on {host} is started again", timeout=30)


def _services_of(host: Controller | Compute) -> list[str]:
    if isinstance(host, Controller):
        return [s for s in ("galera", "rabbitmq") if getattr(host, s) is not None]
    return [s for s in ("docker",) if host.docker is not None]


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


def _unpartition(fault_id: str) -> str:
    # delete exactly the rules carrying this fault's tag, however many are left
    # iptables-save may or may not quote the comment; ids are [a-z0-9-], safe in a regex
    return quote("iptables-save -t filter | grep -E -- %s | sed 's/^-A /-D /' | "
                 "while read -r rule; do eval iptables -w 5 $rule || exit 1; done",
                 f"chaos:{fault_id}(\"| |$)")


def plan(site: Site, kind: str, host_name: str, service: str | None = None, *,
         fault_id: str | None = None, fill_mib: int = 64) -> Fault:
    """The fault as Steps; raises ConfigError for what the site cannot support."""
    if kind not in KINDS:
        raise ConfigError(f"unknown fault kind {kind!r} (kinds: {', '.join(KINDS)})")
    if service is not None and service not in SERVICES:
        raise ConfigError(f"unknown service {service!r} (services: {', '.join(SERVICES)})")
    host = site.host(host_name)
    fid = fault_id or f"{kind}-{host.name}{'-' + service if service else ''}-{uuid.uuid4().hex[:6]}"
    down: dict[str, list[str]] = {}

    if kind == "delete-pod":
        return _delete_pod(site, host, service, fid)
    if kind == "drain":
        return _drain(site, host, service, fid)

    if kind in ("kill", "stop", "freeze", "wipe", "fill-disk"):
        if service is None:
            raise ConfigError(f"fault {kind} needs --service ({', '.join(SERVICES)})")
        if kind == "kill" and service == "libvirt":
            return _libvirt_kill(site, host, fid)
        if kind == "freeze" and service == "libvirt":
            return _libvirt_freeze(site, host, fid)
        proc = _process(site, host, service)
        if kind == "kill":
            inject, revert = [_kill_steps(proc, host.name)], [_start_step(proc, host.name)]
        elif kind == "stop":
            # a clean shutdown, as an operator's stop would do it; bounded wait for the exit
            inject = [Step(proc.target, ALIVE + quote(
                "pid=$(cat %s) && kill -s TERM \"$pid\" && i=0 && "
                "while alive \"$pid\" && [ $i -lt 240 ]; do sleep 0.25; i=$((i+1)); done; "
                "! alive \"$pid\"", proc.pidfile),
                f"{proc.cluster} on {host.name} has shut down cleanly", timeout=75)]
            revert = [_start_step(proc, host.name)]
        elif kind == "freeze":
            inject = [Step(proc.target, quote("kill -s STOP \"$(cat %s)\"", proc.pidfile),
                           f"{proc.cluster} on {host.name} is frozen (SIGSTOP)")]
            revert = [Step(proc.target, quote("kill -s CONT \"$(cat %s)\" || true", proc.pidfile),
                           f"{proc.cluster} on {host.name} runs again (SIGCONT)")]
        elif kind == "wipe":
            if not proc.datadir or proc.datadir.rstrip("/") in ("", "/", "/var", "/var/lib"):
                raise ConfigError(f"{host.name}.{service}: no safe data directory to wipe")
            inject = [_kill_steps(proc, host.name),
                      Step(proc.target, quote("find %s -mindepth 1 -delete", proc.datadir),
                           f"{proc.cluster} data on {host.name} is gone, as on a lost disk")]
            revert = [_start_step(proc, host.name)]
        else:  # fill-disk
            if not proc.datadir:
                raise ConfigError(f"{host.name}.{service}: no data directory to fill")
            size = max(1, min(fill_mib, FILL_MAX_MIB))
            filler = f"{proc.datadir.rstrip('/')}/.chaos-fill-{fid}"
            inject = [Step(proc.target, quote("fallocate -l %s %s", f"{size}M", filler),
                           f"{size} MiB less free space under {proc.datadir}")]
            revert = [Step(proc.target, quote("rm -f %s", filler), "the space is back")]
            return Fault(fid, kind, host.name, service, inject, revert, {})
        down[proc.cluster] = [host.name]
        return Fault(fid, kind, host.name, service, inject, revert, down)

    if kind == "partition":
        ports = {"galera": GALERA_PORTS, "rabbitmq": RABBIT_PORTS, None: None}.get(service)
        if service in ("libvirt", "docker"):
            raise ConfigError("partition takes --service galera, rabbitmq, or none (whole host)")
        where = ("local://" if site.firewall == "local"
                 else host_target(site, host.name, need="partition it").url)
        inject = [Step(where, _partition_rules(site, host, fid, ports, "-I"),
                       f"{host.name} cannot reach or be reached by the other hosts"
                       + (f" on {service}'s ports" if service else ""))]
        revert = [Step(inject[0].target, _unpartition(fid), f"{host.name} is reachable again")]
        for svc in ([service] if service else _services_of(host)):
            down[svc] = [host.name]
        return Fault(fid, kind, host.name, service, inject, revert, down)

    if kind == "power-off":
        procs = [_process(site, host, s) for s in _services_of(host)]
        if not procs:
            raise ConfigError(f"host {host.name} runs no service this harness can power off")
        inject = [_kill_steps(p, host.name) for p in procs]
        revert = [_start_step(p, host.name) for p in procs]
        down = {p.cluster: [host.name] for p in procs}
        return Fault(fid, kind, host.name, None, inject, revert, down)

    if kind in ("kill-container", "kill-docker"):
        if not isinstance(host, Compute):
            raise ConfigError(f"{kind} applies to compute hosts; {host.name} is a controller")
        if kind == "kill-docker":
            proc = _process(site, host, "docker")
            return Fault(fid, kind, host.name, "docker", [_kill_steps(proc, host.name)],
                         [_start_step(proc, host.name)], {"docker": [host.name]})
        return _libvirt_kill(site, host, fid, container=True)
    raise AssertionError(kind)


def _libvirt_kill(site: Site, host: Controller | Compute, fid: str, *,
                  container: bool = False) -> Fault:
    if not isinstance(host, Compute) or host.libvirt is None or host.docker is None:
        raise ConfigError(f"host {host.name} has no libvirt container in the inventory")
    if host.libvirt.container.startswith("k8s://"):
        return _libvirt_kill_in_pod(site, host, fid, container=container)
    from chaos.targets.docker import parse

    _, name = parse(host.libvirt.container)
    where = host_target(site, host.name, need="kill and restart its libvirt container").url
    docker = quote("docker -H %s ", host.docker.socket)
    if container:
        inject = [Step(where, docker + quote("kill -s KILL %s", name),
                       f"the libvirt container on {host.name} is killed")]
    else:
        inject = [Step(where, docker + quote("inspect -f '{{.State.Pid}}' %s", name)
                       + " | xargs -r kill -s KILL",
                       f"libvirtd on {host.name} is gone (SIGKILL)")]
    revert = [Step(where, docker + quote("start %s", name),
                   f"the libvirt container on {host.name} runs again", timeout=60)]
    return Fault(fid, "kill-container" if container else "kill", host.name, "libvirt",
                 inject, revert, {"libvirt": [host.name]})


def _libvirt_freeze(site: Site, host: Controller | Compute, fid: str) -> Fault:
    """libvirtd stopped (SIGSTOP) and left so: alive, holding its socket, answering nobody.
    The revert thaws whatever process is libvirtd then (a recovery may have replaced it)."""
    if not isinstance(host, Compute) or host.libvirt is None or host.docker is None:
        raise ConfigError(f"host {host.name} has no libvirt container in the inventory")
    from chaos.services.libvirt import libvirtd_pid

    where = host_target(site, host.name, need="freeze its libvirtd").url
    pid = libvirtd_pid(host.docker.socket, host.libvirt.container)
    inject = [Step(where, pid + " && kill -s STOP \"$pid\"",
                   f"libvirtd on {host.name} is frozen (SIGSTOP)")]
    revert = [Step(where, "{ " + pid + " && kill -s CONT \"$pid\"; } || true",
                   f"libvirtd on {host.name} runs again (SIGCONT)")]
    return Fault(fid, "freeze", host.name, "libvirt", inject, revert, {"libvirt": [host.name]})


def _libvirt_kill_in_pod(site: Site, host: Compute, fid: str, *, container: bool) -> Fault:
    """libvirt in a pod, killed from the node as a crash would: libvirtd (SIGKILL to the
    container's main process, a host PID with hostPID) or the whole container on the
    node's docker. Done only once libvirtd is gone (bounded wait), so what follows never
    sees it still answering. The kubelet restarts the container by itself; the revert
    waits for it Ready."""
    assert host.libvirt is not None and host.docker is not None
    url = host.libvirt.container
    namespace = url.removeprefix("k8s://").split("/", 1)[0]
    docker = quote("docker -H %s ", host.docker.socket)
    found = docker + quote("ps -q --filter label=io.kubernetes.pod.namespace=%s "
                           "--filter label=io.kubernetes.container.name=libvirt", namespace)
    pid = (f"id=$({found} | head -n 1) && [ -n \"$id\" ] && "
           f"pid=$({docker}inspect -f {quote('%s', '{{.State.Pid}}')} \"$id\") && ")
    kill = (docker + "kill -s KILL \"$id\"") if container else "kill -s KILL \"$pid\""
    gone = (" && i=0 && while alive \"$pid\" && [ $i -lt 80 ]; do sleep 0.25; i=$((i+1)); "
            "done; ! alive \"$pid\"")
    node = host_target(site, host.name, need="kill libvirt from the node").url
    inject = [Step(node, ALIVE + pid + kill + gone,
                   f"the libvirt container on {host.name} is killed" if container
                   else f"libvirtd on {host.name} is gone (SIGKILL)", timeout=40)]
    # the kubelet's crash-loop back-off reaches 5 min when a container dies again and
    # again; recovery deletes the pod instead of waiting (recovery/libvirt.py)
    revert = [Step(url, f"wait for a Ready pod behind {url}", "the kubelet restarted the "
                   f"libvirt container on {host.name} and it is Ready", action="await-ready",
                   timeout=330)]
    return Fault(fid, "kill-container" if container else "kill", host.name, "libvirt",
                 inject, revert, {"libvirt": [host.name]})


def _pod_targets(host: Controller | Compute) -> dict[str, str]:
    """The host's services that run in k8s:// pods: service -> target URL."""
    targets = {
        "galera": host.galera.target if isinstance(host, Controller) and host.galera else None,
        "rabbitmq": (host.rabbitmq.target if isinstance(host, Controller) and host.rabbitmq
                     else None),
        "libvirt": host.libvirt.container if isinstance(host, Compute) and host.libvirt
        else None,
    }
    return {s: url for s, url in targets.items() if url and url.startswith("k8s://")}


def _drain(site: Site, host: Controller | Compute, service: str | None, fid: str) -> Fault:
    """Drain the Kubernetes node a host's pods run on: cordon it and evict every pod
    but DaemonSets'. Pods pinned there (the seed pins Galera per controller) stay
    Pending until the revert uncordons the node; the revert then waits for each of the
    host's service pods to be Ready."""
    pods = _pod_targets(host)
    if service is not None:
        pods = {s: u for s, u in pods.items() if s == service}
    if not pods:
        raise ConfigError(f"drain needs a service of {host.name} that runs in a k8s:// pod")
    url = next(iter(pods.values()))
    down = {s: [host.name] for s in _pod_targets(host)}
    return Fault(fid, "drain", host.name, service,
                 [Step(url, f"cordon the node of {url} and evict its pods",
                       f"the node of {host.name} is cordoned and empty", action="drain-node",
                       timeout=60)],
                 [Step(url, f"uncordon the node of {url}", f"the node of {host.name} takes "
                       "pods again", action="uncordon-node"),
                  *[Step(u, f"wait for a Ready pod behind {u}", f"the {s} pod on {host.name} "
                         "is Ready again", action="await-ready", timeout=300)
                    for s, u in _pod_targets(host).items()]],
                 down)


def _delete_pod(site: Site, host: Controller | Compute, service: str | None,
                fid: str) -> Fault:
    """Delete the pod running a service; its controller (Deployment, DaemonSet) makes a
    new one, and the revert waits until a pod is Ready again."""
    targets = _pod_targets(host)
    if service is None or not (url := targets.get(service)):
        raise ConfigError(f"delete-pod needs --service naming a service of {host.name} "
                          "that runs in a k8s:// pod")
    cluster = {"galera": "galera", "rabbitmq": "rabbitmq"}.get(service, "libvirt")
    return Fault(fid, "delete-pod", host.name, service,
                 [Step(url, f"delete the pod behind {url}", f"{service} pod on {host.name} "
                       "is deleted", action="delete-pod")],
                 [Step(url, f"wait for a Ready pod behind {url}", f"a new {service} pod on "
                       f"{host.name} is Ready", action="await-ready", timeout=300)],
                 {cluster: [host.name]})


# -- blast radius -------------------------------------------------------------------


def cluster_sizes(site: Site) -> dict[str, int]:
    return {
        "galera": sum(1 for c in site.controllers if c.galera),
        "rabbitmq": sum(1 for c in site.controllers if c.rabbitmq),
        "controllers": len(site.controllers),
    }


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
    for cluster in ("galera", "rabbitmq"):
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
                 confirm: Callable[[Step], None] | None = None) -> None:
        self.site = site
        # runbook mode: called before every step that injects a fault
        self.confirm = confirm
        self.inventory_path = inventory_path
        self.ledger = ledger or Ledger()
        self.allowed = allowed or {}
        self.open: list[Fault] = []
        self.journal = journal

    def _event(self, name: str, **data: Any) -> None:
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
            self._event("fault.planned", fault=fault.id, plan=fault.describe())
            rehearsal.step(fault.describe())
            return fault
        self.ledger.record(fault.id, {"id": fault.id, "created": time.time(),
                                      "inventory": self.inventory_path,
                                      "fault": fault.to_json(), **(context or {})})
        self.open.append(fault)
        self._event("fault.inject", fault=fault.id, kind=fault.kind, host=fault.host,
                    service=fault.service)
        try:
            for step in fault.inject:
                if self.confirm is not None:
                    self.confirm(step)
                step.execute(self.site)
        except BaseException as exc:
            self._event("fault.inject_failed", fault=fault.id, error=str(exc))
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
            self._event("fault.revert_failed", fault=fault.id, errors=errors)
            raise FaultError(f"revert of {fault.id} failed (left in the ledger for "
                             f"'chaos heal'): {'; '.join(errors)}")
        self.ledger.clear(fault.id)
        if fault in self.open:
            self.open.remove(fault)
        self._event("fault.revert", fault=fault.id)

    def revert_all(self) -> None:
        errors = []
        for fault in reversed(list(self.open)):
            try:
                self.revert(fault)
            except FaultError as exc:
                errors.append(str(exc))
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
    healed, errors = [], []
    for entry in reversed(list(ledger.open_faults())):
        fault = Fault.from_json(entry["fault"])
        try:
            Faults(site_for(entry.get("inventory")), ledger=ledger).revert(fault)
            healed.append(fault.id)
        except HarnessError as exc:
            errors.append(f"{fault.id}: {exc}")
    return healed, errors
