"""What every recovery procedure shares: a Plan of Steps (printable before it runs), one
executor that journals each Step and waits for the condition it names, and the
procedure in words, which is what a dry run shows of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

from chaos import dryrun
from chaos.errors import HarnessError, RecoveryError
from chaos.inventory import Site
from chaos.journal import Journal
from chaos.steps import Step
from chaos.wait import wait_for

Condition = Callable[[Site, str], tuple[bool, object]]

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

    def details(self) -> list[str]:
        """Procedure-specific lines shown before the steps (e.g. Galera's positions)."""
        return []

    def render(self) -> str:
        lines = [f"{self.procedure}: situation: {self.situation}", *self.details()]
        if self.bootstrap:
            lines.append(f"chosen node: {self.bootstrap} ({self.why})")
        lines += [f"note: {n}" for n in self.notes]
        if self.refused:
            lines.append(f"REFUSED: {self.refused}")
        elif self.pending:
            lines.append(f"DECIDED AT RUN TIME: {self.pending}")
        elif not self.steps:
            lines.append("nothing to do: healthy")
        lines += [f"step {i}: {s.describe()}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines)


P = TypeVar("P", bound=Plan)


@dataclass(frozen=True)
class Procedure:
    """A procedure in words: what it observes, how it decides, when it is done; and the
    condition its executor waits for at the end. A dry run can show no more than this:
    the plan itself depends on what is observed after the faults."""

    name: str
    observes: str
    decides: str
    done: str
    final: str = "healthy:"
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
    final, final_timeout = procedure.final, procedure.final_timeout
    if plan.refused:
        raise RecoveryError(f"{plan.procedure}: refused: {plan.refused}")
    if plan.pending:
        raise RecoveryError(f"{plan.procedure}: a plan made read-only cannot run: {plan.pending}")
    # runbook mode reaches procedures through the scenario's journal
    if confirm is None and journal is not None:
        confirm = journal.confirm

    def event(name: str, **data: Any) -> None:
        if journal is not None:
            journal.event(name, **data)

    event("recovery.start", procedure=plan.procedure, situation=plan.situation,
          chosen=plan.bootstrap)
    for step in plan.steps:
        if confirm is not None:
            confirm(step)
        event("recovery.step", procedure=plan.procedure, target=step.target,
              command=step.command, effect=step.effect)
        try:
            step.execute(site)
            if step.wait:
                wait_for(partial(condition, site, step.wait), what=step.wait,
                         timeout=step.wait_timeout, interval=0.1)
        except HarnessError as exc:
            event("recovery.failed", procedure=plan.procedure, error=str(exc))
            raise RecoveryError(f"{plan.procedure}: step failed: {step.effect}: {exc}") from exc
    wait_for(partial(condition, site, final), what=final, timeout=final_timeout, interval=0.1)
    event("recovery.done", procedure=plan.procedure)
