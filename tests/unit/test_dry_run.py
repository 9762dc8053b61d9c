"""--dry-run: the whole plan of each selected scenario, acting on nothing. The real
scenarios run through the real CLI in a pseudo-terminal, against a site shaped like the
lab where nothing listens and nothing may be reached (no secret even exists)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos import dryrun, expect, inventory
from chaos.errors import DryRunViolation
from chaos.journal import Journal
from chaos.steps import Await
from recovery import galera, rabbitmq
from recovery.plan import AT_RUN_TIME
from tests.unit.ptyutil import finish, spawn

SSH_PORT = 2222
CONTROLLERS = [("ctl1", "127.0.0.11"), ("ctl2", "127.0.0.12"), ("ctl3", "127.0.0.13")]
COMPUTES = [("cmp1", "127.0.0.21", "survive"), ("cmp2", "127.0.0.22", "die"),
            ("cmp3", "127.0.0.23", "die")]


def lab_shaped_site(root: Path) -> dict[str, Any]:
    """The inventory ``chaos lab up`` writes (chaoslab/inventory.py), under ``root``:
    ssh targets on :2222, a pidfile and start command per daemon, docker-run libvirt.
    Its key and secret files do not exist: a dry run needs neither."""
    ssh = {"user": "root", "port": SSH_PORT, "key_file": str(root / "ssh" / "id_ed25519")}
    controllers = []
    for name, address in CONTROLLERS:
        node = root / "galera" / name
        rabbit = root / "rabbitmq" / name
        target = f"ssh://root@{address}:{SSH_PORT}"
        controllers.append({
            "name": name, "address": address, "ssh": ssh,
            "galera": {"port": 3306, "target": target, "datadir": str(node / "data"),
                       "config": str(node / "my.cnf"), "pidfile": str(node / "mysqld.pid"),
                       "start": f"/usr/sbin/mariadbd --defaults-file={node / 'my.cnf'}"},
            "rabbitmq": {"node": f"rabbit-{name}@{name}", "amqp_port": 5672,
                         "management_port": 15672, "target": target,
                         "data_dir": str(rabbit / "mnesia"), "pidfile": str(rabbit / "pid"),
                         "start": f"exec /usr/lib/rabbitmq/bin/rabbitmq-server -n {name}"},
        })
    computes = [{
        "name": name, "address": address, "ssh": ssh,
        "docker": {"socket": f"unix://{root / 'compute' / name / 'docker.sock'}",
                   "pidfile": str(root / "compute" / name / "docker.pid"),
                   "start": f"exec dockerd --host unix://{root / 'compute' / name}/docker.sock"},
        "libvirt": {"uri": f"qemu+tcp://{address}:16509/system",
                    "container": f"docker://{name}/libvirt"},
        "expect_vms": vms,
    } for name, address, vms in COMPUTES]
    secrets = root / "secrets"
    return {
        "name": "lab", "kind": "process", "firewall": "local",
        "credentials": {
            "db": {"user": "chaos", "password": {"file": str(secrets / "db-password")}},
            "rabbitmq": {"user": "chaos",
                         "password": {"file": str(secrets / "rabbitmq-password")}},
            "erlang_cookie": {"file": str(secrets / "erlang-cookie")},
        },
        "controllers": controllers,
        "computes": computes,
    }


# the real CLI, with every attempt to connect, spawn or signal written down
AUDITED_CLI = """
import runpy, sys
log = open(sys.argv.pop(1), "w")
WATCHED = {"socket.connect", "socket.sendto", "subprocess.Popen", "os.exec", "os.posix_spawn",
           "os.system", "os.fork", "os.kill", "os.killpg"}
def audit(event, args):
    if event in WATCHED:
        log.write(f"{event} {args!r}\\n")
        log.flush()
sys.addaudithook(audit)
sys.argv[0] = "chaos"
runpy.run_module("chaos.cli", run_name="__main__")
"""


def test_chaos_run_dry_run_plans_every_scenario_and_reaches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOS_LEDGER_DIR", str(tmp_path / "ledger"))
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(lab_shaped_site(tmp_path / "lab")))
    script, audit_log = tmp_path / "audited_cli.py", tmp_path / "audit.log"
    script.write_text(AUDITED_CLI)
    started = time.monotonic()
    child, fd = spawn([str(script), str(audit_log), "run", "--dry-run",
                       f"--inventory={site}", f"--report-dir={tmp_path / 'rep'}",
                       "-q", "-rs", "-p", "no:cacheprovider"], str(tmp_path))
    out, code = finish(child, fd, timeout=60)
    seconds = time.monotonic() - started
    out = re.sub(r"\x1b\[[0-9;]*m", "", out).replace("\r\n", "\n")  # a terminal's colours
    assert code == 0, out
    # no wait, no connection timeout: every wait in the scenarios is a minute or more
    assert seconds < 30, f"took {seconds:.1f}s"
    assert audit_log.read_text() == "", "the dry run tried to reach something"
    assert not (tmp_path / "ledger").exists() or not list((tmp_path / "ledger").iterdir())

    # 24 drills planned; the 2 of a platform's own recovery do not apply to the lab,
    # whose clusters the harness recovers, and say so; nor does the seed's question to
    # a site that names no cloud
    assert re.search(r"\b27 skipped in ", out), out
    assert re.search(r"SKIPPED \[1\] \S+: does not apply: site \S+ runs no openstack",
                     out), out
    assert re.search(r"SKIPPED \[2\] \S+: does not apply: the harness recovers galera on "
                     r"site \S+; this drill proves a platform's own recovery", out), out
    assert not re.search(r"\b(passed|failed|errors?)\b", out.split("short test summary")[-1])
    reasons = re.findall(r"SKIPPED \[(\d+)\] \S*scenarios/\S+: dry run: \d+ steps planned, "
                         r"nothing acted on", out)
    assert sum(int(n) for n in reasons) == 24, out
    assert "every scenario planned, nothing acted on (dry run) (27 skipped)" in out
    assert f"  report: {(tmp_path / 'rep' / 'report.html').resolve()}\n" in out

    plan = out.split("test_full_outage_bootstraps_from_the_most_advanced_node_not_ctl1  [")[1]
    plan = plan.split("\nscenarios/")[0]
    order = [
        "start workload: Galera writer on ctl1, ctl2, ctl3",
        "wait for more than 0 acknowledged writes, up to 30s",
        "fault kill-ctl1-galera-",
        "[ssh://root@127.0.0.11:2222] pid=$(cat "
        f"{tmp_path}/lab/galera/ctl1/mysqld.pid) && kill -s KILL \"$pid\"",
        "wait for Galera quorum of ctl2, ctl3, up to 60s",
        "fault kill-ctl2-galera-",
        "[ssh://root@127.0.0.12:2222] pid=$(cat ",
        "fault kill-ctl3-galera-",
        "[ssh://root@127.0.0.13:2222] pid=$(cat ",
        "recover galera: observe every node",
        "recover galera: decide: ",
        "bootstrap from the most advanced node",
        "`chaos recover galera --dry-run` at that point",
        "recover galera: run the plan step by step",
        "wait for every Galera node Primary and Synced, up to 120s",
        "check: the bootstrap node is not ctl1, the first node killed",
        "oracle: every acknowledged write is on every Galera node (ctl1, ctl2, ctl3)",
        "revert kill-ctl3-galera-",
        "revert kill-ctl2-galera-",
        "revert kill-ctl1-galera-",
        f"--defaults-file={tmp_path}/lab/galera/ctl1/my.cnf",
    ]
    at = 0
    for text in order:
        found = plan.find(text, at)
        assert found >= 0, f"{text!r} missing after position {at} in:\n{plan}"
        at = found + len(text)


def test_check_fails_as_the_assert_did_and_journals_each_claim() -> None:
    journal = Journal()
    expect.check("the bootstrap node is not ctl1", lambda: True,
                 lambda: pytest.fail("detail is only read on failure"), journal=journal)
    with pytest.raises(AssertionError, match=r"^recovery found a full outage: situation: "
                                             r"degraded$"):
        expect.check("recovery found a full outage", lambda: False,
                     lambda: "situation: degraded", journal=journal)
    with pytest.raises(AssertionError, match=r"^a VM runs on cmp1$"):
        expect.check("a VM runs on cmp1", lambda: bool({}))
    assert [(e["what"], e["ok"]) for e in journal.events] == [
        ("the bootstrap node is not ctl1", True), ("recovery found a full outage", False)]


def test_in_a_rehearsal_nothing_is_evaluated_or_probed(tmp_path: Path) -> None:
    site = inventory.parse(lab_shaped_site(tmp_path))
    rehearsal = dryrun.Rehearsal()
    with dryrun.rehearsing(rehearsal):
        expect.check("never evaluated", lambda: pytest.fail("evaluated"))
        assert expect.galera_healthy(site, timeout=5).states == {}
        assert expect.rabbit_running(site, ["ctl1"]).states == {}
        assert expect.vm_snapshot(site, ["cmp1"]) == {}
        assert expect.queue_leader(site, "q") == "rabbit-ctl1@ctl1"
        plan = galera.plan(site, galera.observe(site))
        galera.execute(site, plan)
        assert plan.situation == AT_RUN_TIME and plan.steps == [] and plan.positions == {}
        assert rabbitmq.recover(site).situation == AT_RUN_TIME
        with pytest.raises(DryRunViolation, match="probing Galera"):
            galera._condition(site, Await("healthy"))
    assert dryrun.active() is None
    assert rehearsal.render().splitlines()[:4] == [
        "  1. check: never evaluated",
        "  2. wait for every Galera node Primary and Synced, up to 5s",
        "  3. wait for RabbitMQ running on exactly ctl1, up to 90s",
        "  4. record every running VM on cmp1: its qemu pid and start time, read on the host",
    ]
    assert rehearsal.steps[4].startswith("look up the leader of quorum queue q")
    assert rehearsal.steps[5].startswith("recover galera: observe every node: SQL")
    assert rehearsal.steps[6].startswith("recover galera: decide: ")
    assert rehearsal.steps[7].startswith("recover galera: run the plan step by step")
    assert rehearsal.steps[8].startswith("recover rabbitmq (the plan itself is shown at run "
                                         "time, or by `chaos recover rabbitmq --dry-run`")
    assert len(rehearsal) == 9
