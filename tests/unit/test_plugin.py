"""The pytest plugin in real pytest sessions (pytester): options, markers, dry run,
blast-radius declarations, and a revert that happens however the scenario ends."""

from __future__ import annotations

import copy
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from chaos.lab import procs
from chaos.wait import wait_for
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


def test_dry_run_prints_the_fault_and_acts_on_nothing(
    pytester: pytest.Pytester, inventory_file: Path, tmp_path: Path
) -> None:
    pytester.makepyfile(test_drill="""
        def test_kill(faults):
            faults.add("kill", "ctl2", "galera")
            raise AssertionError("a dry run must not get past the fault")
    """)
    result = pytester.runpytest("-s", f"--inventory={inventory_file}", "--dry-run")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*fault kill-ctl2-galera-*: kill galera on ctl2*",
                                 "*[[]local://[]] pid=$(cat */ctl2.pid) && kill -s KILL*"])
    assert not (tmp_path / "ledger").exists() or not list((tmp_path / "ledger").iterdir())


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
