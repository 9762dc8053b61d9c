"""The secrets canary finds a planted secret in each form and place it could leak, and
nothing in clean output (tests/lab/test_suite.py runs it over a full suite's outputs)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.canary import leaks

SECRETS = {"db password": ("chaos", "CANARY-db-7Qz9xK2pL"),
           "erlang cookie": ("", "CANARYCOOKIEQWERTYUIOPASDF")}


def test_a_clean_report_has_no_leak(tmp_path: Path) -> None:
    (tmp_path / "journal.jsonl").write_text(json.dumps({"event": "fault.inject"}) + "\n")
    assert leaks(SECRETS, texts={"stdout": "1 passed"}, folders=[tmp_path]) == []


def test_each_planted_form_is_found_where_it_was_planted(tmp_path: Path) -> None:
    auth = base64.b64encode(b"chaos:CANARY-db-7Qz9xK2pL").decode()
    (tmp_path / "journal.jsonl").write_text(json.dumps({"header": f"Basic {auth}"}))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "report.html").write_text("amqp://chaos:CANARY-db-7Qz9xK2pL@ctl1/")
    found = leaks(SECRETS, texts={"terminal": "cookie CANARYCOOKIEQWERTYUIOPASDF"},
                  folders=[tmp_path])
    assert sorted(found) == sorted([
        f"db password (basic-auth) in {tmp_path / 'journal.jsonl'}",
        f"db password (plain) in {tmp_path / 'sub' / 'report.html'}",
        "erlang cookie (plain) in terminal",
    ])
