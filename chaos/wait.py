"""The one way to wait: poll to a deadline, show progress, say what was last seen.

Every wait in the harness goes through :func:`wait_for`, so every wait is bounded
in time and in number of polls, and a failed wait always reports the last state it
observed rather than a bare "timed out".
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

from chaos.errors import ProbeTimeout

T = TypeVar("T")


def _describe(observed: object) -> str:
    text = repr(observed) if not isinstance(observed, str) else observed
    return text if len(text) <= 300 else text[:297] + "..."


def wait_for(
    probe: Callable[[], tuple[bool, T]],
    *,
    what: str,
    timeout: float,
    interval: float = 0.25,
    progress: bool | None = None,
) -> T:
    """Poll ``probe`` until it returns ``(True, value)``; return ``value``.

    ``probe`` returns ``(done, observed)``. An exception raised by the probe counts
    as an observation (the service may simply not be up yet) and polling goes on.
    On giving up raises :class:`ProbeTimeout` naming ``what`` and the last observation.
    A live progress line goes to stderr when it is a terminal (``progress=None``).
    """
    __tracebackhide__ = True
    if progress is None:
        progress = sys.stderr.isatty()
    start = time.monotonic()
    deadline = start + timeout
    max_polls = int(timeout / max(interval, 0.01)) + 2
    last: object = "nothing observed yet"
    for _ in range(max_polls):
        try:
            done, observed = probe()
        except Exception as exc:  # a probe failing is an observation, not an end
            done, last = False, f"{type(exc).__name__}: {exc}"
        else:
            if done:
                if progress:
                    sys.stderr.write("\r\033[K")
                return observed
            last = observed
        now = time.monotonic()
        if progress:
            sys.stderr.write(
                f"\r\033[Kwaiting for {what} ({now - start:4.1f}s): {_describe(last)[:120]}"
            )
            sys.stderr.flush()
        if now >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - now)))
    if progress:
        sys.stderr.write("\r\033[K")
    raise ProbeTimeout(
        f"gave up waiting for {what} after {time.monotonic() - start:.1f}s; "
        f"last observed: {_describe(last)}"
    )
