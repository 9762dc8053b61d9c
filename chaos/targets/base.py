"""What every target is: a place where a command runs, a process can be signalled and a
file read. Quoting, results and timeouts live here once; backends only transport."""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum

from chaos.dryrun import refuse
from chaos.errors import EnvironmentProblem, HarnessError


class Action(StrEnum):
    """An API action a Step asks of its target instead of a shell command (the
    Kubernetes target's: on a pod, or on the node a pod runs on)."""

    DELETE_POD = "delete-pod"
    AWAIT_READY = "await-ready"
    DRAIN_NODE = "drain-node"
    UNCORDON_NODE = "uncordon-node"
    # SIGKILL a process of the pod's container from its node's PID namespace: a crash,
    # even of a container's PID 1 (which ignores a SIGKILL sent from inside its pod)
    CRASH = "crash"
    # any other signal sent the same way (``subject``: "SIGNAL process"): a freeze's STOP
    # and its CONT
    SIGNAL = "signal"
    # openstack-helm's MariaDB: mark the cluster for a reboot led by this pod (its state
    # ConfigMap's cluster.state=reboot, reboot.node=the pod): the start scripts then
    # bootstrap from it and join it
    REBOOT_CLUSTER = "reboot-cluster"
    # cut a pod on a pod network from the pods on other nodes, inside its own network
    # namespace (entered from its node), and undo it
    # a lost disk under a pod: the data behind the volume mounted at ``subject`` (a
    # PVC's PV, or a hostPath) deleted on its node, then the pod
    WIPE_POD = "wipe-pod"
    PARTITION_POD = "partition-pod"
    UNPARTITION_POD = "unpartition-pod"


class TargetError(HarnessError):
    """A command on a target failed where it had to succeed."""


class TargetUnreachable(EnvironmentProblem):
    """The target could not be reached at all (connection refused, timed out)."""


@dataclass(frozen=True)
class CommandResult:
    target: str
    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def check(self) -> CommandResult:
        """Raise TargetError naming target, command and the last stderr line unless ok."""
        if not self.ok:
            last = (self.stderr or self.stdout).strip().splitlines()
            raise TargetError(
                f"{self.target}: `{self.command}` exited {self.exit_status}"
                + (f": {last[-1]}" if last else "")
            )
        return self


def quote(command: str, *args: object) -> str:
    """``quote("kill -%s %s", 9, pid)``: every argument is shell-quoted."""
    return command % tuple(shlex.quote(str(a)) for a in args)


class Target(ABC):
    """A place commands run. Subclasses implement :meth:`_run` only."""

    scheme: str = ""

    def __init__(self, url: str) -> None:
        self.url = url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    @abstractmethod
    def _run(self, command: str, timeout: float) -> CommandResult: ...

    def run(self, command: str, *args: object, timeout: float = 30.0) -> CommandResult:
        """Run a shell command (``%s`` placeholders are filled with quoted ``args``)."""
        refuse(f"running a command on {self.url}")
        return self._run(quote(command, *args) if args else command, timeout)

    def check(self, command: str, *args: object, timeout: float = 30.0) -> str:
        """Run, require success, return stdout."""
        return self.run(command, *args, timeout=timeout).check().stdout

    def signal(self, pid: int, signal: str = "KILL", *, timeout: float = 15.0) -> CommandResult:
        return self.run("kill -s %s %s", signal, pid, timeout=timeout)

    def read_file(self, path: str, *, timeout: float = 15.0) -> str:
        return self.check("cat %s", path, timeout=timeout)

