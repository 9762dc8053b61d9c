"""The scenario suite itself, run the way the README's first command runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from chaoslab.lab import Lab
from tests.canary import leaks


def test_the_scenario_suite_passes_against_the_lab(lab: Lab, tmp_path: Path) -> None:
    report = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "chaos.cli", "run", "--report-dir",
                             str(report), "-q"], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"report: {report.resolve()}" in result.stdout
    suite = ET.parse(report / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert int(suite.get("tests", 0)) >= 15
    assert int(suite.get("failures", 1)) == 0 and int(suite.get("errors", 1)) == 0
    events = [json.loads(line) for line in (report / "journal.jsonl").read_text().splitlines()]
    names = {e["event"] for e in events}
    assert {"fault.inject", "fault.revert", "oracle.galera", "oracle.vms"} <= names
    # every scenario that injected a fault also saw it reverted
    injected = {e["fault"] for e in events if e["event"] == "fault.inject"}
    reverted = {e["fault"] for e in events if e["event"] == "fault.revert"}
    assert injected == reverted
    # MTTR and oracle counts reach the JUnit properties
    props = {p.get("name") for p in suite.iter("property")}
    assert {"mttr_seconds", "lost_writes", "vms_survived"} <= props
    # the secrets canary: the lab's own secrets (random, distinctive) in no form anywhere
    # the run wrote: terminal output, journal, JUnit, HTML, the fault ledger, its logs
    secrets = lab.secrets()
    planted = {"db password": (secrets.db_user, secrets.db_password),
               "rabbitmq password": (secrets.rabbit_user, secrets.rabbit_password),
               "erlang cookie": ("", secrets.erlang_cookie)}
    if lab.openstack_enabled():
        planted["keystone admin password"] = ("admin", lab.keystone().admin_password())
    from chaos.ledger import ledger_dir

    # and the logs the harness's restarts write beside each daemon's pidfile
    restart_logs = sorted(lab.root.rglob("chaos-restart.log"))
    found = leaks(planted, texts={"stdout": result.stdout, "stderr": result.stderr},
                  folders=[report, ledger_dir()], files=restart_logs)
    assert found == [], found
