"""The Galera part of the local lab, for real: three mariadbd on 127.0.1.11-13.

Uses its own addresses (not the lab's 127.0.0.11-13), so it can run next to a lab.
The tests in this module share one cluster and run in file order; the last one
takes it down.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest

from chaos.errors import LabError
from chaos.services.galera import probe
from chaoslab import procs
from chaoslab.galera import GALERA_LIB, MARIADBD, GaleraLab
from chaoslab.model import Host, LabSecrets
from chaoslab.procs import Daemon

pytestmark = pytest.mark.lab

NODES = [Host("ctl1", "127.0.1.11"), Host("ctl2", "127.0.1.12"), Host("ctl3", "127.0.1.13")]
PORTS = (3306, 4567, 4568, 4444)


def _machine_fit() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mariadbd is started as root and drops to mysql)"
    for path in (MARIADBD, GALERA_LIB):
        if not Path(path).exists():
            return f"{path} missing"
    return None


@dataclass
class Running:
    lab: GaleraLab
    root: Path
    daemons: list[Daemon]
    secrets: LabSecrets
    up_seconds: float


def _pids_of_root(root: Path) -> list[int]:
    """Live processes whose command line names a path under ``root``."""
    marker = str(root) + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = entry.joinpath("cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in args and procs.alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    reason = _machine_fit()
    if reason:
        pytest.skip(reason)
    # not tmp_path: pytest's temp dirs are mode 700 and user mysql could not enter them
    root = Path(tempfile.mkdtemp(prefix="chaos-galera-test-", dir="/tmp"))
    root.chmod(0o755)
    secrets = LabSecrets.load_or_create(root)
    lab = GaleraLab(root / "galera", NODES, secrets)
    problems = lab.preflight()
    if problems:
        shutil.rmtree(root)
        pytest.fail("preflight: " + "; ".join(problems))
    daemons: list[Daemon] = []
    started = time.monotonic()
    try:
        lab.up(daemons.append)
        up_seconds = time.monotonic() - started
        print(f"galera up in {up_seconds:.2f}s")
        yield Running(lab, root / "galera", daemons, secrets, up_seconds)
    finally:
        lab.down(daemons)
    # keep the logs of a failed run for inspection; a passing one leaves nothing
    if not _pids_of_root(root):
        shutil.rmtree(root, ignore_errors=True)


def _connect(run: Running, host: Host) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    return pymysql.connect(
        host=host.address,
        port=3306,
        user=run.secrets.db_user,
        password=run.secrets.db_password,
        connect_timeout=3,
        read_timeout=5,
        write_timeout=5,
        autocommit=True,
    )


def test_preflight_reports_address_port_in_use(tmp_path: Path) -> None:
    if _machine_fit():
        pytest.skip(str(_machine_fit()))
    # addresses no other test uses, so the only listener there is ours
    hosts = [Host("p1", "127.0.1.14"), Host("p2", "127.0.1.15"), Host("p3", "127.0.1.16")]
    lab = GaleraLab(tmp_path / "galera", hosts, LabSecrets("u", "p", "u", "p", "c"))
    assert not [p for p in lab.preflight() if "in use" in p]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.1.15", 4444))
        sock.listen(1)
        in_use = [p for p in lab.preflight() if "in use" in p]
    assert in_use == ["galera: 127.0.1.15:4444 already in use"]


def test_preflight_reports_root_mysql_cannot_enter(tmp_path: Path) -> None:
    if _machine_fit():
        pytest.skip(str(_machine_fit()))
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    hosts = [Host("p1", "127.0.1.14")]
    lab = GaleraLab(closed / "galera", hosts, LabSecrets("u", "p", "u", "p", "c"))
    assert any("cannot reach" in p for p in lab.preflight())


class _BrokenJoiner(GaleraLab):
    """ctl2 gets an option mariadbd refuses, so it exits right after start."""

    def config_text(self, node: str) -> str:
        text = super().config_text(node)
        return text + "no-such-option-for-the-test = 1\n" if node == "p2" else text


def test_up_fails_fast_naming_the_dead_node_and_its_log(tmp_path: Path) -> None:
    if _machine_fit():
        pytest.skip(str(_machine_fit()))
    root = Path(tempfile.mkdtemp(prefix="chaos-galera-test-", dir="/tmp"))
    root.chmod(0o755)
    hosts = [Host("p1", "127.0.1.14"), Host("p2", "127.0.1.15"), Host("p3", "127.0.1.16")]
    lab = _BrokenJoiner(root / "galera", hosts, LabSecrets("u", "p", "u", "p", "c"))
    daemons: list[Daemon] = []
    started = time.monotonic()
    try:
        with pytest.raises(LabError) as caught:
            lab.up(daemons.append)
        elapsed = time.monotonic() - started
    finally:
        stopping = time.monotonic()
        lab.down(daemons)
        down_seconds = time.monotonic() - stopping
    message = str(caught.value)
    assert "p2 exited" in message
    assert str(lab.log_file("p2")) in message
    assert "no-such-option-for-the-test" in message  # the tail says why
    assert "\n" not in message
    assert elapsed < 15, f"a dead joiner took {elapsed:.1f}s to notice"
    # 20 s (the full SIGTERM grace) if down() waited on the joiner stuck behind it
    assert down_seconds < 10, f"down took {down_seconds:.1f}s with an aborting node"
    assert "galera-p2" in [d.name for d in daemons]  # registered, so it could be stopped
    assert _pids_of_root(root) == []
    shutil.rmtree(root, ignore_errors=True)


def test_up_is_fast_and_status_all_ok(running: Running) -> None:
    assert running.up_seconds < 20, f"up took {running.up_seconds:.1f}s"
    checks = running.lab.status()
    assert [c.component for c in checks] == ["galera/ctl1", "galera/ctl2", "galera/ctl3"]
    for check in checks:
        assert check.ok, check
        assert check.detail.startswith("size=3 Primary Synced seqno=")
    assert [d.name for d in running.daemons] == [
        "galera-template",
        "galera-ctl1",
        "galera-ctl2",
        "galera-ctl3",
    ]


def test_probe_sees_one_cluster(running: Running) -> None:
    states = [
        probe(h.address, 3306, running.secrets.db_user, running.secrets.db_password)
        for h in NODES
    ]
    assert len({s.cluster_uuid for s in states}) == 1
    uuid.UUID(states[0].cluster_uuid)  # a real UUID, not an empty string
    assert all(s.size == 3 and s.status == "Primary" and s.ready for s in states)


def test_joiners_got_no_sst(running: Running) -> None:
    for node in ("ctl2", "ctl3"):
        log = running.lab.log_file(node).read_text(errors="replace")
        assert "rsync SST completed on joiner" not in log
        assert "rsync IST completed on joiner" in log


def test_nodes_run_as_mysql_with_their_own_config(running: Running) -> None:
    mysql = pwd.getpwnam("mysql")
    for daemon in running.daemons[1:]:
        status = Path(f"/proc/{daemon.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert int(uid_line.split()[1]) == mysql.pw_uid
    for host in NODES:
        assert running.lab.datadir(host.name).stat().st_uid == mysql.pw_uid
        cnf = running.lab.config_file(host.name).read_text()
        assert f"bind-address = {host.address}" in cnf
        assert "innodb_flush_log_at_trx_commit = 1" in cnf
        assert "evs.suspect_timeout=PT2S" in cnf
        argv = running.lab.node_argv(host.name, "--wsrep-new-cluster")
        assert argv[1] == f"--defaults-file={running.lab.config_file(host.name)}"
        assert argv[-1] == "--wsrep-new-cluster"


def test_write_on_each_node_read_on_the_others(running: Running) -> None:
    with _connect(running, NODES[0]) as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS galera_test")
        cur.execute(
            "CREATE TABLE IF NOT EXISTS galera_test.rows "
            "(id INT AUTO_INCREMENT PRIMARY KEY, writer VARCHAR(16), token VARCHAR(40))"
        )
    for writer in NODES:
        token = uuid.uuid4().hex
        with _connect(running, writer) as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO galera_test.rows (writer, token) VALUES (%s, %s)",
                (writer.name, token),
            )
        for reader in NODES:
            if reader == writer:
                continue
            with _connect(running, reader) as conn, conn.cursor() as cur:
                # wait until this node applied everything committed before the read
                cur.execute("SET SESSION wsrep_sync_wait = 1")
                cur.execute("SELECT writer FROM galera_test.rows WHERE token = %s", (token,))
                assert cur.fetchall() == ((writer.name,),), f"{reader.name} misses {writer.name}"


def test_down_leaves_no_process(running: Running) -> None:
    assert _pids_of_root(running.root), "the nodes should be running before down()"
    running.lab.down(running.daemons)
    assert _pids_of_root(running.root) == []
    for daemon in running.daemons:
        assert not procs.alive(daemon.pid)
    for host in NODES:
        for port in PORTS:
            assert not procs.port_in_use(host.address, port), f"{host.address}:{port}"
    # the bootstrap node left last, so the data left behind names it safe to bootstrap
    grastate = (running.lab.datadir("ctl1") / "grastate.dat").read_text()
    assert "safe_to_bootstrap: 1" in grastate
