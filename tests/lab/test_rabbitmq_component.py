"""RabbitLab alone, on its own addresses and epmd port, so it can run beside a lab."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from chaos.services.rabbitmq import probe
from chaoslab import procs
from chaoslab.model import Host, LabSecrets
from chaoslab.procs import Daemon
from chaoslab.rabbitmq import RabbitLab

pytestmark = pytest.mark.lab

NODES = [Host("ctl1", "127.0.2.11"), Host("ctl2", "127.0.2.12"), Host("ctl3", "127.0.2.13")]
EPMD_PORT = 4370


def _params(url: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.socket_timeout = 5
    params.blocked_connection_timeout = 5
    params.stack_timeout = 10
    params.connection_attempts = 1
    return params


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RabbitLab, list[Daemon]]]:
    root = tmp_path_factory.mktemp("rabbit")
    lab = RabbitLab(root / "rabbitmq", NODES, LabSecrets.load_or_create(root), epmd_port=EPMD_PORT)
    assert lab.preflight() == [], "addresses/ports of the component test are taken"
    daemons: list[Daemon] = []
    started = time.monotonic()
    try:
        lab.up(daemons.append)
        print(f"rabbitmq cluster healthy after {time.monotonic() - started:.1f}s")
        yield lab, daemons
    finally:
        lab.down(daemons)


def test_cluster_is_healthy(rabbit: tuple[RabbitLab, list[Daemon]]) -> None:
    lab, daemons = rabbit
    assert [d.name for d in daemons] == ["epmd", "rabbitmq-ctl1", "rabbitmq-ctl2", "rabbitmq-ctl3"]
    checks = lab.status()
    assert [c.component for c in checks] == ["rabbitmq/ctl1", "rabbitmq/ctl2", "rabbitmq/ctl3"]
    assert all(c.ok for c in checks), checks
    expected = sorted(lab.node_name(h.name) for h in NODES)
    assert len(set(expected)) == 3
    for host in NODES:
        state = probe(lab.mgmt_url(host.name), lab.secrets.rabbit_user, lab.secrets.rabbit_password)
        assert state.running_nodes == expected
        assert not state.partitioned
    # the real beam.smp of each node is known through its pidfile
    for daemon in daemons[1:]:
        pids = daemon.pids()
        assert len(pids) == 2 and all(procs.alive(p) for p in pids)


def test_user_is_administrator(rabbit: tuple[RabbitLab, list[Daemon]]) -> None:
    lab, _ = rabbit
    users = lab.ctl("ctl2", "list_users", "--quiet", "--no-table-headers")
    assert f"{lab.secrets.rabbit_user}\t[administrator]" in users
    perms = lab.ctl("ctl3", "list_permissions", "--quiet", "--no-table-headers")
    assert f"{lab.secrets.rabbit_user}\t.*\t.*\t.*" in perms


def test_password_stays_out_of_logs(rabbit: tuple[RabbitLab, list[Daemon]]) -> None:
    lab, _ = rabbit
    password = lab.secrets.rabbit_password
    for host in NODES:
        for log in (lab.root / "nodes" / host.name / "log").iterdir():
            assert password not in log.read_text(errors="replace"), log
        assert (lab.root / "nodes" / host.name / "rabbitmq.conf").stat().st_mode & 0o077 == 0


def test_dist_connections_are_address_to_address(
    rabbit: tuple[RabbitLab, list[Daemon]],
) -> None:
    lab, _ = rabbit
    out = procs.run(["ss", "-Htn", "state", "established"], timeout=10).stdout
    addresses = {h.address for h in NODES}
    dist = []
    for line in out.splitlines():
        local, peer = line.split()[-2:]
        if peer.endswith(f":{lab.dist_port}") and peer.rsplit(":", 1)[0] in addresses:
            dist.append((local.rsplit(":", 1)[0], peer.rsplit(":", 1)[0]))
    # one connection per pair of nodes, each from a node address, never 127.0.0.1
    assert len(dist) == 3, out
    assert all(src in addresses and src != dst for src, dst in dist), dist


def test_quorum_queue_across_nodes(rabbit: tuple[RabbitLab, list[Daemon]]) -> None:
    lab, _ = rabbit
    queue = f"component-test-{uuid.uuid4().hex[:8]}"
    body = uuid.uuid4().hex.encode()
    with pika.BlockingConnection(_params(lab.amqp_url("ctl1"))) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        # with confirms on, an unconfirmed publish raises instead of returning
        channel.basic_publish(
            "", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True
        )
    state = lab.probe("ctl3")
    assert sorted(state.quorum_queues[queue].members) == sorted(
        lab.node_name(h.name) for h in NODES
    )
    with pika.BlockingConnection(_params(lab.amqp_url("ctl2"))) as conn:
        channel = conn.channel()
        method, _, got = channel.basic_get(queue, auto_ack=True)
        assert method is not None and got == body
        channel.queue_delete(queue)


def test_preflight_reports_port_in_use(rabbit: tuple[RabbitLab, list[Daemon]]) -> None:
    lab, _ = rabbit
    problems = lab.preflight()
    assert any(f"127.0.2.12:{lab.amqp_port} already in use" in p for p in problems), problems
    assert any(f"127.0.0.1:{EPMD_PORT} already in use" in p for p in problems), problems


def test_down_leaves_nothing(rabbit: tuple[RabbitLab, list[Daemon]]) -> None:
    # last test of the module: the fixture's own down() afterwards finds nothing to do
    lab, daemons = rabbit
    beams = [p for d in daemons[1:] for p in d.pids()[1:]]
    assert len(beams) == 3 and all(procs.alive(p) for p in beams)
    assert len(_processes_under(lab.root)) == 4  # three beam.smp and epmd
    started = time.monotonic()
    lab.down(daemons)
    print(f"rabbitmq down in {time.monotonic() - started:.1f}s")
    assert not [p for d in daemons for p in d.pids() if procs.alive(p)]
    assert _processes_under(lab.root) == []
    for host in NODES:
        for port in (lab.amqp_port, lab.dist_port, lab.mgmt_port, EPMD_PORT):
            assert not procs.port_in_use(host.address, port), (host.address, port)
    assert not procs.port_in_use("127.0.0.1", EPMD_PORT)


def _processes_under(root: Path) -> list[str]:
    """Live beam.smp/epmd processes whose environment points into ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not procs.alive(int(entry.name)):
            continue
        try:
            exe = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].rsplit(b"/", 1)[-1]
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if exe in (b"beam.smp", b"epmd") and str(root).encode() in environ:
            found.append(f"{entry.name}:{exe.decode()}")
    return found
