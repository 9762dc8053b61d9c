"""Dry run: a scenario rehearsed, not run. Same scenario code as a real run.

While a :class:`Rehearsal` is active (the pytest plugin makes one per scenario under
``--dry-run``), every building block adds its part of the plan to it, in runbook words
and in order, instead of acting: ``Faults`` its inject and revert Steps, the waits in
``chaos.expect`` what they would wait for, the workload what it would start and what the
oracle would prove, recovery procedures what they would observe and how they decide.

What is not dry-run aware must not reach the site at all: targets, probes, waits and
workload connections call :func:`refuse` first, which raises :class:`DryRunViolation`
during a rehearsal, so a scenario that would touch the site fails loudly instead.

The rehearsal is process-wide rather than per thread on purpose: a thread that a
scenario started is refused too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from chaos.errors import DryRunViolation
from chaos.journal import Event

if TYPE_CHECKING:
    from chaos.journal import Journal


class Rehearsal:
    """One scenario's plan: numbered steps, each one or more lines of text."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.steps: list[str] = []
        # every step is journaled too, so a dry run's journal.jsonl holds its plan
        self.journal = journal

    def step(self, text: str) -> None:
        self.steps.append(text)
        if self.journal is not None:
            self.journal.event(Event.PLAN_STEP, n=len(self.steps), text=text)

    def __len__(self) -> int:
        return len(self.steps)

    def render(self) -> str:
        lines = []
        for n, text in enumerate(self.steps, 1):
            first, *rest = text.splitlines() or [""]
            lines.append(f"{n:>3}. {first}")
            lines += [f"     {line}" for line in rest]
        return "\n".join(lines)


_active: Rehearsal | None = None


def active() -> Rehearsal | None:
    """The rehearsal in progress, or None in a real run."""
    return _active


@contextlib.contextmanager
def rehearsing(rehearsal: Rehearsal) -> Iterator[Rehearsal]:
    """Make ``rehearsal`` the active one for the block."""
    global _active
    previous, _active = _active, rehearsal
    try:
        yield rehearsal
    finally:
        _active = previous


def refuse(what: str) -> None:
    """Raise DryRunViolation if a rehearsal is active: ``what`` would touch the site."""
    if _active is not None:
        raise DryRunViolation(
            f"dry run: {what} would reach the site; a scenario must go through "
            "faults, chaos.expect, the workload and recovery procedures, which plan instead")
