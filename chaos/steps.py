"""Steps: one action on one target, as data. Printable before it runs.

Faults and recovery procedures are plans of Steps before they are actions, so a dry run
prints the plan, a runbook asks before each Step, and the journal records each one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from chaos.dryrun import refuse
from chaos.errors import ConfigError
from chaos.targets import CommandResult, Target, for_url
from chaos.targets.base import Action, quote

if TYPE_CHECKING:
    from chaos.inventory import Site


# what a procedure can wait for after a step; each procedure's ``_condition`` knows its own
AwaitKind = Literal["synced", "primary", "healthy", "running", "stopped", "answers", "all"]


@dataclass(frozen=True)
class Await:
    """A condition to wait for: ``kind`` of ``node``, or of every member (node "")."""

    kind: AwaitKind
    node: str = ""

    def describe(self) -> str:
        # the words plans have always printed ("synced:ctl2", "healthy:")
        return f"{self.kind}:{self.node}"

    @classmethod
    def parse(cls, text: str) -> Await:
        kind, _, node = text.partition(":")
        if kind not in get_args(AwaitKind):
            raise ConfigError(f"{text!r}: not a wait condition")
        return cls(kind, node)  # type: ignore[arg-type]  # checked just above


@dataclass(frozen=True)
class Step:
    target: str  # URL of where the command runs
    command: str  # the exact shell command
    effect: str  # what should be true afterwards, in an operator's words
    timeout: float = 30.0
    must_succeed: bool = True
    # a condition the procedure waits for after the command, e.g. Galera's node synced
    wait: Await | None = None
    wait_timeout: float = 90.0
    # an API action instead of a shell command, for targets that have one; ``command``
    # then describes it
    action: Action | None = None
    # the service the step acts on, where a fault acts on several (a power-off)
    service: str | None = None
    # what an action acts on: a crash's process (its name in the node's process table),
    # a cluster reboot's state ConfigMap
    subject: str | None = None

    def describe(self) -> str:
        text = f"[{self.target}] {self.command}\n    expect: {self.effect}"
        if self.wait:
            text += f" (then wait for {self.wait.describe()}, up to {self.wait_timeout:.0f}s)"
        return text

    def to_json(self) -> dict[str, Any]:
        # plain strings, as ledgers written before these were types hold them
        return {**asdict(self), "wait": self.wait.describe() if self.wait else None,
                "action": str(self.action) if self.action else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Step:
        wait, action = data.get("wait"), data.get("action")
        return cls(**{**data, "wait": Await.parse(wait) if wait else None,
                      "action": Action(action) if action else None})

    def execute(self, site: Site | None) -> CommandResult:
        refuse(f"the step `{self.command}` on {self.target}")
        target = for_url(self.target, site)
        if self.action is not None:
            result = _act(target, self.action, timeout=self.timeout, subject=self.subject)
        else:
            result = target.run(self.command, timeout=self.timeout)
        return result.check() if self.must_succeed else result


def _act(target: Target, action: Action, *, timeout: float,
         subject: str | None = None) -> CommandResult:
    """An API action: only the Kubernetes target has them."""
    from chaos.targets.k8s import K8sTarget

    if not isinstance(target, K8sTarget):
        raise ConfigError(f"{target.url}: no action {str(action)!r} on this target")
    return target.act(action, timeout=timeout, subject=subject)


# is a PID alive and not a zombie (PID 1 here may never reap killed orphans)
ALIVE = ("alive() { case \"$1\" in ''|*[!0-9]*) return 1;; esac; "
         "s=$(sed 's/.*) //' /proc/$1/stat 2>/dev/null | cut -d' ' -f1); "
         "[ -n \"$s\" ] && [ \"$s\" != Z ]; }; ")


# shell: "procinfo PID" prints the process's state letter and its age in seconds
PROC_INFO = ("procinfo() { s=$(sed 's/.*) //' /proc/$1/stat 2>/dev/null) || return 1; "
             "set -- $s; st=$1; shift 19; "
             "echo \"$st $(( $(cut -d. -f1 /proc/uptime) - $1 / $(getconf CLK_TCK) ))\"; }; ")


def port_released(address: str, port: int, *, seconds: float = 30.0) -> str:
    """Shell: wait, bounded, until nothing listens on ``address:port`` any more. An old
    instance still shutting down keeps its listeners, and a new one dies on them
    (eaddrinuse, "bind: Address already in use"): a start waits for the release first."""
    rounds = max(1, int(seconds * 2))
    return (f"i=0; while [ $i -lt {rounds} ] && ss -Hltn 'sport = :{port}' 2>/dev/null "
            f"| grep -qF '{address}:{port}'; do sleep 0.5; i=$((i+1)); done; ")


def detached(command: str, log: str) -> str:
    """A shell command that starts ``command`` in its own session, output to ``log``,
    and returns at once (the daemon outlives the ssh session or the harness)."""
    return quote("setsid -f sh -c %s", quote("exec >>%s 2>&1 </dev/null; ", log) + command)


def restart_log(pidfile: str) -> str:
    """Where a service started again by the harness writes its output: beside its
    pidfile, so each service's restarts are found with its other run files."""
    return pidfile.rsplit("/", 1)[0] + "/chaos-restart.log"


# shell: "owns PID FILE": PID is alive and started no later than FILE was last written,
# so it is the process that wrote it. pid_max is 32768 here: over a long run a killed
# daemon's PID is handed to some other process, and a bare liveness test then mistook a
# stranger for the daemon and skipped its start (seen once in CI, after a wipe).
OWNS = ALIVE + ("owns() { alive \"$1\" || return 1; "
                "st=$(sed 's/.*) //' /proc/$1/stat 2>/dev/null | cut -d' ' -f20); "
                "bt=$(awk '/^btime/{print $2}' /proc/stat); hz=$(getconf CLK_TCK); "
                "m=$(stat -c %Y \"$2\" 2>/dev/null) || return 0; "
                "[ $(( bt + st / hz )) -le $(( m + 2 )) ]; }; ")


def start_unless_running(pidfile: str, command: str, log: str) -> str:
    """Start ``command`` detached unless the process in ``pidfile`` is alive and is the
    one that wrote it: idempotent. A stale pidfile goes first: dockerd refuses to start
    while its old PID exists, and a killed daemon never reaped by PID 1 exists as a
    zombie."""
    return (OWNS + quote("if pid=$(cat %s 2>/dev/null) && owns \"$pid\" %s; then :; "
                         "else rm -f %s; ", pidfile, pidfile, pidfile)
            + detached(command, log) + "; fi")
