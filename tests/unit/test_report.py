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
