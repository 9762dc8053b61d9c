"""Steps: one action on one target, as data. Printable before it runs.

Faults and recovery procedures are plans of Steps before they are actions, so a dry run
prints the plan, a runbook asks before each Step, and the journal records each one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from chaos.targets import CommandResult, for_url

if TYPE_CHECKING:
    from chaos.inventory import Site


@dataclass(frozen=True)
class Step:
    target: str  # URL of where the command runs
    command: str  # the exact shell command
    effect: str  # what should be true afterwards, in an operator's words
    timeout: float = 30.0
    must_succeed: bool = True

    def describe(self) -> str:
        return f"[{self.target}] {self.command}\n    expect: {self.effect}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Step:
        return cls(**data)

    def execute(self, site: Site | None) -> CommandResult:
        result = for_url(self.target, site).run(self.command, timeout=self.timeout)
        return result.check() if self.must_succeed else result
