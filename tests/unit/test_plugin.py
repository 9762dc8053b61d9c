"""The pytest plugin in real pytest sessions (pytester): options, markers, dry run (the
whole plan, acting on nothing), blast-radius declarations, and a revert that happens
however the scenario ends."""

from __future__ import annotations

import copy
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from chaos.wait import wait_for
from chaoslab import procs
from tests.unit.test_inventory import VALID


@pytest.fixture
def inventory_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site of sleep processes on this machine (local:// targets, addresses nobody
    listens on), so faults act on real processes and nothing else."""
    monkeypatch.setenv("CHAOS_LEDGER_DIR", str(tmp_path / "ledger"))
    data = copy.deepcopy(VALID)
    for i, ctl in enumerate(data["controllers"], 1):
        ctl["address"] = f"127.0.9.{10 + i}"
        del ctl["ssh"]
        ctl["access"] = "local"  # the sleepers, and the iptables rules, are this machine's
        pidfile = tmp_path / f"ctl{i}.pid"
        ctl["galera"] = {"target": "local://", "datadir": str(tmp_path),
                         "pidfile": str(pidfile),
                         "start": f"echo $$ > {pidfile}; exec sleep 300"}
        ctl["rabbitmq"]["target"] = "local://"
    data["computes"] = []
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    for ctl in data["controllers"]:
        subprocess.run(["setsid", "-f", "sh", "-c", "exec </dev/null >/dev/null 2>&1; "
                        + ctl["galera"]["start"]], check=True, timeout=10)
    pidfiles = [Path(c["galera"]["pidfile"]) for c in data["controllers"]]
    wait_for(lambda: (all(p.exists() and p.read_text().strip() for p in pidfiles), pidfiles),
             what="sleepers", timeout=5, interval=0.05)
    yield path
    for pidfile in pidfiles:
        pid = procs.read_pidfile(pidfile)
        if pid:
            procs.signal_pids([pid], signal.SIGCONT)
            procs.stop([pid], timeout=2)


def test_markers_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["*destructive:*", "*blast_radius(galera=0*"])


def test_options_are_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--inventory=INVENTORY*", "*--lab*", "*--dry-run*"])


DRILL = """
    import pytest
    from chaos import expect
    from recovery import galera as recover_galera

    @pytest.mark.blast_radius(galera=2)
    def test_drill(site, faults, workload, journal):
        expect.galera_healthy(site)
        with workload.running():
            faults.add("kill", "ctl1", "galera")
            faults.add("freeze", "ctl2", "galera")
            expect.galera_non_primary(site, "ctl3", journal=journal)
            plan = recover_galera.recover(site, journal=journal)
            expect.galera_healthy(site, journal=journal)
        expect.check("ctl3 is bootstrapped in place", lambda: plan.bootstrap == "ctl3",
                     plan.render, journal=journal)
        workload.assert_nothing_lost()
"""


def sleepers(tmp_path: Path) -> dict[str, tuple[int, str]]:
    """Each sleeper's pid and state: what a fault would have changed."""
    found = {}
    for i in (1, 2, 3):
        pid = procs.read_pidfile(tmp_path / f"ctl{i}.pid")
        assert pid is not None
        state = procs.proc_state(pid)
        # sleeping or, for an instant, running: the same to a fault (stopped "T" or
        # gone is what a freeze or a kill would leave)
        found[f"ctl{i}"] = (pid, "up" if state in ("S", "R", "D") else str(state))
    return found


def test_dry_run_prints_the_whole_plan_in_order_and_acts_on_nothing(
    pytester: pytest.Pytester, inventory_file: Path, tmp_path: Path
) -> None:
    pytester.makepyfile(test_drill=DRILL)
    before = sleepers(tmp_path)
    # -q and no -s: the plan is part of the terminal report, not captured output
    result = pytester.runpytest("-q", "-rs", f"--inventory={inventory_file}", "--dry-run",
                                f"--chaos-report-dir={tmp_path / 'rep'}")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([
        "*dry run: the plan of each scenario, nothing acted on*",
        "test_drill.py::test_drill  [[]13 steps[]]",
        "  1. wait for every Galera node Primary and Synced, up to 120s",
        "  2. start workload: Galera writer on ctl1, ctl2, ctl3 *; RabbitMQ publisher with "
        "confirms on ctl1, ctl2, ctl3 *",
        "  3. fault kill-ctl1-galera-*: kill galera on ctl1",
        "       inject:",
        "         [[]local://[]] pid=$(cat */ctl1.pid) && kill -s KILL \"$pid\"",
        "         expect: galera on ctl1 is gone (SIGKILL)",
        "       revert:",
        "         [[]local://[]] *exec sleep 300*",
        "  4. fault freeze-ctl2-galera-*: freeze galera on ctl2",
        "         [[]local://[]] kill -s STOP \"$(cat */ctl2.pid)\"",
        "         [[]local://[]] kill -s CONT \"$(cat */ctl2.pid)\" || true",
        "  5. wait for ctl3 to leave the Primary component, up to 60s",
        "  6. recover galera (the plan itself is shown at run time, or by "
        "`chaos recover galera --dry-run` at that point)",
        "       observe: every node: SQL where it answers; *grastate.dat*--wsrep-recover*",
        "       decide: *bootstrap from the most advanced node*IST*",
        "       done when: every node is Primary and Synced",
        "  7. wait for every Galera node Primary and Synced, up to 120s",
        "  8. stop workload",
        "  9. check: ctl3 is bootstrapped in place",
        " 10. oracle: every acknowledged write is on every Galera node (ctl1, ctl2, ctl3)*",
        " 11. oracle: every confirmed message is consumed from chaos-oracle-* at least once*",
        # what the scenario's end reverts, newest first
        " 12. revert freeze-ctl2-galera-* (freeze galera on ctl2):",
        "         [[]local://[]] kill -s CONT*",
        " 13. revert kill-ctl1-galera-* (kill galera on ctl1):",
        "SKIPPED [[]1[]] test_drill.py:*: dry run: 13 steps planned, nothing acted on",
    ])
    # nothing was signalled or started, nothing recorded, no secret even read
    # (DB_PASSWORD is not set)
    assert sleepers(tmp_path) == before
    assert all(state == "up" for _, state in before.values())
    assert not (tmp_path / "ledger").exists() or not list((tmp_path / "ledger").iterdir())
    journal = (tmp_path / "rep" / "journal.jsonl").read_text()
    assert '"event": "plan.step"' in journal and '"fault.inject"' not in journal


def dry_run_fails(pytester: pytest.Pytester, inventory_file: Path, tmp_path: Path,
                  drill: str, *, failed: int, lines: list[str]) -> None:
    """A dry run of ``drill`` that fails ``failed`` scenarios, saying ``lines``, and
    signals no process."""
    pytester.makepyfile(test_drill=drill)
    before = sleepers(tmp_path)
    result = pytester.runpytest("-q", f"--inventory={inventory_file}", "--dry-run")
    result.assert_outcomes(failed=failed)
    result.stdout.fnmatch_lines(lines)
    assert sleepers(tmp_path) == before


def test_dry_run_keeps_the_blast_radius_guard(
    pytester: pytest.Pytester, inventory_file: Path, tmp_path: Path
) -> None:
    dry_run_fails(pytester, inventory_file, tmp_path,
                  DRILL.replace("@pytest.mark.blast_radius(galera=2)", ""), failed=1, lines=[
        "*FaultError: blast radius: freeze on ctl2 would take 2 of 3 galera members down*",
        "test_drill.py::test_drill  [[]could not be planned (call)[]]",
        "  3. fault kill-ctl1-galera-*: kill galera on ctl1",
        "  4. revert kill-ctl1-galera-* (kill galera on ctl1):",
    ])


def test_dry_run_refuses_what_bypasses_the_plan(
    pytester: pytest.Pytester, inventory_file: Path, tmp_path: Path
) -> None:
    """A scenario that runs a Step or a probe itself fails in a dry run, acting on
    nothing, instead of reaching the site."""
    dry_run_fails(pytester, inventory_file, tmp_path, """
        from chaos import probes

        def test_step_by_hand(site, faults):
            fault = faults.add("kill", "ctl1", "galera")
            fault.inject[0].execute(site)

        def test_probe_by_hand(site, journal):
            probes.galera(site)
    """, failed=2, lines=[
        "*DryRunViolation: dry run: the step `pid=$(cat */ctl1.pid) && kill -s KILL*` on "
        "local:// would reach the site*",
        "*DryRunViolation: dry run: probing Galera would reach the site*",
    ])


def test_a_failing_scenario_still_reverts_its_fault(
    pytester: pytest.Pytester, inventory_file: Path, tmp_path: Path
) -> None:
    pytester.makepyfile(test_drill="""
        def test_freeze_then_fail(faults):
            faults.add("kill", "ctl1", "galera")
            raise AssertionError("the scenario failed")
    """)
    result = pytester.runpytest(f"--inventory={inventory_file}")
    result.assert_outcomes(failed=1)
    # the kill's revert started the service again, and the ledger is empty
    pid = procs.read_pidfile(tmp_path / "ctl1.pid")
    assert pid is not None and procs.alive(pid)
    assert list((tmp_path / "ledger").glob("*.json")) == []


def test_blast_radius_needs_a_declaration(pytester: pytest.Pytester, inventory_file: Path,
                                          tmp_path: Path) -> None:
    pytester.makepyfile(test_drill="""
        import pytest
        from chaos.errors import FaultError

        def test_undeclared(faults):
            faults.add("fill-disk", "ctl1", "galera", fill_mib=1)
            faults.add("partition", "ctl1", "galera")
            with pytest.raises(FaultError, match="blast radius"):
                faults.add("partition", "ctl2", "galera")

        @pytest.mark.blast_radius(galera=2)
        def test_declared(faults):
            faults.add("freeze", "ctl1", "galera")
            faults.add("freeze", "ctl2", "galera")
    """)
    result = pytester.runpytest(f"--inventory={inventory_file}")
    result.assert_outcomes(passed=2)
    # every fault was reverted: the sleepers run again and no rule is left
    for i in (1, 2):
        pid = procs.read_pidfile(tmp_path / f"ctl{i}.pid")
        assert pid is not None and procs.proc_state(pid) in ("S", "R")
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=30)
    assert "127.0.9.11" not in rules.stdout


def test_no_inventory_and_no_lab_is_exit_3(pytester: pytest.Pytester,
                                           monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("CHAOS_LAB_DIR", str(tmp_path / "no-lab"))
    monkeypatch.delenv("CHAOS_INVENTORY", raising=False)
    pytester.makepyfile(test_drill="""
        def test_needs_site(site):
            pass
    """)
    result = pytester.runpytest()
    assert result.ret == 3
    result.stdout.fnmatch_lines(["*no inventory given and no running lab*"])


def test_the_first_fault_waits_for_the_monitors_first_sample(
    pytester: pytest.Pytester, inventory_file: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's lanes must show the steady state the fault broke. Here the monitor's
    first sample is slow for a real reason: RabbitMQ's management port accepts and never
    answers, so each probe runs to its timeout, while the drill injects at once."""
    import json
    import socket

    with socket.create_server(("0.0.0.0", 0)) as silent:  # listens, never answers
        site = yaml.safe_load(inventory_file.read_text())
        monkeypatch.setenv("DB_PASSWORD", "unused")  # the probes get as far as the network
        (tmp_path / "rabbit-password").write_text("unused")
        site["credentials"]["rabbitmq"]["password"] = {"file": str(tmp_path / "rabbit-password")}
        for ctl in site["controllers"]:
            ctl["rabbitmq"]["management_port"] = silent.getsockname()[1]
        inventory_file.write_text(yaml.safe_dump(site))
        pytester.makepyfile(test_drill="""
            def test_freeze_at_once(faults):
                faults.revert(faults.add("freeze", "ctl1", "galera"))
        """)
        result = pytester.runpytest(f"--inventory={inventory_file}",
                                    f"--chaos-report-dir={tmp_path / 'rep'}")
    result.assert_outcomes(passed=1)
    events = [json.loads(line) for line in
              (tmp_path / "rep" / "journal.jsonl").read_text().splitlines()]
    first_sample = next(e["t"] for e in events if e["event"] == "sample")
    injected = next(e["t"] for e in events if e["event"] == "fault.inject")
    assert first_sample <= injected
    lanes = next(e["lanes"] for e in events if e["event"] == "sample")
    assert set(lanes) >= {"galera/ctl1", "rabbitmq/ctl1"}, lanes
