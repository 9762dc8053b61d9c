"""Probes: read-only looks at a site's services, each bounded by timeouts, returning
typed states. A node that does not answer is an observation (``None`` plus the reason),
never an exception that ends a scenario."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from chaos.inventory import Site
from chaos.lab.galera import GaleraState
from chaos.lab.galera import probe as _galera_probe

__all__ = ["GaleraState", "GaleraView", "galera"]


@dataclass(frozen=True)
class GaleraView:
    """Every node's answer at one moment."""

    states: dict[str, GaleraState | None]
    errors: dict[str, str]

    def primary(self) -> list[str]:
        return [n for n, s in self.states.items() if s is not None and s.status == "Primary"]

    def healthy(self, size: int | None = None) -> bool:
        want = size if size is not None else len(self.states)
        return all(s is not None and s.healthy and s.size == want for s in self.states.values())

    def describe(self) -> str:
        return ", ".join(f"{n}: {s.describe() if s else 'down (' + self.errors[n][:40] + ')'}"
                         for n, s in self.states.items())


def galera(site: Site, *, timeout: float = 3.0) -> GaleraView:
    nodes = [c for c in site.controllers if c.galera]
    user = site.credentials.db.user
    password = site.credentials.db.password.reveal()

    def ask(c: object) -> tuple[str, GaleraState | None, str]:
        from chaos.inventory import Controller

        assert isinstance(c, Controller) and c.galera
        try:
            return c.name, _galera_probe(c.address, c.galera.port, user, password,
                                         timeout=timeout), ""
        except Exception as exc:  # any failure to answer is an observation
            return c.name, None, f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        answers = list(pool.map(ask, nodes))
    return GaleraView({n: s for n, s, _ in answers}, {n: e for n, _, e in answers if e})
