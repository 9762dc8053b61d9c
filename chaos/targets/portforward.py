"""A pod's port, reached as ``kubectl port-forward`` reaches it: through the API server.

A site's Galera and RabbitMQ pods on a pod network have addresses the harness has no
route to when it runs outside the cluster (inventory ``reach: port-forward``). A
:class:`Forward` listens on this machine's loopback; each connection it accepts is
relayed over one API port-forward stream to the port in the pod the target URL names
(found again for every connection, so a recreated pod is still reached). Clients
(pymysql, pika, HTTP) connect to ``forward.address`` as to any host.

Bounded: every stream is opened with a request timeout, a relay ends after ``IDLE``
seconds without traffic either way, and at most ``MAX_CONNECTIONS`` relays run at once.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from typing import Any

from chaos.dryrun import refuse
from chaos.targets.base import TargetUnreachable

IDLE = 300.0  # a relay with no traffic either way for this long is closed
MAX_CONNECTIONS = 16
OPEN_TIMEOUT = 10.0

_forwards: dict[tuple[str, str, int], Forward] = {}
_lock = threading.Lock()


class Forward:
    """One local listener for one (pod target, port)."""

    def __init__(self, target: Any, port: int) -> None:
        self.target = target  # a K8sTarget
        self.port = port
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.address: tuple[str, int] = self._listener.getsockname()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True,
                         name=f"port-forward {target.url}:{port}").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._closed.is_set():
                    return
                # out of file descriptors or threads for a moment (a burst of relays):
                # the listener must outlive it, or every later connection would hang
                time.sleep(0.2)
                continue
            if not self._slots.acquire(blocking=False):
                conn.close()  # too many at once: the client sees a reset, not a hang
                continue
            try:
                threading.Thread(target=self._relay, args=(conn,), daemon=True).start()
            except RuntimeError:  # no thread to be had: the client sees a reset
                conn.close()
                self._slots.release()

    def open_stream(self) -> Any:
        """A socket-like end of one port-forward stream to the pod's port."""
        from kubernetes.stream import portforward

        pod = self.target.pod()
        try:
            # the target's own client for websocket calls, one at a time (see K8sTarget)
            with self.target.stream_lock:
                stream = portforward(
                    self.target.streams.connect_get_namespaced_pod_portforward,
                    pod.metadata.name, self.target.namespace, ports=str(self.port),
                    _request_timeout=OPEN_TIMEOUT)
        except Exception as exc:
            raise TargetUnreachable(f"{self.target.url}: port-forward to {self.port}: "
                                    f"{type(exc).__name__}: {exc}") from None
        return stream

    def _relay(self, conn: socket.socket) -> None:
        try:
            stream = self.open_stream()
        except Exception:
            conn.close()
            self._slots.release()
            return
        remote = stream.socket(self.port)
        remote.setblocking(False)
        conn.setblocking(False)
        try:
            _pump(conn, remote)
        finally:
            for end in (conn, remote):
                with contextlib.suppress(OSError):
                    end.close()
            with contextlib.suppress(Exception):
                stream.close()
            self._slots.release()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()


def _pump(a: Any, b: Any) -> None:
    """Copy both ways until either end closes or nothing moves for IDLE seconds."""
    ends = {a.fileno(): (a, b), b.fileno(): (b, a)}
    while True:
        readable, _, _ = select.select(list(ends), [], [], IDLE)
        if not readable:
            return
        for fd in readable:
            src, dst = ends[fd]
            try:
                data = src.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                dst.setblocking(True)
                dst.sendall(data)
                dst.setblocking(False)
            except OSError:
                return


def forward(target: Any, port: int) -> tuple[str, int]:
    """The local address that reaches ``port`` of ``target``'s pod (one listener per
    target and port for the whole run)."""
    refuse(f"a port-forward to {target.url}:{port}")
    key = (str(target.api.configuration.host), target.url, port)
    with _lock:
        found = _forwards.get(key)
        if found is None:
            found = _forwards[key] = Forward(target, port)
    return found.address
