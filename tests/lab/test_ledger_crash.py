"""The ledger's promise, on real processes and real iptables (no lab needed): a harness
killed with -9 in the middle of a fault leaves a record, and ``chaos heal`` puts the
system back; SIGTERM and exceptions revert on the spot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from chaos.wait import wait_for
from chaoslab import procs

ADDRESSES = ["127.0.5.11", "127.0.5.12", "127.0.5.13"]


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    """A site whose 'galera' services are plain sleep processes on this machine."""
    controllers = []
    for i, address in enumerate(ADDRESSES, 1):
        pidfile = tmp_path / f"ctl{i}.pid"
        controllers.append({
            "name": f"ctl{i}", "address": address, "access": "local",
            "galera": {"target": "local://", "datadir": str(tmp_path / f"data{i}"),
                       "pidfile": str(pidfile),
                       "start": f"echo $$ > {pidfile}; exec sleep 600"},
        })
    secret = tmp_path / "secret"
    secret.write_text("x")
    data = {"name": "crash-test", "credentials": {
        "db": {"user": "u", "password": {"file": str(secret)}},
        "rabbitmq": {"user": "u", "password": {"file": str(secret)}},
        "erlang_cookie": {"file": str(secret)}}, "controllers": controllers}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    for ctl in controllers:
        start = ctl["galera"]["start"]
        subprocess.run(["setsid", "-f", "sh", "-c", f"exec </dev/null >/dev/null 2>&1; {start}"],
                       check=True, timeout=10)
    for ctl in controllers:
        wait_for(lambda c=ctl: (Path(c["galera"]["pidfile"]).exists()
                                and bool(Path(c["galera"]["pidfile"]).read_text().strip()), c),
                 what="sleepers", timeout=5, interval=0.05)
    yield path
    for ctl in controllers:
        pid = int(Path(ctl["galera"]["pidfile"]).read_text())
        procs.signal_pids([pid], signal.SIGCONT)
        procs.stop([pid], timeout=2)
    subprocess.run(["sh", "-c", "iptables-save -t filter | grep -F 'chaos:crash-' | "
                    "sed 's/^-A /-D /' | while read -r r; do eval iptables -w 5 $r; done"],
                   timeout=30, check=False)


def rules(tag: str) -> list[str]:
    out = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return [line for line in out.splitlines() if f"chaos:{tag}" in line]


def harness(site: Path, ledger: Path, kind: str, service: str | None, fault_id: str,
            *, then: str = "sleep") -> subprocess.Popen[str]:
    """A child harness that injects one fault inside ``with Faults(...)`` and then
    sleeps (to be killed) or raises."""
    code = textwrap.dedent(f"""
        import sys, time
        from chaos import inventory
        from chaos.faults import Faults, plan, sigterm_raises
        site = inventory.load({str(site)!r})
        with sigterm_raises(), Faults(site, inventory_path={str(site)!r}) as faults:
            faults.inject(plan(site, {kind!r}, "ctl1", {service!r}, fault_id={fault_id!r}))
            print("INJECTED", flush=True)
            if {then!r} == "raise":
                raise RuntimeError("scenario failed")
            time.sleep(60)
    """)
    env = {**os.environ, "CHAOS_LEDGER_DIR": str(ledger)}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_injected(child: subprocess.Popen[str]) -> None:
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "INJECTED", child.stderr.read() if child.stderr else ""


def heal(site: Path, ledger: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHAOS_LEDGER_DIR": str(ledger)}
    return subprocess.run([sys.executable, "-m", "chaos.cli", "heal", "--inventory", str(site)],
                          capture_output=True, text=True, timeout=120, env=env)


def pid_of(site: Path, node: str) -> int:
    data = yaml.safe_load(site.read_text())
    ctl = next(c for c in data["controllers"] if c["name"] == node)
    return int(Path(ctl["galera"]["pidfile"]).read_text())


def test_kill9_mid_partition_then_heal_removes_the_rules(site_file: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    child = harness(site_file, ledger, "partition", None, "crash-part")
    wait_injected(child)
    assert len(rules("crash-part")) == 4  # both directions to ctl2 and ctl3
    child.kill()
    child.wait(timeout=10)
    assert len(list(ledger.glob("*.json"))) == 1
    assert len(rules("crash-part")) == 4, "the rules outlive the dead harness"
    result = heal(site_file, ledger)
    assert result.returncode == 0, result.stderr
    assert "reverted crash-part" in result.stdout
    assert rules("crash-part") == []
    assert list(ledger.glob("*.json")) == []
    again = heal(site_file, ledger)
    assert again.returncode == 0 and "nothing to heal" in again.stdout


def test_kill9_mid_freeze_then_heal_thaws_the_process(site_file: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    pid = pid_of(site_file, "ctl1")
    child = harness(site_file, ledger, "freeze", "galera", "crash-freeze")
    wait_injected(child)
    # a signal is delivered when the target is next scheduled: wait (bounded) for it
    wait_for(lambda: (procs.proc_state(pid) == "T", procs.proc_state(pid)),
             what="the process stopped", timeout=5, interval=0.02)
    child.kill()
    child.wait(timeout=10)
    time.sleep(0.2)
    assert procs.proc_state(pid) == "T", "still frozen after the harness died"
    result = heal(site_file, ledger)
    assert result.returncode == 0, result.stderr
    assert procs.proc_state(pid) in ("S", "R")
    assert list(ledger.glob("*.json")) == []


def test_sigterm_reverts_before_the_harness_exits(site_file: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    child = harness(site_file, ledger, "partition", "galera", "crash-term")
    wait_injected(child)
    assert rules("crash-term")
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=30)
    assert rules("crash-term") == []
    assert list(ledger.glob("*.json")) == []


def test_a_failing_scenario_still_reverts(site_file: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    pid = pid_of(site_file, "ctl1")
    child = harness(site_file, ledger, "kill", "galera", "crash-raise", then="raise")
    wait_injected(child)
    child.wait(timeout=30)
    assert child.returncode != 0
    assert not procs.alive(pid)
    # the revert started the service again, under a new pid
    new_pid = wait_for(lambda: ((p := pid_of(site_file, "ctl1")) != pid and procs.alive(p), p),
                       what="ctl1 restarted", timeout=10, interval=0.1)
    assert procs.alive(new_pid)
    assert list(ledger.glob("*.json")) == []
