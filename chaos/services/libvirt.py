"""libvirt's client side: a bounded call to a libvirtd, and what identifies a VM across
a libvirtd restart.

libvirt-python is imported at the first call, not at import time: planning, dry runs
and ``inventory check`` need none of it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from chaos.errors import ConfigError, ServiceError
from chaos.inventory import Compute, Docker
from chaos.inventory import Libvirt as LibvirtNode
from chaos.services import Placement, Process
from chaos.steps import ALIVE, Step
from chaos.targets import host_target
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
    """libvirtd in a container (docker or a pod) of a compute host: no cluster, no
    process the harness starts itself (its container does), faults of its own."""

    name = "libvirt"
    quorum = False
    ports = None  # not partitioned apart from its host
    kinds = frozenset({"kill", "freeze", "kill-container", "delete-pod", "drain"})

    def runs_on(self, host: Controller | Compute) -> bool:
        return isinstance(host, Compute) and host.libvirt is not None

    def _container(self, host: Controller | Compute) -> tuple[Compute, LibvirtNode, Docker]:
        if not isinstance(host, Compute) or host.libvirt is None or host.docker is None:
            raise ConfigError(f"host {host.name} has no libvirt container in the inventory")
        return host, host.libvirt, host.docker

    def placement(self, host: Controller | Compute) -> Placement:
        if not isinstance(host, Compute) or host.libvirt is None:
            raise ConfigError(f"host {host.name} has no libvirt service in the inventory")
        return Placement.at(host.libvirt.container)

    def process(self, site: Site, host: Controller | Compute) -> Process:
        # its container starts it: the faults of its own below act on that
        raise ConfigError(f"host {host.name} has no libvirt service in the inventory")

    def fault_steps(self, site: Site, kind: str, host: Controller | Compute,
                    fault_id: str) -> tuple[list[Step], list[Step]] | None:
        if kind == "freeze":
            return self._freeze(site, host)
        if kind in ("kill", "kill-container"):
            compute, _, _ = self._container(host)
            if self.placement(compute).in_pod:
                return self._kill_in_pod(site, compute, container=kind == "kill-container")
            return self._kill(site, compute, container=kind == "kill-container")
        return None

    def _kill(self, site: Site, host: Compute, *, container: bool) -> tuple[list[Step], list[Step]]:
        from chaos.targets.docker import parse

        _, libvirt, daemon = self._container(host)
        _, name = parse(libvirt.container)
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
