"""``docker://HOST/CONTAINER``: a container on the docker daemon of a site host.

The docker CLI runs where the daemon is: on the host's own target (ssh when the
inventory gives ssh access, this machine otherwise), pointed at the host's socket.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from chaos.targets.base import CommandResult, Target, quote


def parse(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    container = parts.path.strip("/")
    if parts.scheme != "docker" or not parts.hostname or not container or "/" in container:
        raise ValueError(f"{url}: not docker://HOST/CONTAINER")
    return parts.hostname, container


class DockerTarget(Target):
    scheme = "docker"

    def __init__(self, url: str, *, via: Target, socket: str) -> None:
        super().__init__(url)
        self.host, self.container = parse(url)
        self.via = via
        self.socket = socket

    def docker(self, command: str, *args: object, timeout: float = 30.0) -> CommandResult:
        """Run ``docker -H SOCKET <command>`` on the host (args are quoted)."""
        return self.via.run(quote("docker -H %s ", self.socket) + quote(command, *args)
                            if args else quote("docker -H %s ", self.socket) + command,
                            timeout=timeout)

    def _run(self, command: str, timeout: float) -> CommandResult:
        result = self.docker("exec %s sh -c %s", self.container, command, timeout=timeout)
        return CommandResult(self.url, command, result.exit_status, result.stdout, result.stderr)

    def state(self, *, timeout: float = 15.0) -> str:
        """running, exited, restarting… or 'absent'."""
        result = self.docker("inspect -f {{.State.Status}} %s", self.container, timeout=timeout)
        return result.stdout.strip() if result.ok else "absent"

    def main_pid(self, *, timeout: float = 15.0) -> int:
        out = self.docker("inspect -f {{.State.Pid}} %s", self.container, timeout=timeout)
        return int(out.check().stdout.strip() or 0)

    def kill(self, signal: str = "KILL", *, timeout: float = 30.0) -> CommandResult:
        return self.docker("kill -s %s %s", signal, self.container, timeout=timeout)

    def start(self, *, timeout: float = 60.0) -> CommandResult:
        return self.docker("start %s", self.container, timeout=timeout)
