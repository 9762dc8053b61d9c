"""RabbitMQ recovery planning is pure: which case was found, and what is done about it."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

from chaos import inventory
from chaos.probes import RabbitView
from chaos.services.rabbitmq import QuorumQueue, RabbitState
from chaos.steps import Await
from recovery import rabbitmq
from recovery.rabbitmq import NodeState
from tests.unit.test_inventory import VALID

NODES = {"ctl1": "rabbit@ctl1", "ctl2": "rabbit@ctl2", "ctl3": "rabbit@ctl3"}


def site() -> inventory.Site:
    data = copy.deepcopy(VALID)
    for ctl in data["controllers"]:
        ctl["rabbitmq"].update(pidfile="/run/rabbit.pid", start="exec rabbitmq-server",
                               data_dir="/var/lib/rabbitmq/mnesia")
    return inventory.parse(data)


def view(states: dict[str, RabbitState | None]) -> RabbitView:
    return RabbitView(states, {h: "down" for h, s in states.items() if s is None}, NODES)


def state(running: list[str], partitions: dict[str, list[str]] | None = None,
          queues: dict[str, QuorumQueue] | None = None) -> RabbitState:
    return RabbitState([NODES[r] for r in running], partitions or {},
                       list(NODES.values()), queues or {})


def node(host: str, answers: bool, *, data: bool = True,
         at_shutdown: list[str] | None = None) -> NodeState:
    return NodeState(host, NODES[host], answers, answers, data,
                     [NODES[h] for h in at_shutdown] if at_shutdown else None)


def test_healthy_is_a_no_op() -> None:
    up = state(["ctl1", "ctl2", "ctl3"])
    plan = rabbitmq.plan(site(), (view({"ctl1": up, "ctl2": up, "ctl3": up}),
                                  {h: node(h, True) for h in NODES}))
    assert plan.situation == "healthy" and plan.steps == []


def test_crashed_node_with_data_is_restarted_and_queues_grown() -> None:
    two = state(["ctl1", "ctl2"])
    plan = rabbitmq.plan(site(), (view({"ctl1": two, "ctl2": two, "ctl3": None}),
                                  {"ctl1": node("ctl1", True), "ctl2": node("ctl2", True),
                                   "ctl3": node("ctl3", False)}))
    assert plan.situation == "crashed with data: ctl3"
    assert [s.wait for s in plan.steps] == [Await("running", "ctl3"), None]
    assert "grow rabbit@ctl3 all" in plan.steps[1].command
    assert not any("forget_cluster_node" in s.command for s in plan.steps)


def test_wiped_node_is_forgotten_by_a_survivor_first() -> None:
    two = state(["ctl1", "ctl2"])
    plan = rabbitmq.plan(site(), (view({"ctl1": two, "ctl2": two, "ctl3": None}),
                                  {"ctl1": node("ctl1", True), "ctl2": node("ctl2", True),
                                   "ctl3": node("ctl3", False, data=False)}))
    assert plan.situation == "lost its data: ctl3"
    forget, start, grow = plan.steps
    assert "forget_cluster_node rabbit@ctl3" in forget.command
    assert forget.target == "ssh://root@10.0.0.1"  # run on a survivor
    assert "joins as a new member" in start.effect
    assert "rabbitmq-queues -n rabbit@ctl3 grow" in grow.command


def test_whole_cluster_stopped_starts_the_last_stopped_node_first() -> None:
    plan = rabbitmq.plan(site(), (view({"ctl1": None, "ctl2": None, "ctl3": None}), {
        "ctl1": node("ctl1", False, at_shutdown=["ctl1", "ctl2", "ctl3"]),
        "ctl2": node("ctl2", False, at_shutdown=["ctl2", "ctl3"]),
        "ctl3": node("ctl3", False, at_shutdown=["ctl3"])}))
    assert plan.situation == "whole cluster stopped"
    assert plan.bootstrap == "ctl3"
    assert "10.0.0.3" in plan.steps[0].target and plan.steps[0].wait == Await("running", "ctl3")
    assert not any("force_load" in s.command for s in plan.steps)


def test_whole_cluster_unknown_order_force_boots_the_first_node_with_data() -> None:
    plan = rabbitmq.plan(site(), (view({"ctl1": None, "ctl2": None, "ctl3": None}), {
        "ctl1": node("ctl1", False, data=False), "ctl2": node("ctl2", False),
        "ctl3": node("ctl3", False)}))
    assert plan.bootstrap == "ctl2"
    assert "force_load" in plan.steps[0].command
    assert "/var/lib/rabbitmq/mnesia/rabbit@ctl2/force_load" in plan.steps[0].command


def test_partition_restarts_the_minority_only() -> None:
    majority = state(["ctl1", "ctl2"], {NODES["ctl1"]: [NODES["ctl3"]]})
    minority = state(["ctl3"], {NODES["ctl3"]: [NODES["ctl1"], NODES["ctl2"]]})
    plan = rabbitmq.plan(site(), (view({"ctl1": majority, "ctl2": majority, "ctl3": minority}),
                                  {h: node(h, True) for h in NODES}))
    assert plan.situation == "partitioned after the network healed"
    assert [s.wait for s in plan.steps[:2]] == [Await("stopped", "ctl3"), Await("running", "ctl3")]
    assert all("10.0.0.3" in s.target for s in plan.steps)


def test_queue_missing_a_member_is_grown() -> None:
    q = {"orders": QuorumQueue(NODES["ctl1"], list(NODES.values()),
                               [NODES["ctl1"], NODES["ctl2"]])}
    up = state(["ctl1", "ctl2", "ctl3"], queues=q)
    plan = rabbitmq.plan(site(), (view({"ctl1": up, "ctl2": up, "ctl3": up}),
                                  {h: node(h, True) for h in NODES}))
    assert plan.situation == "quorum queues missing members"
    assert len(plan.steps) == 1 and "grow rabbit@ctl3" in plan.steps[0].command


# -- issue 11: what the cluster confirmed is never lost, whatever the operator types ------

ALL = ["ctl1", "ctl2", "ctl3"]


def stopped(host: str, *, at_shutdown: list[str] | None = None, members: list[str] | None = None,
            data: bool = True, quorum: bool | None = True, khepri: bool = False) -> NodeState:
    return NodeState(host, NODES[host], False, False, data,
                     [NODES[h] for h in at_shutdown] if at_shutdown else None,
                     [NODES[h] for h in (members or ALL)] if data else None,
                     quorum if data else False, khepri)


def all_down(**states: NodeState) -> tuple[RabbitView, dict[str, NodeState]]:
    return view({"ctl1": None, "ctl2": None, "ctl3": None}), states


def test_all_stopped_a_wiped_node_is_forgotten_by_the_first_before_it_starts() -> None:
    plan = rabbitmq.plan(site(), all_down(
        ctl1=stopped("ctl1", at_shutdown=["ctl1"]), ctl2=stopped("ctl2", at_shutdown=ALL),
        ctl3=stopped("ctl3", data=False)))
    assert plan.refused is None and plan.bootstrap == "ctl1"
    commands = [s.command for s in plan.steps]
    forget = next(i for i, c in enumerate(commands) if "forget_cluster_node rabbit@ctl3" in c)
    start3 = next(i for i, s in enumerate(plan.steps) if s.wait == Await("running", "ctl3"))
    assert plan.steps[0].wait == Await("running", "ctl1") and forget < start3
    assert plan.steps[forget].target == "ssh://root@10.0.0.1"


def test_all_stopped_a_reset_standalone_node_is_not_taken_for_the_last_to_stop() -> None:
    # ctl1 was reset and booted alone: it lists only itself at shutdown, like a last node
    plan = rabbitmq.plan(site(), all_down(
        ctl1=stopped("ctl1", at_shutdown=["ctl1"], members=["ctl1"]),
        ctl2=stopped("ctl2", at_shutdown=["ctl2", "ctl3"]),
        ctl3=stopped("ctl3", at_shutdown=["ctl3"])))
    assert plan.refused is None and plan.bootstrap == "ctl3"
    assert any("ctl1: it was reset and booted on its own" in n for n in plan.notes)
    assert any("forget_cluster_node rabbit@ctl1" in s.command for s in plan.steps)
    assert any(s.command.startswith("rm -rf") and "rabbit@ctl1" in s.command
               for s in plan.steps)
    named = rabbitmq.plan(site(), all_down(
        ctl1=stopped("ctl1", at_shutdown=["ctl1"], members=["ctl1"]),
        ctl2=stopped("ctl2", at_shutdown=["ctl2", "ctl3"]),
        ctl3=stopped("ctl3", at_shutdown=["ctl3"])), force_node="ctl1")
    assert named.refused is not None and named.refused.startswith(
        "--node ctl1: it was reset and booted on its own")


def test_all_stopped_naming_a_node_that_stopped_earlier_is_refused_naming_the_last() -> None:
    observed = all_down(ctl1=stopped("ctl1", at_shutdown=ALL),
                        ctl2=stopped("ctl2", at_shutdown=["ctl2", "ctl3"]),
                        ctl3=stopped("ctl3", at_shutdown=["ctl3"]))
    plan = rabbitmq.plan(site(), observed, force_node="ctl1")
    assert plan.steps == [] and plan.refused is not None
    assert "The node to boot first is ctl3 (--node ctl3)" in plan.refused
    assert rabbitmq.plan(site(), observed, force_node="ctl3").bootstrap == "ctl3"


def test_all_stopped_on_khepri_is_refused_clearly() -> None:
    plan = rabbitmq.plan(site(), all_down(**{h: stopped(h, khepri=True) for h in ALL}))
    assert plan.refused is not None and plan.refused.startswith(
        "the metadata store is Khepri (RabbitMQ 4.x)")


def test_a_quorum_queue_whose_majority_lost_its_data_is_refused_up_front() -> None:
    q = {"orders": QuorumQueue(NODES["ctl1"], list(NODES.values()), [NODES["ctl1"]])}
    one = state(["ctl1"], queues=q)
    plan = rabbitmq.plan(site(), (view({"ctl1": one, "ctl2": None, "ctl3": None}),
                                  {"ctl1": node("ctl1", True),
                                   "ctl2": node("ctl2", False, data=False),
                                   "ctl3": node("ctl3", False, data=False)}))
    assert plan.steps == [] and plan.refused is not None
    assert plan.refused.startswith("quorum queue(s) orders lost their majority for good: "
                                   "orders had members on rabbit@ctl2, rabbit@ctl3")
    # one member lost of three keeps the majority: recovered as before
    two = state(["ctl1", "ctl2"], queues=q)
    plan = rabbitmq.plan(site(), (view({"ctl1": two, "ctl2": two, "ctl3": None}),
                                  {"ctl1": node("ctl1", True), "ctl2": node("ctl2", True),
                                   "ctl3": node("ctl3", False, data=False)}))
    assert plan.refused is None and plan.situation == "lost its data: ctl3"


def test_a_partial_wipe_is_a_lost_node_not_a_crash() -> None:
    two = state(["ctl1", "ctl2"])
    partial = NodeState("ctl3", NODES["ctl3"], False, False, True, None,
                        list(NODES.values()), False, False)
    plan = rabbitmq.plan(site(), (view({"ctl1": two, "ctl2": two, "ctl3": None}),
                                  {"ctl1": node("ctl1", True), "ctl2": node("ctl2", True),
                                   "ctl3": partial}))
    assert plan.situation == "lost its data: ctl3"
    assert any("quorum queue data (quorum/) is gone" in n for n in plan.notes)
    forget, reset, start, grow = plan.steps
    assert "forget_cluster_node rabbit@ctl3" in forget.command
    assert reset.command.startswith("rm -rf") and "rabbit@ctl3" in reset.command
    assert "joins as a new member" in start.effect and "grow" in grow.command


def test_an_answering_node_booted_on_its_own_is_stopped_and_joins_as_new() -> None:
    two = state(["ctl1", "ctl2"])
    alone = RabbitState([NODES["ctl3"]], {}, [NODES["ctl3"]], {})
    states = {"ctl1": node("ctl1", True), "ctl2": node("ctl2", True),
              "ctl3": NodeState("ctl3", NODES["ctl3"], True, True, True, None, [NODES["ctl3"]],
                                True, False)}
    states["ctl1"] = NodeState("ctl1", NODES["ctl1"], True, True, True, None,
                               list(NODES.values()), True, False)
    plan = rabbitmq.plan(site(), (view({"ctl1": two, "ctl2": two, "ctl3": alone}), states))
    assert plan.situation == "booted on its own: ctl3"
    assert [s.wait for s in plan.steps] == [Await("stopped", "ctl3"), None, None,
                                            Await("running", "ctl3"), None]


def test_parse_data_reads_the_files_as_rabbitmq_writes_them(tmp_path: Path) -> None:
    mnesia = tmp_path / "rabbit@ctl1"
    (mnesia / "quorum" / "rabbit@ctl1").mkdir(parents=True)
    (mnesia / "quorum" / "rabbit@ctl1" / "00000001.wal").write_text("x")
    (mnesia / "schema.DAT").write_text("x")
    (mnesia / "nodes_running_at_shutdown").write_text("['rabbit@ctl1',\n 'rabbit@ctl2'].\n")
    (mnesia / "cluster_nodes.config").write_text(
        "{['rabbit@ctl1','rabbit@ctl2'],['rabbit@ctl1','rabbit@ctl2']}.\n")
    (tmp_path / "rabbit@ctl1-feature_flags").write_text("[quorum_queue,\n khepri_db].\n")
    script = rabbitmq._data_script(str(mnesia), "rabbit@ctl1")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                         timeout=10).stdout
    assert rabbitmq.parse_data(out) == (True, ["rabbit@ctl1", "rabbit@ctl2"],
                                        ["rabbit@ctl1", "rabbit@ctl2"], True, True)
    (mnesia / "quorum" / "rabbit@ctl1" / "00000001.wal").unlink()
    (tmp_path / "rabbit@ctl1-feature_flags").write_text("[quorum_queue].\n")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                         timeout=10).stdout
    assert rabbitmq.parse_data(out)[3:] == (False, False)


def test_all_stopped_the_last_stopped_node_was_wiped_the_next_latest_force_boots() -> None:
    # stop ctl1, stop ctl2, then ctl3 (still running) loses its disk: ctl2 stopped last
    # of those with data, but it saw ctl3 running, so it must be marked to force-boot
    plan = rabbitmq.plan(site(), all_down(
        ctl1=stopped("ctl1", at_shutdown=ALL), ctl2=stopped("ctl2", at_shutdown=["ctl2", "ctl3"]),
        ctl3=stopped("ctl3", data=False)))
    assert plan.refused is None and plan.bootstrap == "ctl2"
    assert "force_load" in plan.steps[0].command and "rabbit@ctl2" in plan.steps[0].command
    assert any("forget_cluster_node rabbit@ctl3" in s.command for s in plan.steps)
    refused = rabbitmq.plan(site(), all_down(
        ctl1=stopped("ctl1", at_shutdown=ALL), ctl2=stopped("ctl2", at_shutdown=["ctl2", "ctl3"]),
        ctl3=stopped("ctl3", data=False)), force_node="ctl1")
    assert refused.refused is not None
    assert refused.refused.startswith("--node ctl1: ctl1 stopped before ctl2")


# -- issue 13: a member alive but silent ----------------------------------------------------


def test_a_frozen_beam_is_given_time_then_killed_and_the_procedure_plans_again() -> None:
    two = state(["ctl1", "ctl2"])
    frozen = NodeState("ctl3", NODES["ctl3"], False, True, True, None, list(NODES.values()),
                       True, False, 4321, "T", 600)
    plan = rabbitmq.plan(site(), (view({"ctl1": two, "ctl2": two, "ctl3": None}),
                                  {"ctl1": node("ctl1", True), "ctl2": node("ctl2", True),
                                   "ctl3": frozen}))
    assert plan.situation == "members alive but silent" and plan.replan
    (settle,) = plan.steps
    assert "kill -s KILL 4321" in settle.command and "10.0.0.3" in settle.target
    assert "curl -s -o /dev/null -m 2 http://10.0.0.3:15672/" in settle.command
    assert "silent: ctl3: process 4321 alive (stopped by a signal (T), 600s old)" in plan.render()


def test_a_booting_beam_is_not_silent_and_a_start_waits_for_its_port() -> None:
    two = state(["ctl1", "ctl2"])
    booting = NodeState("ctl3", NODES["ctl3"], False, True, True, None, list(NODES.values()),
                        True, False, 4321, "S", 5)
    plan = rabbitmq.plan(site(), (view({"ctl1": two, "ctl2": two, "ctl3": None}),
                                  {"ctl1": node("ctl1", True), "ctl2": node("ctl2", True),
                                   "ctl3": booting}))
    assert not plan.replan and plan.situation == "crashed with data: ctl3"
    start = plan.steps[0]
    # the old instance's listener must be gone before a new one starts (eaddrinuse)
    assert start.command.index("ss -Hltn") < start.command.index("setsid")


def test_all_stopped_with_most_nodes_wiped_is_refused_unless_named() -> None:
    observed = all_down(ctl1=stopped("ctl1", at_shutdown=["ctl1"]),
                        ctl2=stopped("ctl2", data=False), ctl3=stopped("ctl3", data=False))
    plan = rabbitmq.plan(site(), observed)
    assert plan.refused is not None and plan.refused.startswith(
        "a majority of the nodes lost their data (ctl2, ctl3)")
    named = rabbitmq.plan(site(), observed, force_node="ctl1")
    assert named.refused is None and named.bootstrap == "ctl1"
