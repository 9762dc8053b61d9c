"""How the harness says things on a terminal: observations in words, lines that fit."""

from __future__ import annotations

import re

from chaos.terminal import card, describe, one_line
from tests.unit.views import GaleraView, MemberState

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_describe_prefers_the_objects_own_words_and_never_a_repr() -> None:
    view = GaleraView({"ctl1": MemberState(3, "Primary", "Synced"), "ctl2": None})
    assert describe(view) == "ctl1: 3, Primary, Synced, ctl2: down (refused)"
    assert describe(MemberState(2, "non-Primary", "Donor")) == (
        "size=2, status=non-Primary, state=Donor")
    assert describe([1, (2, 3)]) == "1, (2, 3)"
    assert describe("as it is") == "as it is"


def test_one_line_counts_cells_and_shows_the_cut() -> None:
    assert one_line("short", 20) == "short"
    assert one_line("a\nb   c", 20) == "a b c"
    cut = one_line("x" * 50, 20)
    assert len(cut) == 20 and cut.endswith("…")
    wide = one_line("日本語" * 10, 11)  # two cells each
    assert wide.endswith("…") and len(wide) * 2 - 1 <= 11


def test_a_card_fits_the_width_and_keeps_every_word_of_a_long_command() -> None:
    command = ("docker -H unix:///var/lib/chaos-lab/compute/cmp1/docker.sock kill -s KILL "
               "libvirt && sleep 1 && docker -H unix:///var/lib/chaos-lab/compute/cmp1/"
               "docker.sock ps --all --filter name=libvirt")
    text = ANSI.sub("", card("runbook step 3", [("target", "ssh://root@10.0.0.21:22"),
                                                 ("action", command)], 60))
    lines = text.splitlines()
    assert lines[0].startswith("runbook step 3 ─")
    assert all(len(line) < 60 for line in lines), text
    assert lines[1] == "  target: ssh://root@10.0.0.21:22"
    # wrapped under itself, nothing dropped
    action = "".join(line[len("  action: "):] if i == 0 else line.lstrip()
                     for i, line in enumerate(lines[2:]))
    assert action.replace(" ", "") == command.replace(" ", "")
