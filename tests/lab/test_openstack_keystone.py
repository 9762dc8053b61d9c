"""A real Keystone at 127.0.0.40 on SQLite (chaoslab.openstack): up, a token, the
``openstack`` CLI, SIGKILL of the server and its start again the way the harness starts
a process service, and a down that leaves nothing running. Needs no other part of the
lab; keystone's venv is built on first use (~55 s) in $CHAOS_OPENSTACK_CACHE."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.steps import restart_log, start_unless_running
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.openstack import KeystoneLab, TokenResult
from chaoslab.procs import Daemon

ADDRESS = "127.0.0.40"  # outside the lab's addresses: runs beside a running lab


@pytest.fixture
def keystone(root_required: None, tmp_path: Path) -> Iterator[tuple[KeystoneLab, list[Daemon]]]:
    component = KeystoneLab(tmp_path / "keystone", ADDRESS,
                            f"sqlite:///{tmp_path / 'keystone.db'}")
    daemons: list[Daemon] = []
    try:
        component.up(daemons.append)
        yield component, daemons
    finally:
        component.down(daemons)


def _token(component: KeystoneLab, *, ok: bool, timeout: float) -> TokenResult:
    def probe() -> tuple[bool, TokenResult]:
        result = component.token(timeout=3.0)
        return result.ok == ok, result

    return wait_for(probe, what=f"keystone {'issuing' if ok else 'refusing'} tokens",
                    timeout=timeout, interval=0.2)


def test_keystone_killed_and_started_again(keystone: tuple[KeystoneLab, list[Daemon]]) -> None:
    component, daemons = keystone
    assert component.token().ok
    [check] = component.status()
    assert check.ok, check.detail

    killed = procs.read_pidfile(component.pidfile)
    assert killed is not None and procs.alive(killed)
    os.kill(killed, signal.SIGKILL)
    # the orphaned worker serves on for up to ~1 s
    refused = _token(component, ok=False, timeout=10)
    assert refused.error, refused
    assert not component.status()[0].ok

    # the very command a fault's revert or a recovery runs for a process service
    pidfile = str(component.pidfile)
    procs.run(["sh", "-c", start_unless_running(pidfile, component.start_command(),
                                                restart_log(pidfile))], timeout=30)
    issued = _token(component, ok=True, timeout=60)
    assert issued.error is None
    restarted = procs.read_pidfile(component.pidfile)
    assert restarted not in (None, killed)

    component.down(daemons)
    assert component.server_pids() == []
    assert not procs.port_open(ADDRESS, component.port)


def test_openstack_cli_issues_a_token(keystone: tuple[KeystoneLab, list[Daemon]]) -> None:
    component, _ = keystone
    assert component.clouds_yaml.stat().st_mode & 0o777 == 0o600
    result = procs.run(
        [str(component.venv / "bin" / "openstack"), "token", "issue", "-f", "value", "-c", "id"],
        timeout=60, env={**component.openstack_env(), "PYTHONWARNINGS": "ignore"})
    # a fernet token: ~180 URL-safe characters
    assert len(result.stdout.strip()) > 100, result.stdout
    assert component.admin_password() not in result.stdout + result.stderr
