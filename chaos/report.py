"""One self-contained HTML report per run (no network assets): verdict table, MTTR and
oracle counts, and per scenario a timeline — fault bands over lanes of every member's
observed state — drawn with matplotlib (SVG, inline) into a Jinja2 template."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

import jinja2
import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # after choosing the backend

from chaos.journal import Event

GOOD = {"Synced", "running"}
COLOURS = {"good": "#66bb6a", "down": "#e53935", "other": "#ffa726"}


def _colour(state: str) -> str:
    if state in GOOD or state.startswith("running pid"):
        return COLOURS["good"]
    if state in ("down", "shutoff", "shut off") or state.startswith("error"):
        return COLOURS["down"]
    return COLOURS["other"]


def _junit(path: Path) -> dict[str, dict[str, Any]]:
    cases: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return cases
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        nodeid = classname.replace(".", "/") + ".py::" + name
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        outcome = ("failed" if failure is not None
                   else "skipped" if case.find("skipped") is not None else "passed")
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        cases[nodeid] = {"outcome": outcome, "seconds": round(float(case.get("time", 0)), 1),
                         "props": props,
                         "failure": (failure.get("message", "") if failure is not None else "")}
    return cases


def _timeline(events: list[dict[str, Any]]) -> str:
    start = events[0]["t"]
    end = events[-1]["t"]
    lanes: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for e in events:
        if e["event"] == Event.SAMPLE:
            for lane, state in e["lanes"].items():
                lanes[lane].append((e["t"] - start, state))
    names = sorted(lanes)
    height = max(1.6, 0.32 * len(names) + 1.0)
    fig, ax = plt.subplots(figsize=(11, height))
    for i, lane in enumerate(names):
        points = lanes[lane]
        for j, (t, state) in enumerate(points):
            until = points[j + 1][0] if j + 1 < len(points) else end - start
            ax.broken_barh([(t, max(until - t, 0.05))], (i - 0.35, 0.7),
                           facecolors=_colour(state))
    faults: dict[str, float] = {}
    for e in events:
        if e["event"] == Event.FAULT_INJECT:
            faults[e["fault"]] = e["t"] - start
        elif e["event"] == Event.FAULT_REVERT and e["fault"] in faults:
            begin = faults.pop(e["fault"])
            ax.axvspan(begin, e["t"] - start, color="#1e88e5", alpha=0.15)
            ax.text(begin, len(names) - 0.4, e["fault"].rsplit("-", 1)[0], fontsize=7,
                    color="#0d47a1", va="bottom")
        elif e["event"] in (Event.RECOVERY_START, Event.RECOVERY_DONE):
            ax.axvline(e["t"] - start, color="#6a1b9a", lw=0.8,
                       ls="--" if e["event"] == Event.RECOVERY_START else "-")
    for fault, begin in faults.items():  # never reverted in this scenario's window
        ax.axvspan(begin, end - start, color="#c62828", alpha=0.15)
        ax.text(begin, len(names) - 0.4, fault + " (open)", fontsize=7, color="#b71c1c")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_ylim(-0.6, len(names) + 0.2)
    ax.set_xlim(0, max(end - start, 1))
    ax.set_xlabel("seconds since the scenario started (blue band: fault in place; "
                  "purple: recovery)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _steps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    start = events[0]["t"]
    keep: dict[str, str] = {
        Event.FAULT_INJECT: "fault", Event.FAULT_REVERT: "fault",
        Event.RECOVERY_START: "situation", Event.RECOVERY_STEP: "effect",
        Event.RECOVERY_DONE: "procedure", Event.DEGRADED: "service", Event.QUORUM: "service",
        Event.ORACLE_GALERA: "lost", Event.ORACLE_RABBITMQ: "lost", Event.ORACLE_VMS: "died"}
    return [{"t": round(e["t"] - start, 1), "event": e["event"],
             "what": str(e.get(keep[e["event"]], ""))}
            for e in events if e["event"] in keep]


def tally(report_dir: Path) -> dict[str, int]:
    """How many scenarios passed, failed and were skipped, from the run's JUnit file."""
    outcomes = [case["outcome"] for case in _junit(report_dir / "junit.xml").values()]
    return {o: outcomes.count(o) for o in ("passed", "failed", "skipped")}


def build(report_dir: Path, title: str = "") -> Path:
    """Write report.html next to journal.jsonl and junit.xml; return its path."""
    by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
    journal = report_dir / "journal.jsonl"
    if journal.exists():
        for line in journal.read_text().splitlines():
            with_line = json.loads(line)
            by_scenario[with_line.get("scenario", "")].append(with_line)
    cases = _junit(report_dir / "junit.xml")
    scenarios: list[dict[str, Any]] = []
    for nodeid in list(cases) + [n for n in by_scenario if n and n not in cases]:
        case = cases.get(nodeid, {"outcome": "unknown", "seconds": "", "props": {},
                                  "failure": ""})
        events = by_scenario.get(nodeid, [])
        scenarios.append({
            "name": nodeid, "anchor": "s" + str(len(scenarios)),
            **case, "svg": _timeline(events) if len(events) > 1 else "",
            "steps": _steps(events) if events else [],
        })
    env = jinja2.Environment(loader=jinja2.PackageLoader("chaos", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    html = env.get_template("report.html.j2").render(
        title=title or report_dir.name, scenarios=scenarios,
        passed=sum(s["outcome"] == "passed" for s in scenarios),
        failed=sum(s["outcome"] == "failed" for s in scenarios),
        skipped=sum(s["outcome"] == "skipped" for s in scenarios))
    out = report_dir / "report.html"
    out.write_text(html)
    return out
