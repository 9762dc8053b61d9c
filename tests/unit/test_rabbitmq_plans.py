"""RabbitMQ recovery planning is pure: which case was found, and what is done about it."""

from __future__ import annotations

import copy

from chaos import inventory
from chaos.probes import RabbitView
from chaos.services.rabbitmq import QuorumQueue, RabbitState
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
    assert [s.wait for s in plan.steps] == ["running:ctl3", None]
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
    assert "10.0.0.3" in plan.steps[0].target and plan.steps[0].wait == "running:ctl3"
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
    assert [s.wait for s in plan.steps[:2]] == ["stopped:ctl3", "running:ctl3"]
    assert all("10.0.0.3" in s.target for s in plan.steps)


def test_queue_missing_a_member_is_grown() -> None:
    q = {"orders": QuorumQueue(NODES["ctl1"], list(NODES.values()),
                               [NODES["ctl1"], NODES["ctl2"]])}
    up = state(["ctl1", "ctl2", "ctl3"], queues=q)
    plan = rabbitmq.plan(site(), (view({"ctl1": up, "ctl2": up, "ctl3": up}),
                                  {h: node(h, True) for h in NODES}))
    assert plan.situation == "quorum queues missing members"
    assert len(plan.steps) == 1 and "grow rabbit@ctl3" in plan.steps[0].command
