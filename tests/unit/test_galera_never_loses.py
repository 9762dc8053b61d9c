"""Galera recovery never loses what the cluster acknowledged, whatever the operator types
(issue 11): the planner's cases, each with the refusal text that tells what to do next,
and the observing script run for real in a shell on real files."""

from __future__ import annotations

import copy
import os
import subprocess
import time
from pathlib import Path

import pytest

from chaos import inventory
from chaos.errors import ConfigError
from chaos.probes import GaleraState, GaleraView
from chaos.steps import Await
from recovery import galera
from recovery.galera import Durability, Observation, Position
from tests.unit.test_inventory import VALID
from tests.unit.test_recovery_plans import OTHER, UUID, down, observation, site, up


def silent(node: str) -> Position:
    return Position(node, False, None, None, None,
                    "process 4242 alive (stopped by a signal (T), 300s old) but not answering "
                    "SQL", alive=True, pid=4242, pstate="T", age=300)


def starting(node: str) -> Position:
    return Position(node, False, None, None, None,
                    "process 4243 alive (sleeping, 8s old) but not answering SQL", alive=True,
                    pid=4243, pstate="S", age=8)


def unreachable(node: str) -> Position:
    return Position(node, False, None, None, None, "unknown: ssh: connection refused",
                    alive=None)


def starts(plan: galera.GaleraPlan) -> list[str]:
    return [s.effect for s in plan.steps if "setsid" in s.command]


# -- the reproduction: ctl3 cut off at 60, ctl1 and ctl2 acknowledged up to 163, killed --

REPRO = (down("ctl1", 163), down("ctl2", 163), up("ctl3", 60, "non-Primary", 1))


def test_reproduction_without_node_bootstraps_the_most_advanced_stopped_node() -> None:
    plan = galera.plan(site(), observation(*REPRO))
    assert plan.situation == "non-primary" and plan.refused is None
    assert plan.bootstrap == "ctl1"
    assert "tie with ctl2 broken by inventory order" in plan.why
    assert "kill -s TERM" in plan.steps[0].command and "10.0.0.3" in plan.steps[0].target
    assert starts(plan) == ["ctl1 bootstraps a new Primary component from its own data",
                            "ctl2 joins by IST from seqno 163",
                            "ctl3 joins by IST from seqno 60"]


@pytest.mark.parametrize("named", ["ctl1", "ctl2"])
def test_reproduction_with_node_uses_the_named_node_never_another(named: str) -> None:
    plan = galera.plan(site(), observation(*REPRO), force_node=named)
    assert plan.refused is None and plan.bootstrap == named
    assert plan.why.startswith("named by the operator")
    assert f"{named} bootstraps" in starts(plan)[0]
    # pc.bootstrap on the survivor that is behind would be the data loss of issue 11
    assert not any("pc.bootstrap" in s.command for s in plan.steps)
    assert any(f"--wsrep-start-position={UUID}:163" in s.command
               and "--wsrep-new-cluster" in s.command for s in plan.steps)


def test_reproduction_naming_the_survivor_that_is_behind_is_refused() -> None:
    plan = galera.plan(site(), observation(*REPRO), force_node="ctl3")
    assert plan.steps == [] and plan.bootstrap is None
    assert plan.refused == (
        "--node ctl3: ctl3 is at seqno 60, behind ctl1 at seqno 163 of the same history; "
        "bootstrapping it would lose 103 acknowledged transaction(s). The node that must "
        "bootstrap is ctl1: run `chaos recover galera` (or --node ctl1)")


# -- the non-Primary branch counts every member -------------------------------------------


def test_non_primary_with_an_unreachable_member_is_refused_unless_named() -> None:
    obs = observation(unreachable("ctl1"), down("ctl2", 20), up("ctl3", 21, "non-Primary", 1))
    plan = galera.plan(site(), obs)
    assert plan.refused is not None and plan.steps == []
    assert "position unknown on ctl1" in plan.refused and "connection refused" in plan.refused
    forced = galera.plan(site(), obs, force_node="ctl3")
    assert forced.refused is None and forced.bootstrap == "ctl3"
    assert "pc.bootstrap=YES" in forced.steps[0].command


def test_a_member_alive_but_silent_is_settled_before_anything_is_bootstrapped() -> None:
    obs = observation(silent("ctl1"), down("ctl2", 20), up("ctl3", 21, "non-Primary", 1))
    for force in (None, "ctl3"):
        plan = galera.plan(site(), obs, force_node=force)
        assert plan.refused is None and plan.situation == "members alive but silent"
        assert plan.bootstrap is None and plan.replan
        (settle,) = plan.steps
        assert "10.0.0.1" in settle.target and "kill -s KILL 4242" in settle.command
        assert "/dev/tcp/10.0.0.1/3306" in settle.command  # answers = the server greets
        assert not any("pc.bootstrap" in s.command for s in plan.steps)
        text = plan.render()
        assert "silent: ctl1: process 4242 alive (stopped by a signal (T), 300s old)" in text
        assert "given 20s to answer, then killed (SIGKILL)" in text


def test_non_primary_beside_a_member_still_starting_is_refused() -> None:
    obs = observation(starting("ctl1"), down("ctl2", 20), up("ctl3", 21, "non-Primary", 1))
    plan = galera.plan(site(), obs, force_node="ctl3")
    assert plan.refused is not None and plan.steps == []
    assert plan.refused.startswith("ctl1: process 4243 alive (sleeping, 8s old)")
    assert "second Primary component" in plan.refused


def test_survivor_most_advanced_is_bootstrapped_in_place_and_the_dead_join_by_ist() -> None:
    plan = galera.plan(site(), observation(down("ctl1", 20), down("ctl2", 19),
                                           up("ctl3", 21, "non-Primary", 1)))
    assert plan.bootstrap == "ctl3" and "bootstrapped in place" in plan.why
    assert starts(plan) == ["ctl1 joins by IST from seqno 20", "ctl2 joins by IST from seqno 19"]


# -- split brain ---------------------------------------------------------------------------


def test_two_primary_components_of_one_history_are_split_brain_and_refused() -> None:
    plan = galera.plan(site(), observation(up("ctl1", 80, size=2), up("ctl2", 80, size=2),
                                           up("ctl3", 61, size=1)))
    assert plan.situation == "split-brain"
    assert plan.refused is not None and plan.steps == []
    assert plan.refused.startswith("split brain: 2 Primary components at once "
                                   "({ctl1, ctl2} size 2 seqno 80; {ctl3} size 1 seqno 61)")


def test_two_primary_components_of_different_histories_are_split_brain() -> None:
    other = (Position("ctl3", True, OTHER, 5, None, "running", alive=True),
             GaleraState(1, "Primary", "Synced", True, 5, OTHER))
    plan = galera.plan(site(), observation(up("ctl1", 80, size=2), up("ctl2", 80, size=2),
                                           other))
    assert plan.situation == "split-brain" and plan.refused


def test_two_nodes_that_each_bootstrapped_alone_are_two_components() -> None:
    """openstack-helm's second reboot after a full outage (docs/OSH-MARIADB.md): two pods
    of one history each Primary of size 1, the third not yet joined. Grouped by the size
    they report, they once looked like one component of two, a degraded cluster."""
    view = GaleraView({"ctl1": GaleraState(1, "Primary", "Synced", True, 64, UUID),
                       "ctl2": GaleraState(1, "Primary", "Synced", True, 64, UUID),
                       "ctl3": None}, {"ctl3": "down"})
    assert galera.primary_components(view) == [["ctl1"], ["ctl2"]]
    assert galera.classify(view, 3) is galera.Situation.SPLIT_BRAIN
    plan = galera.plan(site(), observation(up("ctl1", 64, size=1), up("ctl2", 64, size=1),
                                           down("ctl3", 63)))
    assert plan.situation == "split-brain" and plan.refused and plan.steps == []


def test_one_component_with_a_member_missing_is_not_split_brain() -> None:
    view = GaleraView({"ctl1": GaleraState(2, "Primary", "Synced", True, 9, UUID),
                       "ctl2": GaleraState(2, "Primary", "Synced", True, 9, UUID),
                       "ctl3": None}, {"ctl3": "down"})
    assert galera.classify(view, 3) is galera.Situation.DEGRADED
    assert galera.primary_components(view) == [["ctl1", "ctl2"]]


# -- joiners: never a silent full state transfer over a history ----------------------------


def test_joiner_of_another_history_is_refused_unless_discarded() -> None:
    obs = observation(up("ctl1", 40, size=2), up("ctl2", 40, size=2), down("ctl3", 55, OTHER))
    plan = galera.plan(site(), obs)
    assert plan.refused is not None and plan.steps == []
    assert plan.refused.startswith(f"ctl3 carries another history (cluster {OTHER}, seqno 55)")
    assert "--discard ctl3" in plan.refused
    told = galera.plan(site(), obs, discard=["ctl3"])
    assert told.refused is None
    assert starts(told) == ["ctl3 joins by full state transfer; its own data is discarded, "
                            "as the operator asked"]


def test_joiner_with_unknown_position_beside_data_is_refused_unless_discarded() -> None:
    lost = Position("ctl3", False, None, None, None,
                    "unknown: no grastate.dat beside data and --wsrep-recover printed no "
                    "position")
    obs = observation(up("ctl1", 40, size=2), up("ctl2", 40, size=2), lost)
    plan = galera.plan(site(), obs)
    assert plan.refused is not None and plan.refused.startswith("ctl3's position is unknown")
    assert galera.plan(site(), obs, discard=["ctl3"]).refused is None


def test_joiner_with_an_empty_data_directory_joins_by_sst_without_asking() -> None:
    empty = Position("ctl3", False, None, None, None, "empty data directory",
                     empty_datadir=True)
    plan = galera.plan(site(), observation(up("ctl1", 40, size=2), up("ctl2", 40, size=2),
                                           empty))
    assert plan.refused is None
    assert starts(plan) == ["ctl3 joins by full state transfer (it holds no data)"]


def test_a_stopped_node_ahead_of_the_running_component_is_refused() -> None:
    # the component was formed from a node that was behind (what issue 11's --node did)
    plan = galera.plan(site(), observation(up("ctl3", 60, size=1), down("ctl1", 163),
                                           down("ctl2", 163)))
    assert plan.situation == "degraded"
    assert plan.refused is not None and plan.steps == []
    assert plan.refused.startswith("ctl1 holds transactions up to seqno 163, beyond the "
                                   "running Primary component (ctl3, seqno 60)")


def test_degraded_member_still_starting_is_awaited_not_started_twice() -> None:
    plan = galera.plan(site(), observation(up("ctl1", 40, size=2), up("ctl2", 40, size=2),
                                           starting("ctl3")))
    assert plan.refused is None and not plan.replan
    assert not starts(plan)
    assert [s.wait for s in plan.steps] == [Await("synced", "ctl3")]


def test_degraded_member_frozen_is_settled_then_replanned() -> None:
    plan = galera.plan(site(), observation(up("ctl1", 40, size=2), up("ctl2", 40, size=2),
                                           silent("ctl3")))
    assert plan.replan and not starts(plan)
    assert "kill -s KILL 4242" in plan.steps[0].command


def test_every_start_is_guarded_by_the_pidfile() -> None:
    plan = galera.plan(site(), observation(up("ctl1", 40, size=2), up("ctl2", 40, size=2),
                                           down("ctl3", 38)))
    (start,) = plan.steps
    assert "owns \"$pid\"" in start.command and "/run/mysqld/mysqld.pid" in start.command


# -- the operator's node: used as named, or refused with the reason ------------------------


def test_naming_an_empty_node_is_refused() -> None:
    empty = Position("ctl1", False, None, None, None, "empty data directory",
                     empty_datadir=True)
    plan = galera.plan(site(), observation(empty, down("ctl2", 5), down("ctl3", 4)),
                       force_node="ctl1")
    assert plan.refused is not None and plan.refused.startswith("--node ctl1: it holds no data")


def test_naming_a_node_whose_position_is_unknown_while_others_are_known_is_refused() -> None:
    plan = galera.plan(site(), observation(down("ctl1", None), down("ctl2", 5),
                                           down("ctl3", 4)), force_node="ctl1")
    assert plan.refused is not None
    assert "its own position is unknown" in plan.refused
    assert "the node that must bootstrap is ctl2" in plan.refused


def test_naming_a_node_picks_its_history_and_says_the_other_is_discarded() -> None:
    obs = observation(down("ctl1", 10), down("ctl2", 12, OTHER), down("ctl3", 9))
    plan = galera.plan(site(), obs, force_node="ctl1")
    assert plan.refused is None and plan.bootstrap == "ctl1"
    assert any("the history of ctl1 wins" in n for n in plan.notes)
    assert "ctl2 joins by full state transfer; its own data is discarded" in " ".join(
        starts(plan))


def test_discarding_an_unknown_node_is_bad_input() -> None:
    with pytest.raises(ConfigError, match="--discard: 'ctl9' is not a Galera node"):
        galera.plan(site(), observation(down("ctl1", 1), down("ctl2", 1), down("ctl3", 1)),
                    discard=["ctl9"])


# -- dry run: a position only --wsrep-recover can give is learned by the real run ----------


def test_a_plan_that_needs_wsrep_recover_is_pending_in_a_dry_run_not_refused() -> None:
    deferred = Position("ctl2", False, UUID, None, False,
                        "seqno -1 in grastate.dat: the real run learns it by --wsrep-recover",
                        deferred=True)
    plan = galera.plan(site(), observation(down("ctl1", 10), deferred, down("ctl3", 9)))
    assert plan.refused is None and plan.steps == []
    assert plan.pending is not None and "ctl2" in plan.pending
    text = plan.render()
    assert "DECIDED AT RUN TIME" in text and "later" in text
    # a pending plan never executes
    with pytest.raises(Exception, match="cannot run"):
        galera.execute(site(), plan)


def test_a_dry_run_still_shows_a_refusal_that_does_not_depend_on_the_unknown() -> None:
    deferred = Position("ctl2", False, UUID, None, False, "seqno -1", deferred=True)
    plan = galera.plan(site(), observation(starting("ctl1"), deferred, down("ctl3", 9)))
    assert plan.refused is not None and plan.pending is None


# -- durability as found ---------------------------------------------------------------------


def test_lazy_flush_is_said_in_the_plan() -> None:
    obs = observation(down("ctl1", 10), down("ctl2", 17), down("ctl3", 15))
    obs = Observation(obs.view, obs.positions, Durability(
        {"innodb_flush_log_at_trx_commit": "2", "sync_binlog": "0"}, "running value on ctl1"))
    plan = galera.plan(site(), obs)
    text = plan.render()
    assert "durability: innodb_flush_log_at_trx_commit=2 sync_binlog=0 (running value on " \
           "ctl1)" in text
    assert any("innodb_flush_log_at_trx_commit=2" in n and "not from recovery" in n
               for n in plan.notes)


def test_parse_defaults_reads_either_spelling() -> None:
    text = "--datadir=/x\n--innodb-flush-log-at-trx-commit=2\n--sync_binlog=1\n"
    assert galera.parse_defaults(text) == {"innodb_flush_log_at_trx_commit": "2",
                                           "sync_binlog": "1"}


# -- the observing script, run for real in a shell on real files ---------------------------


def local_site(datadir: Path, *, pidfile: str | None, start: str) -> inventory.Site:
    data = copy.deepcopy(VALID)
    for ctl in data["controllers"]:
        ctl["galera"].update(target="local://", datadir=str(datadir), start=start)
        if pidfile:
            ctl["galera"]["pidfile"] = pidfile
    return inventory.parse(data)


def observe_one(tmp_path: Path, datadir: Path, *, read_only: bool,
                pidfile: str | None = None) -> tuple[Position, Path]:
    marker = tmp_path / "start-ran"
    # a "server" whose every run leaves a mark: --wsrep-recover must never run it here
    start = f"touch {marker}; echo"
    s = local_site(datadir, pidfile=pidfile, start=start)
    node = s.controllers[0]
    return galera._position(s, node, None, read_only=read_only), marker


def test_dry_run_observation_reads_only(tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    datadir.mkdir()
    (datadir / "ibdata1").write_text("x")
    (datadir / "grastate.dat").write_text(f"uuid: {UUID}\nseqno: -1\nsafe_to_bootstrap: 0\n")
    position, marker = observe_one(tmp_path, datadir, read_only=True)
    assert position.deferred and position.seqno is None and position.uuid == UUID
    assert not marker.exists()
    # the real run would run it
    position, marker = observe_one(tmp_path, datadir, read_only=False)
    assert marker.exists() and not position.deferred
    assert position.source == "unknown: seqno -1 in grastate.dat and --wsrep-recover " \
                              "printed no position"


def test_empty_data_directory_and_missing_grastate_are_told_apart(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    position, _ = observe_one(tmp_path, empty, read_only=True)
    assert position.empty_datadir and position.empty and position.source == "empty data directory"
    full = tmp_path / "full"
    full.mkdir()
    (full / "ibdata1").write_text("x")
    position, _ = observe_one(tmp_path, full, read_only=True)
    assert not position.empty and position.deferred
    assert position.source.startswith("no grastate.dat beside data")


def test_grastate_position_is_read_as_is(tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    datadir.mkdir()
    (datadir / "grastate.dat").write_text(f"uuid: {UUID}\nseqno: 163\nsafe_to_bootstrap: 1\n")
    position, marker = observe_one(tmp_path, datadir, read_only=False)
    assert (position.uuid, position.seqno, position.safe_to_bootstrap) == (UUID, 163, True)
    assert not marker.exists()


def test_a_live_process_holding_the_data_directory_is_seen_without_a_pidfile(
        tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    datadir.mkdir()
    (datadir / "ibdata1").write_text("x")
    (datadir / "grastate.dat").write_text(f"uuid: {UUID}\nseqno: -1\nsafe_to_bootstrap: 0\n")
    holder = subprocess.Popen(["sh", "-c", f"exec 3<{datadir}/ibdata1; exec sleep 30"])
    try:
        deadline = time.monotonic() + 5
        while not any(os.readlink(f"/proc/{holder.pid}/fd/{fd}").endswith("ibdata1")
                      for fd in os.listdir(f"/proc/{holder.pid}/fd")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        position, marker = observe_one(tmp_path, datadir, read_only=False)
        assert position.alive is True and position.seqno is None
        assert position.source.startswith(f"process {holder.pid} alive (sleeping")
        assert position.pid == holder.pid and position.pstate == "S" and position.starting
        assert not marker.exists()  # never --wsrep-recover beside a live server
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_live_pidfile_process_is_alive(tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    datadir.mkdir()
    (datadir / "ibdata1").write_text("x")
    pidfile = tmp_path / "mysqld.pid"
    pidfile.write_text(str(os.getpid()))
    position, marker = observe_one(tmp_path, datadir, read_only=False, pidfile=str(pidfile))
    assert position.alive is True and not marker.exists()


# -- a silent member is given time, then killed: run for real on a stopped process ----------


def test_await_or_kill_kills_a_stopped_process_that_never_answers() -> None:
    from recovery.plan import await_or_kill

    victim = subprocess.Popen(["sleep", "60"])
    try:
        os.kill(victim.pid, 19)  # SIGSTOP: SIGTERM would do nothing now
        script = await_or_kill(victim.pid, "false", "the sleeper's pid", grace=1)
        out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and out.stdout.strip() == "KILLED", out
        assert victim.wait(timeout=5) == -9
    finally:
        victim.kill()
        victim.wait(timeout=5)


def test_await_or_kill_leaves_a_member_that_answers() -> None:
    from recovery.plan import await_or_kill

    victim = subprocess.Popen(["sleep", "60"])
    try:
        script = await_or_kill(victim.pid, "true", "the sleeper", grace=5)
        out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "ANSWERED" and victim.poll() is None
    finally:
        victim.kill()
        victim.wait(timeout=5)


def test_a_tie_between_a_survivor_and_a_stopped_node_goes_to_the_survivor() -> None:
    # seen on the Kubernetes tier: nothing was written after the kills, all at one seqno
    plan = galera.plan(site(), observation(down("ctl1", 943), down("ctl2", 943),
                                           up("ctl3", 943, "non-Primary", 1)))
    assert plan.bootstrap == "ctl3" and "pc.bootstrap=YES" in plan.steps[0].command
    assert "broken in favour of a survivor" in plan.why


def test_the_platform_watch_names_a_platform_that_bootstrapped_twice_split_brain() -> None:
    """openstack-helm's second reboot seen by the ``platform`` watch: every pod Primary
    and Synced, which is not recovered, and is named split brain."""
    from recovery.platform import galera_seen

    split = GaleraView({"ctl1": GaleraState(2, "Primary", "Synced", True, 65, UUID),
                        "ctl2": GaleraState(1, "Primary", "Synced", True, 64, UUID),
                        "ctl3": GaleraState(2, "Primary", "Synced", True, 65, UUID)}, {})
    done, said = galera_seen(split, 3)
    assert not done and said.startswith("galera SPLIT BRAIN, 2 Primary components: ")
    whole = GaleraView({n: GaleraState(3, "Primary", "Synced", True, 65, UUID)
                        for n in ("ctl1", "ctl2", "ctl3")}, {})
    assert galera_seen(whole, 3) == (True, "galera " + whole.describe())
