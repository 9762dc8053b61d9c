"""What every recovery procedure shares: a Plan of Steps (printable before it runs), one
executor that journals each Step and waits for the condition it names, and the
procedure in words, which is what a dry run shows of it."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

from chaos import dryrun
from chaos.errors import HarnessError, RecoveryError
from chaos.inventory import Site
from chaos.journal import Event, Journal
from chaos.steps import Await, Step
from chaos.wait import wait_for

Condition = Callable[[Site, Await], tuple[bool, object]]

# how long a member alive but not answering is given to answer again before it is killed:
# longer than a failure detector (Galera's evs.inactive_timeout is 15 s by default), short
# enough for a 3 a.m. runbook
SILENT_GRACE = 20.0

# /proc/PID/stat state letters, in an operator's words
PROCESS_STATES = {
    "R": "running", "S": "sleeping", "D": "stuck in uninterruptible I/O (D)",
    "T": "stopped by a signal (T)", "t": "stopped by a tracer (t)", "Z": "zombie",
    "I": "idle",
}


def process_state(letter: str) -> str:
    return PROCESS_STATES.get(letter, f"state {letter or '?'}")


@dataclass(frozen=True)
class Silent:
    """A member whose process is alive but which does not answer: the gray failure no
    kill ever restarts. What was seen, so the plan can say which and why."""

    name: str
    pid: int
    state: str  # the /proc state, in words
    reason: str  # what the last look at it said (the probe's error)

    def describe(self) -> str:
        return (f"{self.name}: process {self.pid} alive ({self.state}) but not answering"
                + (f": {self.reason}" if self.reason else ""))


def await_or_kill(pid: int, answers: str, what: str, grace: float = SILENT_GRACE) -> str:
    """Shell: give a silent member ``grace`` seconds to answer (``answers`` is a shell test),
    then SIGKILL it (SIGTERM does nothing to a stopped process) and wait, bounded, until it
    is gone. Prints ANSWERED, GONE or KILLED; fails if it outlives the kill (a process stuck
    in D state dies only when its I/O returns)."""
    from chaos.steps import ALIVE

    # a deadline, not a count: each look may itself take seconds on a hung member
    return (ALIVE + f"end=$(( $(date +%s) + {max(1, int(grace))} )); "
            "while [ $(date +%s) -lt $end ]; do "
            f"if {answers}; then echo ANSWERED; exit 0; fi; "
            f"if ! alive {pid}; then echo GONE; exit 0; fi; sleep 1; done; "
            f"kill -s KILL {pid} 2>/dev/null; j=0; "
            f"while alive {pid} && [ $j -lt 150 ]; do sleep 0.2; j=$((j+1)); done; "
            f"if alive {pid}; then echo {shlex.quote(what + ': still alive after SIGKILL')} "
            ">&2; exit 1; fi; "
            "echo KILLED")

# the situation of a plan made in a dry run: known only once the faults are in place
AT_RUN_TIME = "known at run time"


@dataclass
class Plan:
    procedure: str
    situation: str
    steps: list[Step] = field(default_factory=list)
    bootstrap: str | None = None
    why: str = ""
    refused: str | None = None
    # a dry run could not decide: what the real run learns first (never executed)
    pending: str | None = None
    notes: list[str] = field(default_factory=list)
    # members alive but silent: the steps only settle them (answer, or killed), and the
    # procedure then observes again and plans the rest (``replan``)
    silent: list[Silent] = field(default_factory=list)
    # silent members settled in earlier rounds of the same recovery (see ``rounds``)
    settled: list[Silent] = field(default_factory=list)
    # the condition that ends it, where it is not the procedure's own (a take-over of a
    # platform's cluster waits for the members that can run)
    final: Await | None = None
    # the platform recovered the cluster (``clusters.<service>.recovered_by: platform``):
    # the harness watched, and its own procedure ran no step
    by_platform: bool = False

    @property
    def replan(self) -> bool:
        return bool(self.silent) and not self.refused

    def details(self) -> list[str]:
        """Procedure-specific lines shown before the steps (e.g. Galera's positions)."""
        return []

    def render(self) -> str:
        lines = [f"{self.procedure}: situation: {self.situation}", *self.details()]
        if self.bootstrap:
            lines.append(f"chosen node: {self.bootstrap} ({self.why})")
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"silent: {m.describe()}" for m in self.silent]
        if self.replan:
            lines.append(f"each silent member is given {SILENT_GRACE:.0f}s to answer, then "
                         "killed (SIGKILL); then the procedure observes again and plans the "
                         "rest")
        if self.refused:
            lines.append(f"REFUSED: {self.refused}")
        elif self.pending:
            lines.append(f"DECIDED AT RUN TIME: {self.pending}")
        elif not self.steps and not self.by_platform:
            lines.append("nothing to do: healthy")
        lines += [f"step {i}: {s.describe()}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines)


P = TypeVar("P", bound=Plan)

# what a procedure waits for at the end unless it names its own
EVERY_MEMBER_HEALTHY = Await("healthy")


@dataclass(frozen=True)
class Procedure:
    """A procedure in words: what it observes, how it decides, when it is done; and the
    condition its executor waits for at the end. A dry run can show no more than this:
    the plan itself depends on what is observed after the faults."""

    name: str
    observes: str
    decides: str
    done: str
    final: Await = EVERY_MEMBER_HEALTHY
    final_timeout: float = 90.0

    def rehearse(self, part: Literal["observe", "plan", "execute", "recover"], *,
                 on: str | None = None) -> bool:
        """In a dry run: add ``part`` ("observe", "plan", "execute" or "recover", the
        three at once) to the plan and return True. In a real run: False."""
        rehearsal = dryrun.active()
        if rehearsal is None:
            return False
        head = f"recover {self.name}" + (f" on {on}" if on else "")
        later = (f"(the plan itself is shown at run time, or by `chaos recover {self.name} "
                 "--dry-run` at that point)")
        rehearsal.step({
            "observe": f"{head}: observe {self.observes}",
            "plan": f"{head}: decide: {self.decides}\n{later}",
            "execute": f"{head}: run the plan step by step, awaiting each step; done when "
                       f"{self.done}",
            "recover": f"{head} {later}\n  observe: {self.observes}\n"
                       f"  decide: {self.decides}\n  done when: {self.done}",
        }[part])
        return True

    def rehearsed(self, kind: type[P]) -> P:
        """The Plan a dry run hands back: no steps, its situation known at run time."""
        return kind(self.name, AT_RUN_TIME)


def execute(site: Site, plan: Plan, condition: Condition, procedure: Procedure, *,
            journal: Journal | None = None,
            confirm: Callable[[Step], None] | None = None) -> None:
    """Run the plan Step by Step (``confirm`` is called before each), wait where a Step
    says so, then wait for the procedure's ``final`` condition."""
    if procedure.rehearse("execute"):
        return
    final, final_timeout = plan.final or procedure.final, procedure.final_timeout
    if plan.refused:
        raise RecoveryError(f"{plan.procedure}: refused: {plan.refused}")
    if plan.pending:
        raise RecoveryError(f"{plan.procedure}: a plan made read-only cannot run: {plan.pending}")
    # runbook mode reaches procedures through the scenario's journal
    if confirm is None and journal is not None:
        confirm = journal.confirm

    def event(name: Event, **data: Any) -> None:
        if journal is not None:
            journal.event(name, **data)

    event(Event.RECOVERY_START, procedure=plan.procedure, situation=plan.situation,
          chosen=plan.bootstrap)
    for step in plan.steps:
        if confirm is not None:
            confirm(step)
        event(Event.RECOVERY_STEP, procedure=plan.procedure, target=step.target,
              command=step.command, effect=step.effect)
        try:
            step.execute(site)
            if step.wait:
                wait_for(partial(condition, site, step.wait), what=step.wait.describe(),
                         timeout=step.wait_timeout, interval=0.1)
        except HarnessError as exc:
            event(Event.RECOVERY_FAILED, procedure=plan.procedure, error=str(exc))
            raise RecoveryError(f"{plan.procedure}: step failed: {step.effect}: {exc}") from exc
    if plan.replan:
        event(Event.RECOVERY_REPLAN, procedure=plan.procedure,
              silent=[m.name for m in plan.silent])
        return
    wait_for(partial(condition, site, final), what=final.describe(), timeout=final_timeout,
             interval=0.1)
    event(Event.RECOVERY_DONE, procedure=plan.procedure)


ROUNDS = 3


def rounds(observe_and_plan: Callable[[], P], run: Callable[[P], None],
           show: Callable[[P], None] | None = None) -> P:
    """Observe, plan and run, again while a plan only settled silent members (bounded:
    ``ROUNDS``). Returns the last plan."""
    settled: list[Silent] = []
    for _ in range(ROUNDS):
        plan = observe_and_plan()
        plan.settled = list(settled)
        if show is not None:
            show(plan)
        run(plan)
        if not plan.replan:
            return plan
        settled += plan.silent
    raise RecoveryError(f"{plan.procedure}: members still silent after {ROUNDS} rounds: "
                        + ", ".join(m.name for m in plan.silent))
