"""The HTML report from a journal and a JUnit file: self-contained, a timeline per
scenario, and a failing scenario visibly failing."""

from __future__ import annotations

import json
import re
from pathlib import Path

from chaos import report

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest"
 tests="2" failures="1">
<testcase classname="scenarios.test_galera" name="test_kill_one[ctl1]" time="12.5">
 <properties><property name="mttr_seconds" value="7.25"/>
 <property name="lost_writes" value="0"/></properties></testcase>
<testcase classname="scenarios.test_galera" name="test_full_outage" time="30.1">
 <failure message="AssertionError: DATA LOST: galera: 10 acknowledged">trace</failure>
</testcase></testsuite></testsuites>"""


def events(scenario: str, t0: float) -> list[dict[str, object]]:
    lanes_ok = {"galera/ctl1": "Synced", "galera/ctl2": "Synced", "vm/cmp1-vm1": "running pid 7"}
    lanes_bad = {**lanes_ok, "galera/ctl1": "down"}
    return [
        {"t": t0, "event": "scenario.start", "scenario": scenario},
        {"t": t0 + 1, "event": "sample", "lanes": lanes_ok, "scenario": scenario},
        {"t": t0 + 2, "event": "fault.inject", "fault": "kill-ctl1-galera-abc123",
         "scenario": scenario},
        {"t": t0 + 3, "event": "sample", "lanes": lanes_bad, "scenario": scenario},
        {"t": t0 + 5, "event": "recovery.start", "situation": "degraded", "scenario": scenario},
        {"t": t0 + 8, "event": "recovery.done", "procedure": "galera", "scenario": scenario},
        {"t": t0 + 9, "event": "sample", "lanes": lanes_ok, "scenario": scenario},
        {"t": t0 + 10, "event": "fault.revert", "fault": "kill-ctl1-galera-abc123",
         "scenario": scenario},
        {"t": t0 + 11, "event": "scenario.end", "scenario": scenario},
    ]


def test_report_has_verdicts_timelines_and_a_visible_failure(tmp_path: Path) -> None:
    (tmp_path / "junit.xml").write_text(JUNIT)
    lines = events("scenarios/test_galera.py::test_kill_one[ctl1]", 1000.0)
    lines += events("scenarios/test_galera.py::test_full_outage", 2000.0)
    (tmp_path / "journal.jsonl").write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    html = report.build(tmp_path).read_text()
    assert "PASSED" not in html.split("</h1>")[0] and "FAILED" in html.split("</h1>")[0]
    assert '<tr class="failed">' in html and '<tr class="passed">' in html
    assert "DATA LOST: galera: 10 acknowledged" in html
    assert "7.25" in html  # MTTR from the JUnit properties
    assert html.count("<svg") == 2
    assert "kill-ctl1-galera" in html and "galera/ctl1" in html
    # self-contained: nothing is fetched (XML namespace names are identifiers, not fetches)
    fetch = (r'(?:src|href)\s*=\s*["\'](?:https?:)?//'
             r'|url\(\s*["\']?(?:https?:)?//|<link\b|<script\b[^>]*\bsrc=')
    fetches = re.findall(fetch, html)
    assert fetches == []


def test_report_without_a_journal_still_lists_verdicts(tmp_path: Path) -> None:
    (tmp_path / "junit.xml").write_text(JUNIT)
    html = report.build(tmp_path).read_text()
    assert "no timeline recorded" in html
    assert "test_full_outage" in html


def fifty_computes(scenario: str, t0: float) -> list[dict[str, object]]:
    """A compute drill on a site of 3 controllers and 50 computes of 20 VMs each, as the
    monitor samples it: libvirt killed on cmp7 (its VMs unobserved meanwhile, two die),
    and on cmp23 a container kill that takes every VM with it."""
    def lanes(t: int) -> dict[str, str]:
        out = {f"{svc}/ctl{i}": ("Synced" if svc == "galera" else "running")
               for i in range(1, 4) for svc in ("galera", "rabbitmq")}
        for h in range(1, 51):
            host = f"cmp{h}"
            if host == "cmp7" and 4 <= t < 9:
                out[f"libvirt/{host}"] = "down"
                continue
            for v in range(1, 21):
                dead = ((host == "cmp7" and v <= 2 and t >= 9)
                        or (host == "cmp23" and t >= 5))
                out[f"vm/{host}/{host}-vm{v}"] = "shutoff" if dead else f"running pid {v}"
        return out

    out: list[dict[str, object]] = [{"t": t0, "event": "scenario.start", "scenario": scenario}]
    for t in range(1, 14):
        out.append({"t": t0 + t, "event": "sample", "lanes": lanes(t), "scenario": scenario})
        if t == 3:
            out.append({"t": t0 + 3.5, "event": "fault.inject", "fault": "kill-cmp7-libvirt-1",
                        "scenario": scenario})
        if t == 10:
            out.append({"t": t0 + 10.5, "event": "fault.revert", "fault": "kill-cmp7-libvirt-1",
                        "scenario": scenario})
    out.append({"t": t0 + 14, "event": "scenario.end", "scenario": scenario})
    return out


def test_fifty_computes_keep_the_faulted_hosts_and_summarise_the_rest(tmp_path: Path) -> None:
    events = fifty_computes("scenarios/test_compute.py::test_kill_libvirt[cmp7]", 1000.0)
    lanes = report._lanes(events)
    assert len(lanes) == 6 + 50 * 21  # every VM, every libvirt, every controller member
    assert lanes["libvirt/cmp7"][:2] == [(0.0, "running"), (1.0, "running")]
    rows = report._rows(lanes)
    labels = [r.label for r in rows]
    assert len(rows) <= 40, labels
    # the faulted hosts' lanes are there, each on its own
    assert "libvirt/cmp7" in labels
    assert {"vm/cmp7/cmp7-vm1", "vm/cmp7/cmp7-vm2"} <= set(labels)
    assert "vm/cmp7: 18 more VMs" in labels
    assert {f"vm/cmp23/cmp23-vm{v}" for v in range(1, 21)} <= set(labels)
    # and the healthy ones are one lane per kind of host
    notes = {r.label: r.note for r in rows}
    assert notes["ctl1\u2013ctl3"] == "3 hosts, healthy throughout"
    assert notes["cmp1\u2013cmp6, cmp8\u2013cmp22, cmp24\u2013cmp50"] == (
        "48 hosts, 960 VMs, healthy throughout")
    # the cmp7 VMs libvirt could not list are grey while it was down, not green
    summary = next(r.points for r in rows if r.label == "vm/cmp7: 18 more VMs")
    assert [s for _, s in summary] == ["running", report.UNSEEN, "running"]
    (tmp_path / "journal.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    html = report.build(tmp_path).read_text()
    assert "libvirt/cmp7" in html and "48 hosts, 960 VMs" in html


def test_lanes_start_at_the_scenario_start() -> None:
    start_and_first_sample = fifty_computes("s", 0.0)[:2]
    events = report._lanes([
        *start_and_first_sample,
        {"t": 5.0, "event": "fault.inject", "fault": "f-1"},
        {"t": 6.0, "event": "sample", "lanes": {"galera/ctl1": "down", "vm/cmp1-vm1": "running"}},
        {"t": 9.0, "event": "scenario.end"}])
    # seen before the first fault: its steady state from the start
    assert events["galera/ctl1"][:2] == [(0.0, "Synced"), (1.0, "Synced")]
    # first seen after it (an older journal, a monitor late): grey from the start
    assert events["vm/cmp1-vm1"][0] == (0.0, report.UNSEEN)
    assert report.lane_parts("vm/cmp1-vm1") == ("vm", "cmp1", "cmp1-vm1")
    assert report.lane_parts("vm/cmp1/cmp1-vm1") == ("vm", "cmp1", "cmp1-vm1")
    assert report.lane_parts("vm/web01") == ("vm", "other", "web01")
    assert report.lane_parts("libvirt/cmp1") == ("libvirt", "cmp1", "")


def test_oracle_rows_say_what_each_number_counts() -> None:
    start = {"t": 0.0, "event": "scenario.start"}
    oracles = [
        {"t": 1.0, "event": "oracle.galera", "acknowledged": 120, "unknown": 1,
         "lost": {"ctl1": 0, "ctl2": 3}, "duplicated": {"ctl1": 0}, "phantom": {},
         "unreadable": {}},
        {"t": 2.0, "event": "oracle.rabbitmq", "confirmed": 8, "unknown": 0, "lost": 0,
         "duplicated": 2, "phantom": 0},
        {"t": 3.0, "event": "oracle.vms", "survived": ["cmp1-vm1", "cmp1-vm2"],
         "restarted": [], "died": ["cmp2-vm1"]},
    ]
    what = [s["what"] for s in report._steps([start, *oracles])]
    assert what == [
        "galera: 120 acknowledged, 3 lost (ctl2: 3), 1 unknown",
        "rabbitmq: 8 confirmed, 0 lost, 0 unknown, 2 duplicated (at-least-once: allowed)",
        "VMs: 2 survived, 0 restarted, 1 died; died: cmp2-vm1",
    ]


def test_the_verdict_table_wraps_and_folds_long_failures(tmp_path: Path) -> None:
    long = "AssertionError: DATA LOST: " + "galera: lost id 1234, " * 200
    (tmp_path / "junit.xml").write_text(JUNIT.replace(
        "AssertionError: DATA LOST: galera: 10 acknowledged", long))
    html = report.build(tmp_path).read_text()
    table = html.split('<table id="verdicts">')[1].split("</table>")[0]
    assert "<colgroup>" in table and "table-layout: fixed" in html
    summary = table.split('<details class="failure"><summary>')[1].split("</summary>")[0]
    assert len(summary) <= report.FAILURE_HEADLINE and summary.endswith("…")
    assert long.strip() in table  # the whole message, one click away
    assert "test_<wbr>full_<wbr>outage" in table


def test_the_openstack_workload_draws_a_lane_per_api_with_its_errors() -> None:
    from chaos.cloud import Operation, Request, judge

    requests = [Request(float(t), "compute", "poll", not 4 <= t < 9, 0.1) for t in range(20)]
    requests += [Request(t + 0.5, "identity", "token", True, 0.1) for t in range(20)]
    verdict = judge([Operation("bd-0", True, 7.0)], requests, end=20.0, began=1003.0)
    event = {"t": 1030.0, "event": "oracle.openstack", **verdict.fields()}
    lanes = report._lanes([{"t": 1000.0, "event": "scenario.start"},
                           {"t": 1005.0, "event": "fault.inject", "fault": "kill-ctl1-1"},
                           event, {"t": 1031.0, "event": "scenario.end"}])
    # from the scenario's start (steady before the fault), down for the 5 s of errors
    assert lanes["openstack/compute"] == [(0.0, "running"), (3.0, "running"),
                                          (7.0, "down"), (12.0, "running")]
    assert lanes["openstack/identity"] == [(0.0, "running"), (3.0, "running")]
    assert verdict.fields()["spans"] == {"compute": [[4.0, 9.0]]}
