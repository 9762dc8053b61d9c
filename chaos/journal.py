"""The journal: every event of a run with a timestamp; MTTR and downtime come from it.

Events are appended as JSON lines as they happen (so a killed run still leaves its
story), and kept in memory for the report.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaos.steps import Step


class Event(StrEnum):
    """Every event name a journal records, once: reports and tests read these strings."""

    SCENARIO_START = "scenario.start"  # a scenario began (the plugin)
    SCENARIO_END = "scenario.end"  # a scenario ended
    RUNBOOK_STEP = "runbook.step"  # a destructive step shown (and confirmed) in runbook mode
    PLAN_STEP = "plan.step"  # a rehearsal's step, in a dry run
    SAMPLE = "sample"  # the monitor's per-second lanes
    FAULT_PLANNED = "fault.planned"  # a fault planned in a dry run
    FAULT_INJECT = "fault.inject"  # a fault injected (MTTR starts)
    FAULT_INJECT_FAILED = "fault.inject_failed"  # a fault's injection failed (it is reverted)
    FAULT_REVERT = "fault.revert"  # a fault reverted
    FAULT_REVERT_FAILED = "fault.revert_failed"  # a revert failed (left in the ledger)
    WORKLOAD_START = "workload.start"  # the writer and publisher started
    WORKLOAD_STOP = "workload.stop"  # they stopped
    ORACLE_GALERA = "oracle.galera"  # the Galera data-loss verdict
    ORACLE_RABBITMQ = "oracle.rabbitmq"  # the RabbitMQ verdict
    ORACLE_VMS = "oracle.vms"  # the VM survival verdict
    ORACLE_API = "oracle.api"  # the OpenStack API's answers while the scenario ran
    ORACLE_OPENSTACK = "oracle.openstack"  # the boot/delete workload and placement (chaos.cloud)
    ORACLE_NOVA_HOST = "oracle.nova_host"  # nova's view of a compute host after a drill
    CHECK = "check"  # an outcome check and its result
    DEGRADED = "degraded"  # a cluster observed short of quorum or members (downtime starts)
    QUORUM = "quorum"  # a cluster observed with quorum again (MTTR and downtime end)
    HEALTHY = "healthy"  # every member healthy
    RECOVERY_START = "recovery.start"  # a procedure starts its plan
    RECOVERY_STEP = "recovery.step"  # a procedure's step
    RECOVERY_FAILED = "recovery.failed"  # a procedure's step failed
    RECOVERY_REPLAN = "recovery.replan"  # silent members settled: the procedure observes again
    RECOVERY_DONE = "recovery.done"  # a procedure's final condition holds
    RECOVERY_SECONDS = "recovery.seconds"  # how long a recovery took
    RECOVERY_PLAN = "recovery.plan"  # a plan, as rendered
    VMS_RESTARTED_BY_HARNESS = "vms.restarted_by_harness"  # VMs a scenario started again
    RABBITMQ_LEADER = "rabbitmq.leader"  # a quorum queue's leader before and after
    RABBITMQ_RECOVERY = "rabbitmq.recovery"  # RabbitMQ's recovery situation
    ROLL = "roll"  # a rolling fault's hosts and its stated pace (seconds between hosts)


class Journal:
    def __init__(self, path: Path | None = None, *, scenario: str | None = None) -> None:
        self.path = path
        self.scenario = scenario
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        # set in runbook mode: asked before every destructive step
        self.confirm: Callable[[Step], None] | None = None

    def event(self, name: Event, **data: Any) -> dict[str, Any]:
        # the plain string: the JSON lines and the in-memory events say the same
        entry = {"t": round(time.time(), 3), "event": name.value, **data}
        if self.scenario:
            entry.setdefault("scenario", self.scenario)
        with self._lock:
            self.events.append(entry)
            if self.path is not None:
                with open(self.path, "a") as out:
                    out.write(json.dumps(entry, default=str) + "\n")
        return entry

    def first(self, name: Event, after: float = 0.0) -> float | None:
        """Time of the first ``name`` event at or after ``after``."""
        for entry in self.events:
            if entry["event"] == name and entry["t"] >= after:
                return float(entry["t"])
        return None

    def mttr(self, injected: Event = Event.FAULT_INJECT,
             healthy: Event = Event.HEALTHY) -> float | None:
        """Seconds from the first fault to the first fully healthy observation after it."""
        start = self.first(injected)
        if start is None:
            return None
        end = self.first(healthy, after=start)
        return None if end is None else round(end - start, 3)

    def properties(self) -> dict[str, object]:
        """Figures for JUnit properties: MTTR, downtime and the oracles' counts."""
        props: dict[str, object] = {}
        mttr = self.mttr(healthy=Event.QUORUM)
        if mttr is not None:
            props["mttr_seconds"] = mttr
        start = self.first(Event.FAULT_INJECT)
        degraded = self.first(Event.DEGRADED, after=start or 0.0) if start else None
        back = self.first(Event.QUORUM, after=degraded or 0.0) if degraded else None
        if degraded is not None and back is not None:
            props["downtime_seconds"] = round(back - degraded, 3)
        for entry in self.events:
            if entry["event"] == Event.ORACLE_GALERA:
                props["lost_writes"] = sum(entry["lost"].values())
                props["unknown_writes"] = entry["unknown"]
                props["acknowledged_writes"] = entry["acknowledged"]
            elif entry["event"] == Event.ORACLE_RABBITMQ:
                props["lost_messages"] = entry["lost"]
                props["confirmed_messages"] = entry["confirmed"]
            elif entry["event"] == Event.ORACLE_API:
                props["api_success_rate"] = entry["success_rate"]
                props["api_error_window_seconds"] = entry["error_window"]
            elif entry["event"] == Event.ORACLE_OPENSTACK:
                props["openstack_success_rate"] = entry["success_rate"]
                props["openstack_error_window_seconds"] = entry["error_window"]
                props["openstack_servers_left"] = entry["left_behind"]
                props["openstack_servers_not_removed"] = entry["not_removed"]
                if entry.get("slowest_what"):
                    props["openstack_slowest_request_seconds"] = entry["slowest"]
                if entry.get("placement_ok") is not None:
                    props["placement_consistent"] = entry["placement_ok"]
            elif entry["event"] == Event.ORACLE_NOVA_HOST:
                props["nova_compute_up_seconds"] = entry["up_after"]
                props["nova_servers_not_active"] = len(entry["lost"])
                props["nova_new_server_booted"] = entry["booted"]
            elif entry["event"] == Event.ORACLE_VMS:
                props["vms_survived"] = len(entry["survived"])
                props["vms_died"] = len(entry["died"]) + len(entry["restarted"])
        return props
