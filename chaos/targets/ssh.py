"""``ssh://user@host:port``: a host reached with fabric (paramiko underneath)."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import paramiko
from fabric import Connection
from invoke.exceptions import CommandTimedOut

from chaos.targets.base import CommandResult, Target, TargetUnreachable

CONNECT_TIMEOUT = 5.0

# One connection per (URL, key) for the harness's whole run. A new paramiko connection
# costs a key exchange (~0.1 s of the harness's CPU here); a 50-host site sampled each
# second cannot afford one per call.
_shared: dict[tuple[str, str | None], SshTarget] = {}
_shared_lock = threading.Lock()


class SshTarget(Target):
    scheme = "ssh"

    def __init__(self, url: str, *, key_file: str | None = None) -> None:
        super().__init__(url)
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"{url}: no host")
        self.host = parts.hostname
        self.user = parts.username or "root"
        self.port = parts.port or 22
        self.key_file = key_file
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, url: str, *, key_file: str | None = None) -> SshTarget:
        """The process-wide target for ``url`` and ``key_file``, its connection reused."""
        with _shared_lock:
            target = _shared.get((url, key_file))
            if target is None:
                target = _shared[(url, key_file)] = cls(url, key_file=key_file)
            return target

    def _connection(self) -> Connection:
        if self._conn is None:
            kwargs: dict[str, object] = {"banner_timeout": CONNECT_TIMEOUT,
                                         "auth_timeout": CONNECT_TIMEOUT}
            if self.key_file:
                kwargs.update(key_filename=self.key_file, look_for_keys=False, allow_agent=False)
            self._conn = Connection(self.host, user=self.user, port=self.port,
                                    connect_timeout=CONNECT_TIMEOUT, connect_kwargs=kwargs)
        return self._conn

    def _run(self, command: str, timeout: float) -> CommandResult:
        with self._lock:  # one channel at a time on a shared connection
            # a reused connection may have died with the peer's sshd (a host powered off
            # and back): then the channel never opened, and one fresh attempt is honest
            attempts = 2 if self._conn is not None and self._conn.is_connected else 1
            for attempt in range(attempts):
                try:
                    result = self._connection().run(command, hide=True, warn=True,
                                                    timeout=timeout, in_stream=False)
                    break
                except CommandTimedOut:
                    self.close()
                    raise TargetUnreachable(
                        f"{self.url}: `{command}` did not finish within {timeout:.0f}s"
                    ) from None
                except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
                    self.close()
                    if attempt + 1 == attempts:
                        raise TargetUnreachable(
                            f"{self.url}: {type(exc).__name__}: {exc}") from None
        return CommandResult(self.url, command, result.exited, result.stdout, result.stderr)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
