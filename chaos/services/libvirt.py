"""libvirt's client side: a bounded call to a libvirtd, and what identifies a VM across
a libvirtd restart.

libvirt-python is imported at the first call, not at import time: planning, dry runs
and ``inventory check`` need none of it.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from chaos.errors import ConfigError, ServiceError
from chaos.inventory import Compute, Docker
from chaos.inventory import Libvirt as LibvirtNode
from chaos.services import Placement, Process
from chaos.steps import ALIVE, Step
from chaos.targets import Where, host_target
from chaos.targets.base import Action, quote

if TYPE_CHECKING:
    from chaos.inventory import Controller, Site

T = TypeVar("T")


@dataclass(frozen=True)
class DomainIdentity:
    """What identifies a running VM across a libvirtd restart: same pid and start time."""

    name: str
    uuid: str
    id: int  # -1 when not running
    state: str
    qemu_pid: int | None  # in the PID namespace of the host, whatever the container's
    start_ticks: int | None


# virDomainState, as libvirt's own tools name the states
STATE_NAMES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}

# One blocked call per URI at most: a libvirtd that is SIGSTOPped accepts the TCP
# connection (the kernel does) and then never answers, and a libvirt-python call cannot be
# cancelled, so a timed-out call leaves its thread behind until libvirtd answers or dies.
# Refusing new calls while one is stuck keeps that leak to one thread per URI.
_stuck: dict[str, threading.Thread] = {}
_stuck_lock = threading.Lock()
_quiet = threading.Event()


def module() -> Any:
    """The ``libvirt`` module, its default error printing silenced."""
    import libvirt

    if not _quiet.is_set():
        # libvirt's default handler prints every error to stderr, including the expected
        # "connection refused" of each poll; the exceptions carry the same text.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _quiet.set()
    return libvirt


def with_libvirt(uri: str, work: Callable[[Any], T], *, timeout: float, what: str) -> T:
    """Open ``uri``, run ``work(conn)``, close; never longer than ``timeout`` seconds.
    A libvirtd that does not answer in time, or answers with an error, raises
    :class:`ServiceError` naming the URI and ``what`` was asked."""
    libvirt = module()
    with _stuck_lock:
        previous = _stuck.get(uri)
        if previous is not None:
            if previous.is_alive():
                raise ServiceError(f"libvirt at {uri}: an earlier call is still blocked")
            del _stuck[uri]
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            conn = libvirt.open(uri)
            try:
                box["value"] = work(conn)
            finally:
                with contextlib.suppress(Exception):
                    conn.close()
        except Exception as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"libvirt {uri}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        with _stuck_lock:
            _stuck[uri] = thread
        raise ServiceError(f"libvirt at {uri} did not answer within {timeout:.1f}s ({what})")
    if "error" in box:
        exc = box["error"]
        message = exc.get_error_message() if hasattr(exc, "get_error_message") else str(exc)
        raise ServiceError(f"libvirt at {uri}: {what}: {message}") from exc
    return cast(T, box["value"])


# One read of a compute host's process table, however many domains it runs: pgrep, in C,
# matches the host's domains' UUIDs in every command line at once and lists only those;
# then a line "<uuid> <pid> <start ticks>" for each live one. qemu's command line is the
# same from every PID namespace, so this works whatever libvirt's container does. (main
# used one `pgrep -f` per domain: 14 ms a domain, 35 s for the seed's 1000 VMs.)
def qemu_table(uuids: list[str]) -> str:
    """Shell for the live qemu processes of ``uuids``, read on the host."""
    pattern = "-uuid (" + "|".join(re.escape(u) for u in uuids) + ")( |$)"
    return (quote("pgrep -a -f -- %s", pattern) + " | "
            "awk '{for(i=2;i<NF;i++) if($i==\"-uuid\"){print $1, $(i+1); next}}' | "
            "while read -r p u; do { read -r s < /proc/$p/stat; } 2>/dev/null || continue; "
            "s=${s##*\") \"}; set -- $s; [ \"$1\" = Z ] && continue; shift 19; "
            "echo \"$u $p $1\"; done")


def parse_qemu_table(text: str) -> dict[str, tuple[int, int]]:
    """uuid -> (qemu pid, start ticks), from ``QEMU_TABLE``'s output."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            found[parts[0].lower()] = (int(parts[1]), int(parts[2]))
    return found


def host_domains(site: Site, host_name: str, *, timeout: float = 5.0,
                 with_pids: bool = True) -> list[DomainIdentity]:
    """Every domain of a compute host, with its qemu pid and start time read on the host
    itself (through its target): one libvirt call and one process-table read. Without
    ``with_pids``, libvirt's answer alone (no qemu pid, no start time)."""
    host = site.host(host_name)
    if not isinstance(host, Compute) or host.libvirt is None:
        raise ConfigError(f"host {host_name} has no libvirt in the inventory")
    libvirt = module()

    def listing(conn: Any) -> list[tuple[str, str, int, int]]:
        # one RPC for every domain's state (name, UUID and ID come with the handle)
        return [(d.name(), d.UUIDString(), d.ID(), int(stats.get("state.state", 0)))
                for d, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE)]

    listed = with_libvirt(host.libvirt.uri, listing, timeout=timeout,
                          what=f"list domains on {host_name}")
    if not with_pids:
        return [DomainIdentity(name, uuid, dom_id, STATE_NAMES.get(state, str(state)), None,
                               None) for name, uuid, dom_id, state in sorted(listed)]
    pids: dict[str, tuple[int, int]] = {}
    live = [uuid for _, uuid, dom_id, _ in listed if dom_id >= 0]
    if live:
        out = host_target(site, host_name, need="read its VMs' qemu pids").run(
            qemu_table(live), timeout=timeout)
        pids = parse_qemu_table(out.stdout)
    return [DomainIdentity(name=name, uuid=uuid, id=dom_id,
                           state=STATE_NAMES.get(state, str(state)),
                           qemu_pid=pids[uuid.lower()][0] if dom_id >= 0 and uuid.lower()
                           in pids else None,
                           start_ticks=pids[uuid.lower()][1] if dom_id >= 0 and uuid.lower()
                           in pids else None)
            for name, uuid, dom_id, state in sorted(listed)]


def libvirtd_pid(docker_socket: str, placement: Placement) -> str:
    """Shell run on the compute host: sets ``$pid`` to libvirtd's pid in the host's PID
    namespace (the libvirt container's main process), or fails. The container is the
    inventory's ``docker://HOST/NAME``, or in a pod (``k8s://NAMESPACE/…``) the pod's
    container named ``libvirt``, found on the node's docker by the kubelet's labels."""
    docker = quote("docker -H %s ", docker_socket)
    inspect = quote("inspect -f %s", "{{.State.Pid}}")
    if placement.in_pod:
        ident = f"id=$({_pod_container(docker, placement)} | head -n 1) && [ -n \"$id\" ] && "
        return ident + f"pid=$({docker}{inspect} \"$id\") && [ \"$pid\" -gt 0 ]"
    assert placement.url is not None
    name = placement.url.rsplit("/", 1)[-1]
    return f"pid=$({docker}{inspect} {quote('%s', name)}) && [ \"$pid\" -gt 0 ]"


def _pod_container(docker: str, placement: Placement) -> str:
    """Shell: the id of the libvirt container of the pod, on the node's docker."""
    return docker + quote("ps -q --filter label=io.kubernetes.pod.namespace=%s "
                          "--filter label=io.kubernetes.container.name=libvirt",
                          placement.namespace)


class Libvirt:
    """libvirtd of a compute host: in a container (docker or a pod), started by its
    container, with faults of its own; or a process of the host (``pidfile``, ``start``),
    to which the generic process faults apply. No cluster either way."""

    name = "libvirt"
    quorum = False
    ports = None  # not partitioned apart from its host
    kinds = frozenset({"kill", "freeze", "kill-container", "delete-pod", "drain"})

    def runs_on(self, host: Controller | Compute) -> bool:
        return isinstance(host, Compute) and host.libvirt is not None

    def _node(self, host: Controller | Compute) -> tuple[Compute, LibvirtNode]:
        if not isinstance(host, Compute) or host.libvirt is None:
            raise ConfigError(f"host {host.name} has no libvirt service in the inventory")
        return host, host.libvirt

    def _container(self, host: Controller | Compute) -> tuple[Compute, str, Docker]:
        """The host, the URL of libvirt's container (or pod), and the host's docker."""
        compute, libvirt = self._node(host)
        if libvirt.container is None or compute.docker is None:
            raise ConfigError(f"host {host.name} has no libvirt container in the inventory "
                              "(its libvirtd is a process of the host)")
        return compute, libvirt.container, compute.docker

    def placement(self, host: Controller | Compute) -> Placement:
        _, libvirt = self._node(host)
        if libvirt.container is None:
            return Placement(Where.HOST)
        return Placement.at(libvirt.container)

    def process(self, site: Site, host: Controller | Compute) -> Process:
        compute, libvirt = self._node(host)
        if libvirt.container is not None:
            # its container starts it: the faults of its own below act on that
            raise ConfigError(f"host {host.name}: libvirtd runs in {libvirt.container}, "
                              "not as a process of the host")
        where = host_target(site, compute.name, need="act on its libvirtd").url
        return Process.of(host.name, self.name, where, libvirt.pidfile, libvirt.start, None)

    def oracle(self, site: Site) -> None:
        # VMs are proven by two snapshots around the fault (chaos.expect.vm_verdict), not
        # by a workload running beside it
        return None

    def lanes(self, site: Site, *, timeout: float = 1.5) -> dict[str, str]:
        from chaos.fanout import gather

        hosts = [c.name for c in site.computes if c.libvirt]
        # libvirt's word alone, no process-table read over ssh: half the cost of a
        # sample at 50 hosts (bench/scale.py). A qemu libvirt restarts gets a new domain
        # id, which the lane shows; whether each qemu survived is the oracle's to prove.
        gathered = gather(hosts, lambda h: host_domains(site, h, timeout=timeout,
                                                        with_pids=False),
                          deadline=2 * timeout + 0.5)
        out = {f"libvirt/{host}": "down" for host in gathered.errors}
        for host, doms in gathered.results.items():
            out[f"libvirt/{host}"] = "running"
            for dom in doms:
                out[f"vm/{host}/{dom.name}"] = (f"{dom.state} id {dom.id}" if dom.id >= 0
                                                 else dom.state)
        return out

    def fault_steps(self, site: Site, kind: str, host: Controller | Compute,
                    fault_id: str) -> tuple[list[Step], list[Step]] | None:
        compute, libvirt = self._node(host)
        if libvirt.container is None:
            if kind in ("kill", "freeze"):
                return None  # a process of the host, like any other
            raise ConfigError(f"{kind}: libvirtd on {host.name} is a process of the host, "
                              "in no container or pod")
        if kind == "freeze":
            return self._freeze(site, compute)
        if kind in ("kill", "kill-container"):
            if self.placement(compute).in_pod:
                return self._kill_in_pod(site, compute, container=kind == "kill-container")
            return self._kill(site, compute, container=kind == "kill-container")
        return None

    def _kill(self, site: Site, host: Compute, *, container: bool) -> tuple[list[Step], list[Step]]:
        from chaos.targets.docker import parse

        _, url, daemon = self._container(host)
        _, name = parse(url)
        where = host_target(site, host.name, need="kill and restart its libvirt container").url
        docker = quote("docker -H %s ", daemon.socket)
        if container:
            inject = [Step(where, docker + quote("kill -s KILL %s", name),
                           f"the libvirt container on {host.name} is killed")]
        else:
            inject = [Step(where, docker + quote("inspect -f '{{.State.Pid}}' %s", name)
                           + " | xargs -r kill -s KILL",
                           f"libvirtd on {host.name} is gone (SIGKILL)")]
        revert = [Step(where, docker + quote("start %s", name),
                       f"the libvirt container on {host.name} runs again", timeout=60)]
        return inject, revert

    def _freeze(self, site: Site, host: Controller | Compute) -> tuple[list[Step], list[Step]]:
        """libvirtd stopped (SIGSTOP) and left so: alive, holding its socket, answering
        nobody. The revert thaws whatever process is libvirtd then (a recovery may have
        replaced it)."""
        compute, _, daemon = self._container(host)
        where = host_target(site, compute.name, need="freeze its libvirtd").url
        pid = libvirtd_pid(daemon.socket, self.placement(compute))
        inject = [Step(where, pid + " && kill -s STOP \"$pid\"",
                       f"libvirtd on {compute.name} is frozen (SIGSTOP)")]
        revert = [Step(where, "{ " + pid + " && kill -s CONT \"$pid\"; } || true",
                       f"libvirtd on {compute.name} runs again (SIGCONT)")]
        return inject, revert

    def _kill_in_pod(self, site: Site, host: Compute, *,
                     container: bool) -> tuple[list[Step], list[Step]]:
        """libvirt in a pod, killed from the node as a crash would: libvirtd (SIGKILL to
        the container's main process, a host PID with hostPID) or the whole container on
        the node's docker. Done only once libvirtd is gone (bounded wait), so what
        follows never sees it still answering. The kubelet restarts the container by
        itself; the revert waits for it Ready."""
        _, _, daemon = self._container(host)
        placement = self.placement(host)
        assert placement.url is not None
        url = placement.url
        docker = quote("docker -H %s ", daemon.socket)
        pid = (f"id=$({_pod_container(docker, placement)} | head -n 1) && [ -n \"$id\" ] && "
               f"pid=$({docker}inspect -f {quote('%s', '{{.State.Pid}}')} \"$id\") && ")
        kill = (docker + "kill -s KILL \"$id\"") if container else "kill -s KILL \"$pid\""
        gone = (" && i=0 && while alive \"$pid\" && [ $i -lt 80 ]; do sleep 0.25; "
                "i=$((i+1)); done; ! alive \"$pid\"")
        node = host_target(site, host.name, need="kill libvirt from the node").url
        inject = [Step(node, ALIVE + pid + kill + gone,
                       f"the libvirt container on {host.name} is killed" if container
                       else f"libvirtd on {host.name} is gone (SIGKILL)", timeout=40)]
        # the kubelet's crash-loop back-off reaches 5 min when a container dies again and
        # again; recovery deletes the pod instead of waiting (recovery/libvirt.py)
        revert = [Step(url, f"wait for a Ready pod behind {url}", "the kubelet restarted the "
                       f"libvirt container on {host.name} and it is Ready",
                       action=Action.AWAIT_READY, timeout=330)]
        return inject, revert


SERVICE = Libvirt()
