import itertools

import pytest

from chaos.errors import ProbeTimeout
from chaos.wait import wait_for


def test_returns_the_observation_once_done() -> None:
    counter = itertools.count()

    def probe() -> tuple[bool, int]:
        n = next(counter)
        return n >= 3, n

    assert wait_for(probe, what="three polls", timeout=5, interval=0.01) == 3


def test_gives_up_and_names_what_it_last_saw() -> None:
    with pytest.raises(ProbeTimeout) as info:
        wait_for(lambda: (False, "size=2 non-Primary"), what="quorum", timeout=0.2,
                 interval=0.05)
    assert "quorum" in str(info.value)
    assert "size=2 non-Primary" in str(info.value)


def test_a_raising_probe_is_an_observation_not_an_end() -> None:
    calls = itertools.count()

    def probe() -> tuple[bool, str]:
        if next(calls) < 2:
            raise ConnectionRefusedError("not yet")
        return True, "up"

    assert wait_for(probe, what="service", timeout=5, interval=0.01) == "up"


def test_last_exception_is_reported() -> None:
    def probe() -> tuple[bool, str]:
        raise ConnectionRefusedError("port 3306 closed")

    with pytest.raises(ProbeTimeout, match="ConnectionRefusedError: port 3306 closed"):
        wait_for(probe, what="galera", timeout=0.1, interval=0.02)


def test_live_progress_reaches_the_terminal_and_nothing_else() -> None:
    import subprocess
    import sys

    from tests.unit.ptyutil import finish, spawn

    code = ("from chaos.wait import wait_for; import itertools; c = itertools.count();"
            "print(wait_for(lambda: (next(c) > 8, 'galera size=2'), what='quorum', "
            "timeout=5, interval=0.1))")
    text, status = finish(*spawn(["-c", code]), timeout=30)
    assert status == 0
    assert "waiting for quorum (" in text and "s): galera size=2" in text
    # in a pipe (no terminal) the same wait prints only its result
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=30, start_new_session=True)
    assert piped.stdout.strip() == "galera size=2" and piped.stderr == ""


def test_a_timeout_says_the_observation_in_its_own_words() -> None:
    from tests.unit.views import GaleraView, MemberState

    seen = GaleraView({"ctl1": MemberState(2, "Primary", "Synced"), "ctl2": None})
    with pytest.raises(ProbeTimeout) as info:
        wait_for(lambda: (False, seen), what="quorum", timeout=0.05, interval=0.01)
    assert str(info.value).endswith(
        "last observed: ctl1: 2, Primary, Synced, ctl2: down (refused)")
    # without describe(), still no class repr: the fields, by name
    with pytest.raises(ProbeTimeout) as info:
        wait_for(lambda: (False, {"ctl1": MemberState(2, "non-Primary", "Donor")}),
                 what="quorum", timeout=0.05, interval=0.01)
    assert "last observed: ctl1: (size=2, status=non-Primary, state=Donor)" in str(info.value)
    assert "MemberState(" not in str(info.value)
