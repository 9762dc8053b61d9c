"""``chaos lab up --openstack``: keystone on the lab's Galera, named in the inventory as
a service of ctl1, the ``openstack`` client working after ``lab env``, and the harness's
generic faults acting on it (a module and a registration, no core edit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chaos import inventory
from chaos.services import SERVICES
from chaos.services.keystone import Keystone
from chaos.wait import wait_for
from chaoslab.lab import Lab

LOGIN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "HOME": os.environ.get("HOME", "/root"), "TERM": "dumb"}


def chaos(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chaos.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_openstack_tier_keystone_client_and_faults(lab: Lab) -> None:
    up = chaos("lab", "up", "--openstack", timeout=1200)
    assert up.returncode == 0, up.stdout + up.stderr
    assert lab.openstack_enabled()
    site = inventory.load(lab.inventory_file)
    ctl1 = site.host("ctl1")
    assert getattr(ctl1, "keystone", None) is not None and site.credentials.openstack

    # the openstack client, as against a cloud: clouds.yaml through lab env
    out = subprocess.run(["bash", "-c", f'eval "$({sys.executable} -m chaos.cli lab env)" '
                          "&& openstack token issue -f value -c project_id && "
                          # a request made with a token: keystone 26.1.1 failed every
                          # one with the pinned oslo libraries (HTTP 500)
                          "openstack project list -f value -c Name && "
                          "command -v python3"], env=LOGIN_ENV, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    project_id, *projects, python = out.stdout.split()
    # admin's own, and the services' (glance, placement, nova and neutron's users)
    assert sorted(projects) == ["admin", "service"]
    assert len(project_id) == 32
    assert not python.startswith(str(lab.keystone().venv)), "keystone's python3 on PATH"

    keystone = SERVICES["keystone"]
    assert isinstance(keystone, Keystone)
    answer = keystone.tokens(site)["ctl1"]
    assert answer is not None and answer.ok, answer

    # the generic kill fault, planned from the registration alone, and heal
    killed = chaos("fault", "kill", "--node", "ctl1", "--service", "keystone")
    assert killed.returncode == 0, killed.stderr
    try:
        wait_for(lambda: (keystone.lanes(site) == {"keystone/ctl1": "down"},
                          keystone.lanes(site)),
                 what="keystone down after its kill", timeout=30, interval=0.5)
    finally:
        healed = chaos("heal", timeout=120)
    assert healed.returncode == 0, healed.stderr

    def issued() -> tuple[bool, object]:
        again = keystone.tokens(site)["ctl1"]
        return again is not None and again.ok, again

    wait_for(issued, what="a token from keystone again", timeout=60, interval=1)


def test_keystone_keeps_issuing_tokens_through_a_galera_node_loss(lab: Lab) -> None:
    """Keystone reaches Galera through HAProxy's one write endpoint: with the node that
    serves it (ctl1) killed, the endpoint fails over within seconds and tokens are
    issued again long before ctl1 is back."""
    from chaos import expect

    up = chaos("lab", "up", "--openstack", timeout=1200)
    assert up.returncode == 0, up.stdout + up.stderr
    site = inventory.load(lab.inventory_file)
    keystone = SERVICES["keystone"]
    assert isinstance(keystone, Keystone)
    killed = chaos("fault", "kill", "--node", "ctl1", "--service", "galera")
    assert killed.returncode == 0, killed.stderr
    try:
        def issued() -> tuple[bool, object]:
            answer = keystone.tokens(site)["ctl1"]
            return answer is not None and answer.ok, answer

        # measured: one HTTP 500 about 2 s after the kill, tokens again 1 s later
        wait_for(issued, what="a token while ctl1's Galera node is down", timeout=20,
                 interval=0.5)
    finally:
        healed = chaos("heal", timeout=120)
    assert healed.returncode == 0, healed.stderr
    expect.galera_healthy(site)


def test_the_api_oracle_fails_when_keystone_is_gone_too_long_and_passes_when_kept(
        lab: Lab) -> None:
    """The oracle on a deliberately broken case: keystone killed for about 8 s while
    the reads run; its verdict fails with an error window of that length. Untouched,
    the same reads pass."""
    import time

    from chaos.services.keystone import TokenReads

    up = chaos("lab", "up", "--openstack", timeout=1200)
    assert up.returncode == 0, up.stdout + up.stderr
    site = inventory.load(lab.inventory_file)
    keystone = SERVICES["keystone"]
    assert isinstance(keystone, Keystone)

    kept = TokenReads(site, interval=0.5, max_seconds=30)
    kept.start()
    time.sleep(4)
    kept.stop()
    verdict = kept.verdict()
    assert verdict.ok and verdict.requests >= 5, verdict.summary()

    broken = TokenReads(site, interval=0.5, max_seconds=90)
    broken.start()
    try:
        time.sleep(2)
        killed = chaos("fault", "kill", "--node", "ctl1", "--service", "keystone")
        assert killed.returncode == 0, killed.stderr
        time.sleep(8)
    finally:
        healed = chaos("heal", timeout=120)
    assert healed.returncode == 0, healed.stderr

    def answered() -> tuple[bool, object]:
        answer = keystone.tokens(site)["ctl1"]
        return answer is not None and answer.ok, answer

    wait_for(answered, what="keystone answering again", timeout=60, interval=1)
    time.sleep(2)
    broken.stop()
    verdict = broken.verdict()
    assert not verdict.ok, verdict.summary()
    assert 7 <= verdict.longest_error_window <= 60, verdict.summary()
    assert verdict.first_error and verdict.succeeded > 0, verdict.summary()


def test_nova_on_the_lab_boots_a_server_whose_qemu_runs_under_cmp1s_libvirtd(
        lab: Lab) -> None:
    """The whole of OpenStack on the lab: ``openstack server list`` and a server with no
    NIC that goes ACTIVE, through the client ``lab env`` sets up; nova-compute for cmp1
    reaches the libvirtd in cmp1's container over qemu+tcp, so the server's qemu is a
    domain of that libvirtd, in its cgroup, with the server's id as its UUID."""
    from chaos import expect

    up = chaos("lab", "up", "--openstack", timeout=1200)
    assert up.returncode == 0, up.stdout + up.stderr
    site = inventory.load(lab.inventory_file)
    assert site.openstack is not None and site.openstack.image and site.openstack.flavor
    name = f"lab-test-{os.getpid()}"
    script = (f'eval "$({sys.executable} -m chaos.cli lab env)" && '
              "openstack compute service list --service nova-compute -f value -c Host "
              "-c State && openstack server list -f value -c ID && "
              f"openstack server create --image {site.openstack.image} --flavor "
              f"{site.openstack.flavor} --nic none --wait -f value -c id {name}")
    out = subprocess.run(["bash", "-c", script], env=LOGIN_ENV, capture_output=True,
                         text=True, timeout=300)
    server = out.stdout.split()[-1] if out.stdout.split() else ""
    try:
        assert out.returncode == 0, out.stderr[-2000:]
        assert "cmp1 up" in out.stdout, out.stdout
        vms = expect.vm_snapshot(site, ["cmp1"])
        assert server in vms, f"server {server} is no domain of cmp1's libvirtd: {vms}"
        pid = vms[server].qemu_pid
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        assert lab.cgroup_prefix() + "-cmp1" in cgroups, cgroups
    finally:
        if server:
            subprocess.run(["bash", "-c", f'eval "$({sys.executable} -m chaos.cli lab env)" '
                            f"&& openstack server delete --wait {server}"], env=LOGIN_ENV,
                           capture_output=True, text=True, timeout=300)


def test_the_scenarios_ask_openstack_where_the_lab_runs_it(lab: Lab, tmp_path: Path) -> None:
    """``chaos run`` on the lab with OpenStack: the compute drills on cmp1 ask nova
    (nova-compute up and enabled again, its witness server still ACTIVE with the same
    qemu, a new server booted there), the Galera drill that kills the write endpoint's
    node runs the boot/delete workload beside its writer, and the seed's question (one
    controller cut off while servers boot and delete) passes its stated criterion. The
    figures reach the JUnit properties and the report; nothing is left behind."""
    import json
    import xml.etree.ElementTree as ET

    up = chaos("lab", "up", "--openstack", timeout=1200)
    assert up.returncode == 0, up.stdout + up.stderr
    report = tmp_path / "report"
    result = chaos("run", "--report-dir", str(report), "-q", "-rs", "-k",
                   "test_kill_libvirt_container and cmp1 or test_kill_one_node and ctl1 "
                   "or test_cut_off_one_controller", timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    suite = ET.parse(report / "junit.xml").getroot().find("testsuite")
    assert suite is not None and int(suite.get("tests", 0)) == 3
    props: dict[str, dict[str, str]] = {}
    for case in suite.iter("testcase"):
        props[str(case.get("name"))] = {str(p.get("name")): str(p.get("value"))
                                        for p in case.iter("property")}
    compute = next(v for k, v in props.items() if k.startswith("test_kill_libvirt"))
    assert compute["nova_new_server_booted"] == "True" and compute[
        "nova_servers_not_active"] == "0", compute
    assert float(compute["nova_compute_up_seconds"]) <= 120
    galera = next(v for k, v in props.items() if k.startswith("test_kill_one_node"))
    seed = next(v for k, v in props.items() if k.startswith("test_cut_off"))
    for figures in (galera, seed):
        assert {"openstack_success_rate", "openstack_error_window_seconds",
                "placement_consistent"} <= figures.keys(), figures
    assert float(seed["openstack_success_rate"]) >= 0.95, seed
    assert float(seed["openstack_slowest_request_seconds"]) < 60, seed
    html = (report / "report.html").read_text()
    assert "openstack/compute" in html and "nova on cmp1" in html
    events = [json.loads(line) for line in (report / "journal.jsonl").read_text().splitlines()]
    print("\n" + "\n".join(json.dumps({k: e.get(k) for k in (
        "scenario", "operations", "succeeded", "error_window", "error_window_api",
        "first_error", "slowest", "slowest_what", "up_after", "seen", "new_boot")})
        for e in events
        if e["event"] in ("oracle.openstack", "oracle.nova_host")))
    # the witness and every server of the runs deleted
    out = subprocess.run(["bash", "-c", f'eval "$({sys.executable} -m chaos.cli lab env)" '
                          "&& openstack server list --all-projects -f value -c Name"],
                         env=LOGIN_ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def test_nova_s_view_of_a_compute_fails_on_deliberately_broken_cases(lab: Lab) -> None:
    """The compute drills' OpenStack check, broken on purpose twice: nova-compute on
    cmp1 disabled by an operator (not by a lost libvirt, which it undoes itself) is not
    up and enabled within the bound; the witness's qemu killed outside nova, so nova
    finds the server SHUTOFF. Each fails the verdict with what was seen."""
    import signal

    from chaos.cloud import NovaHost, connect

    up = chaos("lab", "up", "--openstack", timeout=1200)
    assert up.returncode == 0, up.stdout + up.stderr
    site = inventory.load(lab.inventory_file)
    nova = NovaHost.where_running(site, "cmp1", within=10)
    assert nova is not None and NovaHost.where_running(site, "cmp2") is None
    conn = connect(nova.config)
    try:
        nova.before()
        (witness, name), = nova.servers.items()
        assert name.startswith("chaos-witness-")
        service = next(s for s in conn.compute.services(binary="nova-compute")
                       if s.host == "cmp1")
        conn.compute.disable_service(service, "cmp1", "nova-compute",
                                     disabled_reason="chaos test: disabled on purpose")
        try:
            disabled = nova.verdict()
        finally:
            conn.compute.enable_service(service, "cmp1", "nova-compute")
        assert not disabled.ok and disabled.up_after is None, disabled.summary()
        assert "NOT up and enabled within 10s" in disabled.summary()
        assert "disabled on purpose" in disabled.service and not disabled.booted

        from chaoslab.compute import qemu_pid_by_uuid

        qemu = qemu_pid_by_uuid(witness)
        assert qemu is not None
        os.kill(qemu, signal.SIGKILL)
        nova.within = 60

        def stopped() -> tuple[bool, str]:
            status = str(conn.compute.get_server(witness).status)
            return status != "ACTIVE", status

        wait_for(stopped, what="nova to see the witness stopped", timeout=120, interval=2)
        killed = nova.verdict()
        assert not killed.ok and killed.lost == [f"{name}: SHUTOFF"], killed.summary()
        assert killed.up_after is not None and killed.booted, killed.summary()
    finally:
        nova.cleanup()
        conn.close()
    assert nova.made == []
