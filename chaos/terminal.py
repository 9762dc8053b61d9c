"""What the harness shows on a person's terminal: observations in words, lines fitted to
the terminal's width.

An operator watches a drill in a tmux pane or a laptop terminal. A line longer than the
pane wraps, and a live line that wraps scrolls a new line on every update instead of
rewriting itself; a Python repr of a dataclass is noise to an SRE. So everything shown
is said with the object's own ``describe()`` when it has one, and a live line is cut to
the width of the terminal it is written to (measured on that terminal, not on stdout,
which pytest captures).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Mapping, Sequence

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

# how deep a container without describe() is spelled out before str() takes over
_MAX_DEPTH = 3
_SPACES = re.compile(r"\s+")


def describe(observed: object, *, _depth: int = 0) -> str:
    """``observed`` in words: its ``describe()`` when it has one, a dataclass or a
    mapping as ``name=value`` pairs, never a class's repr."""
    if isinstance(observed, str):
        return observed
    method = getattr(observed, "describe", None)
    if callable(method) and not isinstance(observed, type):
        try:
            text = method()
        except Exception as exc:  # an observation that cannot say itself is still shown
            text = f"(describe() failed: {type(exc).__name__}: {exc})"
        if isinstance(text, str):
            return text
    if _depth >= _MAX_DEPTH:
        return str(observed)
    deeper = _depth + 1
    if dataclasses.is_dataclass(observed) and not isinstance(observed, type):
        pairs = [f"{f.name}={_nested(getattr(observed, f.name), deeper)}"
                 for f in dataclasses.fields(observed) if f.repr]
        return ", ".join(pairs)
    if isinstance(observed, Mapping):
        return ", ".join(f"{k}: {_nested(v, deeper)}" for k, v in observed.items())
    if isinstance(observed, list | tuple | set | frozenset):
        return ", ".join(_nested(v, deeper) for v in observed)
    return str(observed)


def _nested(value: object, depth: int) -> str:
    text = describe(value, _depth=depth)
    # a list inside a list stays readable: its commas are bracketed
    return f"({text})" if "," in text and not isinstance(value, str) else text


def capped(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters (for messages and logs)."""
    flat = _SPACES.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def columns(fd: int) -> int:
    """The width of the terminal open on ``fd`` (a resized pane is seen at the next
    call); $COLUMNS, then 80, when it will not say."""
    try:
        width = os.get_terminal_size(fd).columns
    except OSError:
        width = 0
    if width <= 0:
        env = os.environ.get("COLUMNS", "")
        width = int(env) if env.isdigit() and int(env) > 0 else 80
    return width


def one_line(text: str, width: int) -> str:
    """``text`` as one line of at most ``width`` terminal cells, cut with an ellipsis
    (cells, not characters: a wide character takes two)."""
    line = Text(_SPACES.sub(" ", text).strip(), no_wrap=True, overflow="ellipsis")
    line.truncate(max(width, 1), overflow="ellipsis")
    return line.plain


def render(renderable: RenderableType, width: int, *, colour: bool = True) -> str:
    """What rich would print for ``renderable`` on a terminal ``width`` cells wide, as
    text to write to a raw file descriptor (the runbook writes to /dev/tty itself)."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=colour, no_color=not colour,
                      highlight=False, soft_wrap=False)
    # one cell short of the width: a line that fills the last column makes some
    # terminals wrap early; the padding rich adds to fill a row is dropped likewise
    console.width = max(width - 1, 20)
    console.print(renderable)
    return "\n".join(line.rstrip(" ") for line in buffer.getvalue().split("\n"))


def card(title: str, rows: Sequence[tuple[str, str]], width: int, *,
         colour: bool = True) -> str:
    """A titled block of ``label: value`` rows for a terminal ``width`` cells wide.
    Values wrap under themselves rather than being cut: a command an operator is asked
    to confirm is shown whole, and a path longer than a line folds instead of running
    off the edge."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(f"{label}:", value)
    return render(Group(Rule(title, style="dim", align="left"), Padding(grid, (0, 0, 0, 2))),
                  width, colour=colour)
