"""The one way to wait: poll to a deadline, show progress, say what was last seen.

Every wait in the harness goes through :func:`wait_for`, so every wait is bounded
in time and in number of polls, and a failed wait always reports the last state it
observed rather than a bare "timed out".
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO, TypeVar

from chaos.dryrun import refuse
from chaos.errors import ProbeTimeout
from chaos.terminal import capped, columns, describe, one_line

T = TypeVar("T")

# what a ProbeTimeout says of the last observation: every member of a few clusters,
# not a page of text in a traceback
MESSAGE_LIMIT = 500


@contextlib.contextmanager
def _terminal(progress: bool | None) -> Iterator[TextIO | None]:
    """Where the live line goes: the controlling terminal (pytest's capture does not
    reach it), or nowhere when there is none — quiet in CI and in pipes."""
    if progress is False or os.environ.get("CHAOS_PROGRESS") == "0":
        yield None
        return
    try:
        tty = open("/dev/tty", "w")  # noqa: SIM115  (closed below)
    except OSError:
        yield sys.stderr if progress else None
        return
    try:
        yield tty
    finally:
        tty.close()


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
    A live progress line goes to the terminal when there is one (``progress=None``).
    """
    __tracebackhide__ = True
    # in a dry run, waits are shown by chaos.expect; one that gets here would probe
    refuse(f"waiting for {what}")
    with _terminal(progress) as out:
        return _poll(probe, what, timeout, interval, out)


def _poll(probe: Callable[[], tuple[bool, T]], what: str, timeout: float, interval: float,
          out: TextIO | None) -> T:
    __tracebackhide__ = True
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
                _clear(out)
                return observed
            last = observed
        now = time.monotonic()
        if out is not None:
            _show(out, f"waiting for {what} ({now - start:4.1f}s): {describe(last)}")
        if now >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - now)))
    _clear(out)
    raise ProbeTimeout(
        f"gave up waiting for {what} after {time.monotonic() - start:.1f}s; "
        f"last observed: {capped(describe(last), MESSAGE_LIMIT)}"
    )


def _show(out: TextIO, text: str) -> None:
    """Rewrite the live line in place. It is cut one cell short of the terminal's
    width, measured at each update (a pane may be resized): a line that fills the last
    column, or wraps, makes the terminal scroll on every update instead."""
    try:
        width = columns(out.fileno())
    except (OSError, ValueError):  # a stream without a descriptor (forced progress)
        width = 80
    out.write("\r" + one_line(text, width - 1) + "\033[K")
    out.flush()


def _clear(out: TextIO | None) -> None:
    if out is not None:
        out.write("\r\033[K")
        out.flush()
