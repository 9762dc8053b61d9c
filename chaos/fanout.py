"""Asking many hosts at once: a bounded pool of workers, a deadline, and every host that
does not answer kept as an observation naming it, never an exception that hides the
others' answers.

At the seed's scale (50 computes) a probe that visits hosts one after another costs the
sum of their round trips (about 35 s for one VM snapshot, measured on main before this
module); fanned out it costs about the slowest host's. Each ``work`` call keeps its own
timeouts (ssh, libvirt, SQL); the deadline here is the bound on the whole gathering, so a
host whose call is stuck past it is reported as silent and the caller goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ALL_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from chaos.errors import ServiceError

T = TypeVar("T")

# Threads, not processes: every call waits on a socket (ssh, libvirt RPC, SQL), where the
# GIL is released. 16 kept a 50-host snapshot within its goal on 2 cores (bench/scale.py);
# more threads only add contention on the harness's own CPU.
WORKERS = 16


@dataclass
class Gathered(Generic[T]):
    """What each host answered, and why each of the others did not."""

    results: dict[str, T] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def describe_errors(self, limit: int = 6) -> str:
        """One line: every host that did not answer, each with its reason (the first
        ``limit`` in full, then a count)."""
        items = sorted(self.errors.items())
        text = "; ".join(f"{host}: {why}" for host, why in items[:limit])
        if len(items) > limit:
            text += f"; and {len(items) - limit} more host(s)"
        return text

    def raise_errors(self, what: str) -> None:
        """Raise one ServiceError naming every host that did not answer, if any did not."""
        if self.errors:
            raise ServiceError(f"{what}: {len(self.errors)} host(s) did not answer: "
                               f"{self.describe_errors()}")


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def gather(keys: Iterable[str], work: Callable[[str], T], *, deadline: float,
           workers: int = WORKERS) -> Gathered[T]:
    """``work(key)`` for every key, at most ``workers`` at a time, all within ``deadline``
    seconds. A key whose call raised, or had not returned by the deadline, is in
    ``errors`` with the reason; the rest are in ``results``."""
    names = list(dict.fromkeys(keys))
    out: Gathered[T] = Gathered()
    if not names:
        return out
    if len(names) == 1:
        # the common drill (one host) pays no thread hand-off
        try:
            out.results[names[0]] = work(names[0])
        except Exception as exc:  # a host that does not answer is an observation
            out.errors[names[0]] = _reason(exc)
        return out
    pool = ThreadPoolExecutor(max_workers=min(workers, len(names)),
                              thread_name_prefix="fanout")
    try:
        futures: dict[Future[T], str] = {pool.submit(work, name): name for name in names}
        done, _ = wait(futures, timeout=deadline, return_when=ALL_COMPLETED)
        for future, name in futures.items():
            if future not in done:
                out.errors[name] = f"no answer within {deadline:.1f}s"
                continue
            failure = future.exception()
            if failure is not None:
                out.errors[name] = _reason(failure)
            else:
                out.results[name] = future.result()
    finally:
        # calls still running end by their own timeouts; nobody waits for them here
        pool.shutdown(wait=False, cancel_futures=True)
    # keep the callers' order: the inventory's
    out.results = {n: out.results[n] for n in names if n in out.results}
    out.errors = {n: out.errors[n] for n in names if n in out.errors}
    return out


class Named(Protocol):
    name: str


H = TypeVar("H", bound=Named)


def ask_each(hosts: Iterable[H], ask: Callable[[H], T], *,
             deadline: float) -> tuple[dict[str, T | None], dict[str, str]]:
    """``ask(host)`` for each host in parallel: each host's answer by name (None where it
    gave none), and the reason of each that gave none."""
    by_name = {h.name: h for h in hosts}
    answers = gather(by_name, lambda name: ask(by_name[name]), deadline=deadline)
    return {n: answers.results.get(n) for n in by_name}, answers.errors
