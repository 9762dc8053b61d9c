"""One self-contained HTML report per run (no network assets): verdict table, MTTR and
oracle counts, and per scenario a timeline — fault bands over lanes of every member's
observed state — drawn with matplotlib (SVG, inline) into a Jinja2 template."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # after choosing the backend

from chaos.journal import Event
from chaos.terminal import capped

GOOD = {"Synced", "running", "answers"}
# a lane the monitor did not see at that moment (its probe failed, or its host's libvirt
# was down, or the scenario began before the first sample): grey, not green
UNSEEN = "not observed"
# a domain libvirt answered for before and no longer lists
GONE = "not listed"
COLOURS = {"good": "#66bb6a", "unseen": "#cfd8dc", "other": "#ffa726", "down": "#e53935"}
SEVERITY = {kind: n for n, kind in enumerate(COLOURS)}  # a summary lane shows its worst
# above this many lanes a figure is no longer read lane by lane: healthy hosts are
# summarised (a 50-compute site has about a thousand lanes)
LANE_BUDGET = 40
LABEL_CHARS = 40


def _kind(state: str) -> str:
    # a VM with a live qemu: running, or paused as the lab's fleet starts them (the lanes
    # are about the qemu process surviving; libvirt's pause is not a fault here)
    if state in GOOD or state.startswith(("running pid", "paused pid", "running id",
                                          "paused id")):
        return "good"
    if state == UNSEEN:
        return "unseen"
    if state in ("down", "shutoff", "shut off", GONE) or state.startswith("error"):
        return "down"
    return "other"


def _colour(state: str) -> str:
    return COLOURS[_kind(state)]


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


Series = list[tuple[float, str]]  # (seconds since the scenario started, state)


@dataclass(frozen=True)
class Row:
    """One lane of the figure: a member's own, or a summary of several."""

    label: str
    points: Series
    note: str = ""  # written inside the lane: what a summary lane stands for


def _natural(text: str) -> list[Any]:
    """cmp2 before cmp10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def lane_parts(lane: str) -> tuple[str, str, str]:
    """``<service>/<host>[/<item>]`` as (service, host, item). The older ``vm/<domain>``
    has no host: it is taken from a domain named ``<host>-vm…``, else "other"."""
    service, _, rest = lane.partition("/")
    host, _, item = rest.partition("/")
    if service == "vm" and not item:
        item = host
        host = host.split("-vm")[0] if "-vm" in host else "other"
    elif service == "monitor":  # the monitor's own errors: a group of their own
        host, item = "monitor", rest
    return service, host, item


def _lanes(events: list[dict[str, Any]]) -> dict[str, Series]:
    """Every lane's states from the monitor's samples, each lane from the scenario's
    start. What a sample leaves out is said, not carried over: a controller lane
    missing from a sample was not observed; the domains of a host whose libvirt did not
    answer were not observed, and its libvirt, when absent from a sample that lists
    domains, answered (the monitor names libvirt only when it is down)."""
    start = events[0]["t"]
    first_fault = next((e["t"] - start for e in events if e["event"] == Event.FAULT_INJECT),
                       None)
    samples = [e for e in events if e["event"] == Event.SAMPLE]
    computes = {host for e in samples for service, host, _ in map(lane_parts, e["lanes"])
                if service in ("vm", "libvirt")}
    lanes: dict[str, Series] = defaultdict(list)
    for e in samples:
        # a sample is what the members said when it was asked ("at"), not when written
        t, seen = e.get("at", e["t"]) - start, dict(e["lanes"])
        domains = any(lane_parts(n)[0] in ("vm", "libvirt") for n in seen)
        down = {lane_parts(n)[1] for n, state in seen.items()
                if lane_parts(n)[0] == "libvirt" and state == "down"}
        # every compute's libvirt has a lane, from its first sample, down or not
        absent = (lanes.keys() | {f"libvirt/{h}" for h in computes if h != "other"}) - seen.keys()
        for name in absent:
            service, host, _ = lane_parts(name)
            if service == "libvirt":
                if domains:
                    seen[name] = "running"
            elif service == "vm":
                if domains:
                    seen[name] = UNSEEN if host in down else GONE
            elif service != "monitor":
                seen[name] = UNSEEN
        for name, state in seen.items():
            lanes[name].append((t, str(state)))
    for e in events:
        # the OpenStack workload's APIs: answering, or a stretch of errors
        if e["event"] == Event.ORACLE_OPENSTACK and e.get("began") is not None:
            began = max(float(e["began"]) - start, 0.0)
            for api in sorted(e.get("requested") or e.get("spans") or {}):
                points = lanes[f"openstack/{api}"]
                points.append((began, "running"))
                for a, b in e.get("spans", {}).get(api, []):
                    points += [(began + a, "down"), (began + b, "running")]
    for points in lanes.values():
        if points[0][0] > 0:
            # nothing acted before the first fault: a lane first seen before it shows the
            # steady state from the start; one first seen after it, a grey gap
            steady = first_fault is None or points[0][0] <= first_fault
            points.insert(0, (0.0, points[0][1] if steady else UNSEEN))
    return lanes


def _worst(series: list[Series]) -> Series:
    """One lane for many: at each moment the worst state any of them was in."""
    times = sorted({t for points in series for t, _ in points})
    names = {"good": "running", "unseen": UNSEEN, "other": "degraded", "down": "down"}
    out: Series = []
    index = [0] * len(series)
    for t in times:
        worst = "good"
        for i, points in enumerate(series):
            while index[i] + 1 < len(points) and points[index[i] + 1][0] <= t:
                index[i] += 1
            if points[index[i]][0] <= t:
                kind = _kind(points[index[i]][1])
                worst = max(worst, kind, key=SEVERITY.__getitem__)
        if not out or out[-1][1] != names[worst]:
            out.append((t, names[worst]))
    return out


def _ranges(hosts: list[str]) -> str:
    """cmp1, cmp3 to cmp7 as "cmp1, cmp3\u2013cmp7": consecutive numbers as ranges."""
    runs: list[list[str]] = []
    for host in sorted(hosts, key=_natural):
        m = re.fullmatch(r"(.*?)(\d+)", host)
        if runs and m:
            prev = re.fullmatch(r"(.*?)(\d+)", runs[-1][-1])
            if prev and prev[1] == m[1] and int(prev[2]) + 1 == int(m[2]):
                runs[-1].append(host)
                continue
        runs.append([host])
    return capped(", ".join(r[0] if len(r) == 1 else f"{r[0]}\u2013{r[-1]}" for r in runs),
                  LABEL_CHARS)


def _rows(lanes: dict[str, Series]) -> list[Row]:
    """The figure's lanes, host by host. Within the budget, every lane. Beyond it, the
    hosts whose every lane was good throughout become one summary lane per kind of host,
    and on a host that saw trouble, its VMs that never did become one lane."""
    def order(name: str) -> tuple[list[Any], str, list[Any]]:
        service, host, item = lane_parts(name)
        return _natural(host), service, _natural(item)

    names = sorted(lanes, key=order)
    if len(names) <= LANE_BUDGET:
        return [Row(n, lanes[n]) for n in names]
    by_host: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_host[lane_parts(name)[1]].append(name)

    def clean(name: str) -> bool:
        return all(_kind(state) in ("good", "unseen") for _, state in lanes[name])

    rows: list[Row] = []
    healthy: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for host, members in by_host.items():
        if host not in ("other", "monitor") and all(clean(n) for n in members):
            healthy[tuple(sorted({lane_parts(n)[0] for n in members}))].append(host)
            continue
        quiet = [n for n in members if lane_parts(n)[2] and clean(n)]
        for name in members:
            if name not in quiet or len(quiet) == 1:
                rows.append(Row(name, lanes[name]))
        if len(quiet) > 1:
            rows.append(Row(f"vm/{host}: {len(quiet)} more VMs",
                            _worst([lanes[n] for n in quiet]), "no trouble seen"))
    for hosts in healthy.values():
        members = [n for h in hosts for n in by_host[h]]
        vms = sum(lane_parts(n)[0] == "vm" for n in members)
        unseen = any(_kind(state) == "unseen" for n in members for _, state in lanes[n])
        rows.append(Row(_ranges(hosts), _worst([lanes[n] for n in members]),
                        f"{len(hosts)} hosts" + (f", {vms} VMs" if vms else "")
                        + ", healthy " + ("whenever observed" if unseen else "throughout")))
    return rows


def _timeline(events: list[dict[str, Any]]) -> str:
    start = events[0]["t"]
    end = events[-1]["t"] - start
    rows = _rows(_lanes(events))
    height = max(1.6, 0.32 * len(rows) + 1.0)
    fig, ax = plt.subplots(figsize=(11, height))
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i  # the first row on top
        bars: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for j, (t, state) in enumerate(row.points):
            until = row.points[j + 1][0] if j + 1 < len(row.points) else end
            spans = bars[_colour(state)]
            if spans and abs(sum(spans[-1]) - t) < 1e-9:  # one bar, not a seam per sample
                spans[-1] = (spans[-1][0], until - spans[-1][0])
            else:
                spans.append((t, max(until - t, 0.05)))
        for colour, spans in bars.items():  # one artist per colour, not per sample
            ax.broken_barh(spans, (y - 0.35, 0.7), facecolors=colour)
        if row.note:
            ax.text(0.3, y, row.note, fontsize=7, va="center", color="#1b5e20")
    top = len(rows) - 0.4
    faults: dict[str, float] = {}
    for e in events:
        if e["event"] == Event.FAULT_INJECT:
            faults[e["fault"]] = e["t"] - start
        elif e["event"] == Event.FAULT_REVERT and e["fault"] in faults:
            begin = faults.pop(e["fault"])
            ax.axvspan(begin, e["t"] - start, color="#1e88e5", alpha=0.15)
            ax.text(begin, top, e["fault"].rsplit("-", 1)[0], fontsize=7,
                    color="#0d47a1", va="bottom")
        elif e["event"] in (Event.RECOVERY_START, Event.RECOVERY_DONE):
            ax.axvline(e["t"] - start, color="#6a1b9a", lw=0.8,
                       ls="--" if e["event"] == Event.RECOVERY_START else "-")
    for fault, begin in faults.items():  # never reverted in this scenario's window
        ax.axvspan(begin, end, color="#c62828", alpha=0.15)
        ax.text(begin, top, fault + " (open)", fontsize=7, color="#b71c1c")
    ax.set_yticks(range(len(rows)), [capped(r.label, LABEL_CHARS) for r in reversed(rows)],
                  fontsize=7)
    ax.set_ylim(-0.6, len(rows) + 0.2)
    ax.set_xlim(0, max(end, 1))
    ax.set_xlabel("seconds since the scenario started (blue band: fault in place; "
                  "purple: recovery; grey: not observed)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _count(value: Any) -> int:
    """A count the journal holds as a number, per node (a mapping) or as names (a list)."""
    if isinstance(value, dict):
        return sum(int(v) for v in value.values())
    if isinstance(value, list):
        return len(value)
    return int(value or 0)


def _per_node(value: Any) -> str:
    if not isinstance(value, dict) or not any(value.values()):
        return ""
    return " (" + ", ".join(f"{node}: {n}" for node, n in value.items() if n) + ")"


def oracle_words(e: dict[str, Any]) -> str:
    """An oracle's verdict as a sentence: what each number counts."""
    if e["event"] == Event.ORACLE_GALERA:
        text = (f"galera: {_count(e.get('acknowledged'))} acknowledged, "
                f"{_count(e.get('lost'))} lost{_per_node(e.get('lost'))}, "
                f"{_count(e.get('unknown'))} unknown")
        for what in ("duplicated", "phantom"):
            if _count(e.get(what)):
                text += f", {_count(e.get(what))} {what}{_per_node(e.get(what))}"
        if e.get("unreadable"):
            text += "; unreadable: " + ", ".join(e["unreadable"])
        return text
    if e["event"] == Event.ORACLE_RABBITMQ:
        text = (f"rabbitmq: {_count(e.get('confirmed'))} confirmed, {_count(e.get('lost'))} "
                f"lost, {_count(e.get('unknown'))} unknown")
        if _count(e.get("duplicated")):
            text += f", {_count(e.get('duplicated'))} duplicated (at-least-once: allowed)"
        if _count(e.get("phantom")):
            text += f", {_count(e.get('phantom'))} phantom"
        return text
    if e["event"] == Event.ORACLE_API:
        text = (f"API: {_count(e.get('succeeded'))} of {_count(e.get('requests'))} "
                f"reads answered ({float(e.get('success_rate') or 0):.0%}), longest "
                f"error window {float(e.get('error_window') or 0):.1f}s")
        if e.get("first_error"):
            text += f"; first error: {e['first_error']}"
        return text
    if e["event"] == Event.ORACLE_OPENSTACK:
        text = (f"OpenStack: {_count(e.get('succeeded'))} of {_count(e.get('operations'))} "
                f"boot/delete operations ({float(e.get('success_rate') or 0):.0%}), longest "
                f"API error window {float(e.get('error_window') or 0):.1f}s, "
                f"{_count(e.get('left_behind'))} servers left ({_count(e.get('removed'))} "
                f"removed, {_count(e.get('not_removed'))} not)")
        if e.get("slowest_what"):
            text += (f", slowest request {float(e.get('slowest') or 0):.1f}s "
                     f"({e['slowest_what']})")
        if e.get("placement_ok") is not None:
            text += ", placement " + ("consistent" if e["placement_ok"] else
                                      f"INCONSISTENT: {e.get('placement')}")
        if e.get("first_error"):
            text += f"; first error: {e['first_error']}"
        return text
    if e["event"] == Event.ORACLE_NOVA_HOST:
        up = e.get("up_after")
        text = (f"nova on {e.get('host')}: nova-compute "
                + (f"up and enabled after {float(up):.1f}s" if up is not None else
                   f"NOT up within {float(e.get('within') or 0):g}s ({e.get('service')})")
                + f", {_count(e.get('kept'))} servers still ACTIVE, "
                f"{_count(e.get('lost'))} not, a new server: {e.get('new_boot')}")
        if len(e.get("seen") or []) > 1:
            text += f"; nova-compute seen: {' -> '.join(e['seen'])}"
        if e.get("lost"):
            text += f"; not ACTIVE: {', '.join(e['lost'])}"
        return text
    text = (f"VMs: {_count(e.get('survived'))} survived, {_count(e.get('restarted'))} "
            f"restarted, {_count(e.get('died'))} died")
    for what in ("restarted", "died"):
        if e.get(what):
            text += f"; {what}: {', '.join(e[what])}"
    return text


ORACLES = (Event.ORACLE_GALERA, Event.ORACLE_RABBITMQ, Event.ORACLE_API,
           Event.ORACLE_OPENSTACK, Event.ORACLE_NOVA_HOST, Event.ORACLE_VMS)


def _steps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    start = events[0]["t"]
    keep: dict[str, str] = {
        Event.FAULT_INJECT: "fault", Event.FAULT_REVERT: "fault",
        Event.RECOVERY_START: "situation", Event.RECOVERY_STEP: "effect",
        Event.RECOVERY_DONE: "procedure", Event.DEGRADED: "service", Event.QUORUM: "service"}
    return [{"t": round(e["t"] - start, 1), "event": e["event"],
             "what": oracle_words(e) if e["event"] in ORACLES else str(e.get(keep[e["event"]], ""))}
            for e in events if e["event"] in keep or e["event"] in ORACLES]


# a failure's first words in the verdict table; the whole message one click away
FAILURE_HEADLINE = 140


def _figures(props: dict[str, str]) -> dict[str, tuple[str, bool]]:
    """The verdict table's oracle cells, each a phrase and whether it shows a loss: three
    short cells instead of seven narrow columns of bare numbers."""
    def phrase(*parts: tuple[str, str]) -> str:
        return ", ".join(f"{props[key]} {word}" for key, word in parts if key in props)

    return {
        "writes": (phrase(("acknowledged_writes", "acked"), ("lost_writes", "lost"),
                          ("unknown_writes", "unknown")),
                   props.get("lost_writes", "0") not in ("0", "")),
        "messages": (phrase(("confirmed_messages", "confirmed"), ("lost_messages", "lost")),
                     props.get("lost_messages", "0") not in ("0", "")),
        "vms": (phrase(("vms_survived", "survived"), ("vms_died", "died or restarted")),
                props.get("vms_died", "0") not in ("0", "")),
    }


def _breakable(text: str) -> markupsafe.Markup:
    """A node id that may wrap after its separators, not only at its rare spaces."""
    escaped = str(markupsafe.escape(text))
    return markupsafe.Markup(re.sub(r"(/|::|_|\[|,)", r"\1<wbr>", escaped))


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
            "figures": _figures(case["props"]),
            "headline": capped(case["failure"], FAILURE_HEADLINE) if case["failure"] else "",
        })
    env = jinja2.Environment(loader=jinja2.PackageLoader("chaos", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    env.filters["breakable"] = _breakable
    html = env.get_template("report.html.j2").render(
        title=title or report_dir.name, scenarios=scenarios,
        passed=sum(s["outcome"] == "passed" for s in scenarios),
        failed=sum(s["outcome"] == "failed" for s in scenarios),
        skipped=sum(s["outcome"] == "skipped" for s in scenarios))
    out = report_dir / "report.html"
    out.write_text(html)
    return out
