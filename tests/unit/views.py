"""Observations shaped like the probes' views, for the tests of how waits show them:
a dataclass whose repr would be noise, with a describe() an SRE reads."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class MemberState:
    size: int
    status: str
    state: str


@dataclasses.dataclass(frozen=True)
class GaleraView:
    states: dict[str, MemberState | None]

    def describe(self) -> str:
        return ", ".join(f"{n}: {s.size}, {s.status}, {s.state}" if s else f"{n}: down (refused)"
                         for n, s in self.states.items())
