"""Galera recovery never loses what the cluster acknowledged, on the real lab (issue 11).

The reproduction as a new user typed it: 50 acknowledged rows; ctl3 cut off; 100 more
rows acknowledged by ctl1 and ctl2; both killed -9; the partition lifted, so ctl3 is the
only survivor, non-Primary and behind. Then the sequence an operator types: a dry run, the
refusal of the node that is behind, the override naming the node that is ahead, and the
same recovery run twice."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from chaos import expect, inventory
from chaos.faults import Faults
from chaos.inventory import Controller, Site
from chaos.steps import Await
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.lab import Lab
from recovery import galera

TABLE = "chaos_issue11.acked"


@pytest.fixture
def site(lab: Lab) -> Site:
    return inventory.load(lab.inventory_file)


@contextlib.contextmanager
def session(site: Site, node: str) -> Iterator[Any]:
    host = site.host(node)
    conn = pymysql.connect(host=host.address, user=site.credentials.db.user,
                           password=site.credentials.db.password.reveal(), autocommit=True,
                           connect_timeout=5, read_timeout=10, write_timeout=10)
    with conn, conn.cursor() as cur:
        yield cur


def write(site: Site, node: str, ids: range) -> None:
    """Each row its own acknowledged commit (autocommit: the INSERT returned)."""
    with session(site, node) as cur:
        for i in ids:
            cur.execute(f"INSERT INTO {TABLE} (id) VALUES (%s)", (i,))


def rows_on(site: Site, node: str) -> int:
    with session(site, node) as cur:
        cur.execute(f"SELECT COUNT(*) FROM {TABLE}")
        return int(cur.fetchone()[0])


def kill9(site: Site, node: str) -> None:
    host = site.host(node)
    assert isinstance(host, Controller) and host.galera and host.galera.pidfile
    pid = procs.read_pidfile(Path(host.galera.pidfile))
    assert pid is not None
    os.kill(pid, 9)
    wait_for(lambda: (not procs.alive(pid), f"pid {pid}"), what=f"{node} dead", timeout=15)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chaos.cli", "recover", "galera", *args],
                          capture_output=True, text=True, timeout=400)


def datadir_fingerprint(site: Site, node: str) -> dict[str, tuple[int, int]]:
    host = site.host(node)
    assert isinstance(host, Controller) and host.galera
    root = Path(host.galera.datadir)
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.iterdir() if p.is_file()}


def test_survivor_behind_stopped_nodes_recovers_every_acknowledged_row(
        lab: Lab, site: Site) -> None:
    expect.galera_healthy(site)
    with session(site, "ctl1") as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS chaos_issue11")
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(f"CREATE TABLE {TABLE} (id INT PRIMARY KEY)")
    write(site, "ctl1", range(50))
    try:
        with Faults(site, allowed={"galera": 3, "controllers": 3}) as faults:
            cut = faults.add("partition", "ctl3", "galera")
            expect.galera_non_primary(site, "ctl3")
            expect.galera_quorum(site, ["ctl1", "ctl2"])
            write(site, "ctl1", range(50, 150))
            kill9(site, "ctl1")
            kill9(site, "ctl2")
            faults.revert(cut)
        expect.galera_non_primary(site, "ctl3")

        # a dry run reads only: ctl1 and ctl2 died with seqno -1, which only
        # --wsrep-recover (InnoDB crash recovery, a write) can turn into a position
        before = {n: datadir_fingerprint(site, n) for n in ("ctl1", "ctl2")}
        dry = cli("--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "DECIDED AT RUN TIME" in dry.stdout and "nothing was changed" in dry.stdout
        assert {n: datadir_fingerprint(site, n) for n in ("ctl1", "ctl2")} == before

        # the node that is behind is refused even when named, and the refusal names the
        # node that must bootstrap
        behind = cli("--node", "ctl3")
        assert behind.returncode == 1, behind.stdout + behind.stderr
        assert "REFUSED: --node ctl3: ctl3 is at seqno" in behind.stdout
        assert "The node that must bootstrap is ctl1" in behind.stdout

        # the override the refusal names: used as named, never replaced by another
        named = cli("--node", "ctl1")
        assert named.returncode == 0, named.stdout + named.stderr
        assert "chosen node: ctl1 (named by the operator" in named.stdout
        assert "pc.bootstrap" not in named.stdout
        expect.galera_healthy(site)
        counts = {n: rows_on(site, n) for n in ("ctl1", "ctl2", "ctl3")}
        assert counts == {"ctl1": 150, "ctl2": 150, "ctl3": 150}

        # run twice: nothing to do
        again = cli()
        assert again.returncode == 0 and "nothing to do: healthy" in again.stdout, again.stdout
    finally:
        if not galera.observe(site).view.healthy(3):
            lab.down()
            lab.up()


def test_same_situation_without_node_bootstraps_the_node_that_is_ahead(
        lab: Lab, site: Site) -> None:
    expect.galera_healthy(site)
    with session(site, "ctl1") as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS chaos_issue11")
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(f"CREATE TABLE {TABLE} (id INT PRIMARY KEY)")
    write(site, "ctl2", range(20))
    try:
        with Faults(site, allowed={"galera": 3, "controllers": 3}) as faults:
            cut = faults.add("partition", "ctl1", "galera")
            expect.galera_non_primary(site, "ctl1")
            write(site, "ctl2", range(20, 60))
            kill9(site, "ctl2")
            kill9(site, "ctl3")
            faults.revert(cut)
        expect.galera_non_primary(site, "ctl1")
        result = cli()
        assert result.returncode == 0, result.stdout + result.stderr
        assert "chosen node: ctl2 (highest seqno" in result.stdout, result.stdout
        assert "survivors are stopped first" in result.stdout
        expect.galera_healthy(site)
        assert {n: rows_on(site, n) for n in ("ctl1", "ctl2", "ctl3")} == {
            "ctl1": 60, "ctl2": 60, "ctl3": 60}
    finally:
        if not galera.observe(site).view.healthy(3):
            lab.down()
            lab.up()


def test_two_primary_components_are_named_split_brain_and_left_alone(
        lab: Lab, site: Site) -> None:
    expect.galera_healthy(site)
    try:
        with Faults(site, allowed={"galera": 3, "controllers": 3}) as faults:
            faults.add("partition", "ctl3", "galera")
            expect.galera_non_primary(site, "ctl3")
            # someone "fixes" the cut-off node by hand: a second Primary component
            with session(site, "ctl3") as cur:
                cur.execute("SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'")
            wait_for(lambda: galera._condition(site, Await("primary", "ctl3")), what="ctl3 Primary",
                     timeout=30)
            before = galera.observe(site, read_only=True)
            result = cli()
            assert result.returncode == 1, result.stdout + result.stderr
            assert "situation: split-brain" in result.stdout
            assert "REFUSED: split brain: 2 Primary components at once" in result.stdout
            after = galera.observe(site, read_only=True)
            assert after.view.primary() == before.view.primary() == ["ctl1", "ctl2", "ctl3"]
    finally:
        lab.down()
        lab.up()


def grastate(site: Site, node: str) -> Path:
    host = site.host(node)
    assert isinstance(host, Controller) and host.galera
    return Path(host.galera.datadir) / "grastate.dat"


def test_joiner_of_another_history_is_refused_then_discarded_on_request(
        lab: Lab, site: Site) -> None:
    expect.galera_healthy(site)
    try:
        kill9(site, "ctl3")
        expect.galera_quorum(site, ["ctl1", "ctl2"])
        # ctl3's data now claims another history (as after someone bootstrapped it alone)
        path = grastate(site, "ctl3")
        other = "aaaaaaaa-0000-11f1-8000-000000000000"
        path.write_text(f"# GALERA saved state\nversion: 2.1\nuuid:    {other}\n"
                        "seqno:   5\nsafe_to_bootstrap: 0\n")
        refused = cli()
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"REFUSED: ctl3 carries another history (cluster {other}, seqno 5)" \
            in refused.stdout
        assert grastate(site, "ctl3").read_text().count(other) == 1  # nothing touched
        told = cli("--discard", "ctl3")
        assert told.returncode == 0, told.stdout + told.stderr
        assert "ctl3 joins by full state transfer; its own data is discarded" in told.stdout
        expect.galera_healthy(site)
    finally:
        if not galera.observe(site).view.healthy(3):
            lab.down()
            lab.up()


def test_missing_grastate_beside_data_is_recovered_by_position_not_by_sst(
        lab: Lab, site: Site) -> None:
    expect.galera_healthy(site)
    try:
        kill9(site, "ctl2")
        expect.galera_quorum(site, ["ctl1", "ctl3"])
        grastate(site, "ctl2").unlink()
        dry = cli("--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "no grastate.dat beside data: the real run learns it" in dry.stdout
        real = cli()
        assert real.returncode == 0, real.stdout + real.stderr
        assert "ctl2 joins by IST from seqno" in real.stdout
        expect.galera_healthy(site)
    finally:
        if not galera.observe(site).view.healthy(3):
            lab.down()
            lab.up()


def test_survivor_beside_a_frozen_member_is_bootstrapped_only_once_it_is_dead(
        lab: Lab, site: Site) -> None:
    expect.galera_healthy(site)
    ctl1 = site.host("ctl1")
    assert isinstance(ctl1, Controller) and ctl1.galera and ctl1.galera.pidfile
    frozen = procs.read_pidfile(Path(ctl1.galera.pidfile))
    assert frozen is not None
    try:
        os.kill(frozen, 19)  # SIGSTOP: alive, silent, still a member as far as it knows
        kill9(site, "ctl2")
        expect.galera_non_primary(site, "ctl3")
        result = cli("--node", "ctl3")
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        # the frozen member is settled (given its time, then killed) before anything is
        # bootstrapped beside it: never a second Primary component
        assert "situation: members alive but silent" in out
        assert out.index("silent members settled") < out.index("pc.bootstrap=YES")
        assert not procs.alive(frozen)
        expect.galera_healthy(site)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, 18)
        if not galera.observe(site).view.healthy(3):
            lab.down()
            lab.up()
