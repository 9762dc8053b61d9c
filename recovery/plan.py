"""What every recovery procedure shares: a Plan of Steps (printable before it runs) and
one executor that journals each Step and waits for the condition it names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from chaos.errors import HarnessError, RecoveryError
from chaos.inventory import Site
from chaos.steps import Step
from chaos.wait import wait_for

Condition = Callable[[Site, str], tuple[bool, object]]


@dataclass
class Plan:
    procedure: str
    situation: str
    steps: list[Step] = field(default_factory=list)
    bootstrap: str | None = None
    why: str = ""
    refused: str | None = None
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
        elif not self.steps:
            lines.append("nothing to do: healthy")
        lines += [f"step {i}: {s.describe()}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines)


def execute(site: Site, plan: Plan, condition: Condition, *, final: str,
            journal: Any = None, confirm: Callable[[Step], None] | None = None,
            final_timeout: float = 90.0) -> None:
    """Run the plan Step by Step (``confirm`` is called before each), wait where a Step
    says so, then wait for the ``final`` condition."""
    if plan.refused:
        raise RecoveryError(f"{plan.procedure}: refused: {plan.refused}")
    # runbook mode reaches procedures through the scenario's journal
    confirm = confirm or getattr(journal, "confirm", None)

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
