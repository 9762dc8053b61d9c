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
from typing import Any, TypeVar, cast

from chaos.errors import ServiceError

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


def libvirtd_pid(docker_socket: str, container: str) -> str:
    """Shell run on the compute host: sets ``$pid`` to libvirtd's pid in the host's PID
    namespace (the libvirt container's main process), or fails. ``container`` is the
    inventory's ``docker://HOST/NAME`` or ``k8s://NAMESPACE/…`` (the pod's container
    named ``libvirt``, found on the node's docker by the kubelet's labels)."""
    from chaos.targets.base import quote

    docker = quote("docker -H %s ", docker_socket)
    inspect = quote("inspect -f %s", "{{.State.Pid}}")
    if container.startswith("k8s://"):
        namespace = container.removeprefix("k8s://").split("/", 1)[0]
        found = docker + quote("ps -q --filter label=io.kubernetes.pod.namespace=%s "
                               "--filter label=io.kubernetes.container.name=libvirt",
                               namespace)
        ident = f"id=$({found} | head -n 1) && [ -n \"$id\" ] && "
        return ident + f"pid=$({docker}{inspect} \"$id\") && [ \"$pid\" -gt 0 ]"
    name = container.rsplit("/", 1)[-1]
    return f"pid=$({docker}{inspect} {quote('%s', name)}) && [ \"$pid\" -gt 0 ]"
