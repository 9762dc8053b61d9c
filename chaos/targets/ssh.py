"""``ssh://user@host:port``: a host reached with fabric (paramiko underneath)."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import paramiko
from fabric import Connection
from invoke.exceptions import CommandTimedOut

from chaos.targets.base import CommandResult, Target, TargetUnreachable

CONNECT_TIMEOUT = 5.0


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
            try:
                result = self._connection().run(command, hide=True, warn=True, timeout=timeout,
                                                in_stream=False)
            except CommandTimedOut:
                self.close()
                raise TargetUnreachable(
                    f"{self.url}: `{command}` did not finish within {timeout:.0f}s") from None
            except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
                self.close()
                raise TargetUnreachable(f"{self.url}: {type(exc).__name__}: {exc}") from None
        return CommandResult(self.url, command, result.exited, result.stdout, result.stderr)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
