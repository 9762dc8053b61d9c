"""Recovery planning is pure: positions in, a choice and Steps out."""

from __future__ import annotations

import copy

import pytest

from chaos import inventory
from chaos.errors import ConfigError
from chaos.probes import GaleraState, GaleraView
from chaos.steps import Await
from recovery import galera
from recovery.galera import Observation, Position, parse_recovered
from tests.unit.test_inventory import VALID

UUID = "3b53ce02-e8fb-11f1-b2fb-57f895119eb1"
OTHER = "aaaaaaaa-e8fb-11f1-b2fb-57f895119eb1"


def site() -> inventory.Site:
    data = copy.deepcopy(VALID)
    for ctl in data["controllers"]:
        ctl["galera"].update(pidfile="/run/mysqld/mysqld.pid", start="mariadbd --defaults-file=x")
    return inventory.parse(data)


def down(node: str, seqno: int | None, uuid: str | None = UUID) -> Position:
    return Position(node, False, uuid, seqno, False, "wsrep-recover")


def up(node: str, seqno: int, status: str = "Primary", size: int = 3) -> tuple[Position,
                                                                              GaleraState]:
    return (Position(node, True, UUID, seqno, None, "running"),
            GaleraState(size, status, "Synced" if status == "Primary" else "Initialized",
                         status == "Primary", seqno, UUID))


def observation(*nodes: Position | tuple[Position, GaleraState]) -> Observation:
    states: dict[str, GaleraState | None] = {}
    positions = {}
    for n in nodes:
        if isinstance(n, tuple):
            positions[n[0].node] = n[0]
            states[n[0].node] = n[1]
        else:
            positions[n.node] = n
            states[n.node] = None
    return Observation(GaleraView(states, {k: "down" for k, v in states.items() if v is None}),
                       positions)


def test_full_outage_bootstraps_the_highest_seqno_not_the_first_node() -> None:
    plan = galera.plan(site(), observation(down("ctl1", 10), down("ctl2", 17), down("ctl3", 15)))
    assert plan.situation == "full-outage"
    assert plan.bootstrap == "ctl2"
    starts = [s for s in plan.steps if "setsid" in s.command]
    assert "--wsrep-new-cluster" in starts[0].command and "10.0.0.2" in starts[0].target
    assert f"--wsrep-start-position={UUID}:17" in starts[0].command
    # joiners one at a time, each with its own position so IST can serve it
    assert [s.wait for s in starts] == [Await("synced", "ctl2"), Await("synced", "ctl1"),
                                        Await("synced", "ctl3")]
    assert f"--wsrep-start-position={UUID}:10" in starts[1].command
    # only the chosen node is marked safe; every saved view is removed
    marks = [s for s in plan.steps if "safe_to_bootstrap" in s.command]
    assert ["safe_to_bootstrap: 1" in s.command for s in marks] == [False, True, False]
    assert all("gvwstate.dat" in s.command for s in marks)


def test_a_tie_is_broken_by_inventory_order_and_said() -> None:
    plan = galera.plan(site(), observation(down("ctl1", 9), down("ctl2", 12), down("ctl3", 12)))
    assert plan.bootstrap == "ctl2"
    assert "tie with ctl3" in plan.why


def test_split_history_is_refused() -> None:
    plan = galera.plan(site(), observation(down("ctl1", 10), down("ctl2", 12, OTHER),
                                           down("ctl3", 9)))
    assert plan.refused and "split history" in plan.refused
    assert plan.steps == []


def test_unknown_position_is_refused_unless_forced() -> None:
    obs = observation(down("ctl1", 10), down("ctl2", None), down("ctl3", 9))
    refused = galera.plan(site(), obs)
    assert refused.refused and "position unknown on ctl2" in refused.refused
    assert "--node" in refused.refused  # the refusal says what to do next
    forced = galera.plan(site(), obs, force_node="ctl1")
    assert forced.refused is None and forced.bootstrap == "ctl1"
    assert any("forced despite: unknown position on ctl2" in n for n in forced.notes)
    # the operator accepted ctl2's unknown: it joins by a full state transfer
    assert any("ctl2 joins by full state transfer" in s.effect for s in forced.steps)


def test_forcing_a_node_behind_a_known_one_is_refused_naming_the_right_one() -> None:
    # --node accepts the unknown (ctl2); it never overrides what is known (ctl1 is ahead)
    obs = observation(down("ctl1", 10), down("ctl2", None), down("ctl3", 9))
    plan = galera.plan(site(), obs, force_node="ctl3")
    assert plan.refused is not None and plan.steps == [] and plan.bootstrap is None
    assert plan.refused.startswith("--node ctl3: ctl3 is at seqno 9, behind ctl1 at seqno 10")
    assert "would lose 1 acknowledged transaction(s)" in plan.refused
    assert "The node that must bootstrap is ctl1" in plan.refused


def test_an_empty_node_claiming_safe_to_bootstrap_is_not_trusted() -> None:
    empty = Position("ctl1", False, "00000000-0000-0000-0000-000000000000", -1, True, "grastate")
    plan = galera.plan(site(), observation(empty, down("ctl2", 5), down("ctl3", 4)))
    assert plan.bootstrap == "ctl2"
    assert any("ctl1 hold no data" in n for n in plan.notes)


def test_non_primary_survivor_is_bootstrapped_in_place() -> None:
    plan = galera.plan(site(), observation(down("ctl1", 20), down("ctl2", 20),
                                           up("ctl3", 21, "non-Primary", 1)))
    assert plan.situation == "non-primary" and plan.bootstrap == "ctl3"
    assert plan.steps[0].target == "galera://ctl3"
    assert "pc.bootstrap=YES" in plan.steps[0].command


def test_a_stopped_node_ahead_of_every_survivor_bootstraps_after_the_survivors_stop() -> None:
    plan = galera.plan(site(), observation(down("ctl1", 30), down("ctl2", 20),
                                           up("ctl3", 21, "non-Primary", 1)))
    assert plan.refused is None and plan.bootstrap == "ctl1"
    assert "survivors are stopped first" in plan.why
    assert "pc.bootstrap" not in " ".join(s.command for s in plan.steps)
    # ctl3 stops cleanly first, then ctl1 bootstraps, then the others join by IST
    assert "kill -s TERM" in plan.steps[0].command and "10.0.0.3" in plan.steps[0].target
    starts = [s for s in plan.steps if "setsid" in s.command]
    assert "--wsrep-new-cluster" in starts[0].command and "10.0.0.1" in starts[0].target
    assert [s.effect for s in starts[1:]] == ["ctl2 joins by IST from seqno 20",
                                              "ctl3 joins by IST from seqno 21"]


def test_degraded_cluster_restarts_the_missing_node_by_ist() -> None:
    plan = galera.plan(site(), observation(up("ctl1", 40, size=2), up("ctl2", 40, size=2),
                                           down("ctl3", 38)))
    assert plan.situation == "degraded"
    assert len(plan.steps) == 1 and "joins by IST from seqno 38" in plan.steps[0].effect


def test_healthy_is_a_no_op() -> None:
    plan = galera.plan(site(), observation(up("ctl1", 5), up("ctl2", 5), up("ctl3", 5)))
    assert plan.situation == "healthy" and plan.steps == []
    assert "nothing to do" in plan.render()


def test_unknown_forced_node_is_bad_input() -> None:
    with pytest.raises(ConfigError, match="'ctl9' is not a Galera node"):
        galera.plan(site(), observation(down("ctl1", 1), down("ctl2", 1), down("ctl3", 1)),
                    force_node="ctl9")


@pytest.mark.parametrize(("log", "expected"), [
    (f"... WSREP: Recovered position: {UUID}:1234\n", (UUID, 1234)),
    (f"WSREP: Recovered position {UUID}:77,0-1-77\n", (UUID, 77)),
    (f"Recovered position: {UUID}:1\nRecovered position: {UUID}:-1\n", (UUID, -1)),
    ("no position here\n", None),
])
def test_parse_recovered(log: str, expected: tuple[str, int] | None) -> None:
    assert parse_recovered(log) == expected
