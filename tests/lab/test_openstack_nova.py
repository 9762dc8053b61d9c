"""A real nova, glance, placement and neutron (chaoslab.nova) on their own dependencies,
beside a running lab: a plain MariaDB (or, with CHAOS_NOVA_TEST_DB=galera, a one-node
Galera), one RabbitMQ node, keystone and a libvirtd in a mount namespace of its own,
all on 127.0.3.1-.5 under one temporary folder. The ``openstack`` CLI lists servers, a
server with no NIC goes ACTIVE, its qemu runs under that libvirtd, and its delete
leaves nothing. Everything started here is stopped by the fixture's teardown. The
OpenStack venv is built on first use (~100 s) in $CHAOS_OPENSTACK_CACHE (default here
/tmp/h-nova/cache, so that a running lab's venv is never rebuilt under it)."""

from __future__ import annotations

import contextlib
import datetime
import os
import shlex
import shutil
import signal
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest

from chaos.services.libvirt import with_libvirt
from chaos.steps import restart_log, start_unless_running
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.compute import DEFAULT_CAPABILITIES_CACHE, QEMU_CONF, libvirtd_conf, qemu_pid_by_uuid
from chaoslab.fleet import LIBVIRT_DIRS, LIBVIRT_PORT
from chaoslab.galera import INNODB_SETTINGS, INSTALL_DB, MARIADBD, OS_USER, GaleraLab
from chaoslab.model import Host, LabSecrets
from chaoslab.nova import Admin, NovaLab
from chaoslab.openstack import ADMIN_PROJECT, ADMIN_USER, KeystoneLab
from chaoslab.procs import Daemon
from chaoslab.rabbitmq import RabbitLab

# outside the lab's addresses (127.0.0.x, 127.0.1.x): runs beside a running lab
MARIADB, RABBIT, KEYSTONE, CONTROLLER, COMPUTE = (f"127.0.3.{n}" for n in range(1, 6))
EPMD_PORT = 4380  # not the lab's 4369


class PlainMariaDB:
    """One mariadbd, no Galera: a data directory made by mariadb-install-db, TCP on
    ``address``:3306, and an account for the services."""

    def __init__(self, root: Path, address: str, user: str, password: str) -> None:
        self.root, self.address, self.user, self.password = root, address, user, password
        self.cnf = root / "my.cnf"
        self.socket = root / "mysqld.sock"

    def url_base(self) -> str:
        quoted = urllib.parse.quote(self.password, safe="")
        return f"mysql+pymysql://{self.user}:{quoted}@{self.address}:3306"

    def up(self, register: Callable[[Daemon], None]) -> None:
        import pwd

        account = pwd.getpwnam(OS_USER)
        self.root.mkdir(parents=True)
        os.chown(self.root, account.pw_uid, account.pw_gid)
        self.cnf.write_text(f"""[mysqld]
user = {OS_USER}
bind-address = {self.address}
port = 3306
datadir = {self.root / "data"}
socket = {self.socket}
pid-file = {self.root / "mysqld.pid"}
log-error = {self.root / "mysqld.log"}
{INNODB_SETTINGS}
max_connections = 500
""")
        procs.run([INSTALL_DB, f"--defaults-file={self.cnf}", "--skip-test-db",
                   "--auth-root-authentication-method=socket"], timeout=120)
        daemon = procs.spawn("mariadbd", [MARIADBD, f"--defaults-file={self.cnf}"],
                             log=self.root / "out.log")
        register(daemon)
        wait_for(lambda: (self.socket.exists() and procs.port_open(self.address, 3306),
                          "not listening"), what="mariadbd listening", timeout=60)
        conn = pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (self.user, self.password))
                cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@'%%'", (self.user,))
            conn.commit()
        finally:
            conn.close()


class NamespacedLibvirtd:
    """libvirtd as a process of this host in a mount namespace of its own (as
    chaoslab.fleet runs it), listening on ``address``:16509."""

    def __init__(self, root: Path, address: str) -> None:
        self.root, self.address = root, address
        self.pidfile = root / "libvirtd.pid"
        self.uri = f"qemu+tcp://{address}:{LIBVIRT_PORT}/system"

    def up(self, register: Callable[[Daemon], None]) -> None:
        for sub in LIBVIRT_DIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "etc" / "libvirtd.conf").write_text(
            libvirtd_conf("nova-test", self.address, LIBVIRT_PORT))
        (self.root / "etc" / "qemu.conf").write_text(QEMU_CONF)
        capabilities = self.root / "cache" / "qemu" / "capabilities"
        capabilities.mkdir(parents=True, exist_ok=True)
        for xml in DEFAULT_CAPABILITIES_CACHE.glob("*.xml"):  # warm: saves ~9 s
            shutil.copy2(xml, capabilities / xml.name)
        binds = " && ".join(f"mount --bind {shlex.quote(str(self.root / sub))} {target}"
                            for sub, target in LIBVIRT_DIRS.items())
        script = self.root / "libvirtd.sh"
        script.write_text(f"mount --make-rprivate / && {binds} && exec /usr/sbin/libvirtd "
                          f"--listen --pid-file {shlex.quote(str(self.pidfile))}\n")
        register(procs.spawn("libvirtd", ["unshare", "--mount", "--propagation", "private",
                                          "sh", str(script)],
                             log=self.root / "out.log", pidfile=self.pidfile))

        def answers() -> tuple[bool, str]:
            try:
                return True, str(with_libvirt(self.uri, lambda c: c.getLibVersion(),
                                              timeout=3, what="ping"))
            except Exception as exc:  # any failure means "not yet"
                return False, str(exc)[:200]

        wait_for(answers, what=f"libvirtd at {self.uri}", timeout=90, interval=0.5)


def qemu_pids_under(root: Path) -> list[int]:
    """qemu processes whose command line names a path under ``root`` (their disks)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if b"qemu-system" in cmdline.split(b"\0", 1)[0] and str(root).encode() in cmdline:
                found.append(int(entry.name))
    return found


@dataclass
class Cloud:
    root: Path
    keystone: KeystoneLab
    nova: NovaLab
    libvirt: NamespacedLibvirtd
    up_seconds: float
    daemons: list[Daemon] = field(default_factory=list)

    def openstack(self, *args: str, timeout: float = 120) -> str:
        result = procs.run([str(self.keystone.venv / "bin" / "openstack"), *args],
                           timeout=timeout, check=False,
                           env={**self.keystone.openstack_env(), "PYTHONWARNINGS": "ignore"})
        assert result.returncode == 0, f"openstack {' '.join(args)}: {result.stderr[-800:]}"
        return result.stdout


@pytest.fixture(scope="module")
def cloud(root_required: None) -> Iterator[Cloud]:
    root = Path("/tmp/h-nova/run")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    root.chmod(0o755)  # mariadbd runs as mysql and lives under it
    cache = Path(os.environ.get("CHAOS_OPENSTACK_CACHE") or "/tmp/h-nova/cache")
    secrets = LabSecrets.load_or_create(root)
    db = PlainMariaDB(root / "mariadb", MARIADB, secrets.db_user, secrets.db_password)
    # CHAOS_NOVA_TEST_DB=galera: a one-node Galera (wsrep on, as the lab's) instead
    galera = (GaleraLab(root / "galera", [Host("db1", MARIADB)], secrets)
              if os.environ.get("CHAOS_NOVA_TEST_DB") == "galera" else None)
    rabbit = RabbitLab(root / "rabbitmq", [Host("rmq1", RABBIT)], secrets, epmd_port=EPMD_PORT)
    libvirt = NamespacedLibvirtd(root / "libvirt", COMPUTE)
    keystone = KeystoneLab(root / "keystone", KEYSTONE, db.url_base() + "/keystone",
                           cache=cache)
    user = urllib.parse.quote(secrets.rabbit_user, safe="")
    password = urllib.parse.quote(secrets.rabbit_password, safe="")
    nova = NovaLab(root / "openstack", CONTROLLER, db.url_base(),
                   f"rabbit://{user}:{password}@{RABBIT}:5672/",
                   Admin(keystone.auth_url, ADMIN_USER, keystone.admin_password(),
                         ADMIN_PROJECT),
                   libvirt.uri, compute_address=COMPUTE, cache=cache)
    owned: dict[str, list[Daemon]] = {k: [] for k in ("db", "rabbit", "libvirt", "keystone",
                                                      "nova")}
    try:
        started = time.monotonic()
        (galera or db).up(owned["db"].append)
        rabbit.up(owned["rabbit"].append)
        libvirt.up(owned["libvirt"].append)
        keystone.up(owned["keystone"].append)
        deps = time.monotonic()
        nova.up(owned["nova"].append)
        up = time.monotonic() - deps
        print(f"\nup: dependencies {deps - started:.1f}s, nova.up {up:.1f}s ("
              + ", ".join(f"{k} {v:.1f}s" for k, v in nova.timings.items()) + ")")
        yield Cloud(root, keystone, nova, libvirt, up, owned["nova"])
    finally:
        errors = []
        for stop in (lambda: nova.down(owned["nova"]),
                     lambda: procs.stop(qemu_pids_under(root), timeout=10),
                     lambda: procs.stop([p for d in owned["libvirt"] for p in d.pids()],
                                        timeout=10),
                     lambda: keystone.down(owned["keystone"]),
                     lambda: rabbit.down(owned["rabbit"]),
                     lambda: (galera.down(owned["db"]) if galera else
                              procs.stop([d.pid for d in owned["db"]], timeout=20))):
            try:
                stop()
            except Exception as exc:  # stop the rest regardless
                errors.append(exc)
        assert not errors, errors
        assert nova.daemon_pids() == [] and qemu_pids_under(root) == []
        listening = [f"{a}:{p}" for a, p in ((CONTROLLER, 8774), (CONTROLLER, 9696),
                                             (COMPUTE, LIBVIRT_PORT), (KEYSTONE, 5000),
                                             (RABBIT, 5672), (MARIADB, 3306))
                     if procs.port_open(a, p)]
        assert listening == []


def _memory_mb(pid: int) -> str:
    """RSS/PSS in MB: VmRSS of /proc/PID/status, Pss of /proc/PID/smaps_rollup (shared
    pages divided among their users)."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
    return f"{rss // 1024}/{pss // 1024}"


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    return []


def test_server_boots_on_libvirt_and_is_deleted(cloud: Cloud) -> None:
    nova = cloud.nova
    assert all(check.ok for check in nova.status()), nova.status()
    assert cloud.openstack("server", "list", "-f", "value").strip() == ""

    disk = cloud.root / "blank.qcow2"
    procs.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], timeout=30)
    cloud.openstack("image", "create", "--disk-format", "qcow2", "--container-format", "bare",
                    "--file", str(disk), "--public", "blank")
    cloud.openstack("flavor", "create", "--ram", "64", "--disk", "1", "--vcpus", "1", "tiny")
    server_id = cloud.openstack("server", "create", "--flavor", "tiny", "--image", "blank",
                                "--nic", "none", "-f", "value", "-c", "id", "vm1").strip()
    client = nova.client()

    def status() -> tuple[bool, str]:
        server = client.get("nova-api", f"/servers/{server_id}")["server"]
        if server["status"] == "ERROR":
            return True, f"ERROR: {server.get('fault', {}).get('message')}"
        return server["status"] == "ACTIVE", server["status"]

    started = time.monotonic()
    seen = wait_for(status, what=f"server {server_id} ACTIVE", timeout=180, interval=1.0)
    assert seen == "ACTIVE", seen
    print(f"ACTIVE after {time.monotonic() - started:.1f}s")
    assert server_id in cloud.openstack("server", "list", "-f", "value", "-c", "ID")

    def domain(conn: Any) -> tuple[bool, str]:
        dom = conn.lookupByUUIDString(server_id)
        return bool(dom.isActive()), str(dom.name())

    active, name = with_libvirt(nova.libvirt_uri, domain, timeout=10,
                                what="the server's domain")
    assert active
    qemu = qemu_pid_by_uuid(server_id)
    assert qemu is not None and procs.alive(qemu)
    assert str(nova.instances_path / server_id).encode() in Path(
        f"/proc/{qemu}/cmdline").read_bytes()
    # started by that libvirtd: it wrote the pid in its own /run/libvirt (our folder,
    # bound there in its mount namespace), and qemu runs in a namespace libvirt made
    assert procs.read_pidfile(cloud.libvirt.root / "run" / "qemu" / f"{name}.pid") == qemu
    assert os.readlink(f"/proc/{qemu}/ns/mnt") != os.readlink("/proc/self/ns/mnt")

    _report_rss(cloud, qemu)

    cloud.openstack("server", "delete", server_id)

    def gone() -> tuple[bool, str]:
        servers = client.get("nova-api", "/servers")["servers"]
        return not servers, f"{len(servers)} servers"

    wait_for(gone, what="the server deleted", timeout=120, interval=1.0)
    names = with_libvirt(nova.libvirt_uri, lambda c: [d.name() for d in c.listAllDomains(0)],
                         timeout=10, what="list domains")
    assert names == []
    wait_for(lambda: (not procs.alive(qemu), f"qemu {qemu} alive"), what="qemu gone",
             timeout=30)
    assert not (nova.instances_path / server_id).exists()
    usages = client.get("placement-api", f"/allocations/{server_id}")["allocations"]
    assert usages == {}


def test_compute_and_neutron_killed_and_started_again(cloud: Cloud) -> None:
    """SIGKILL of nova-compute and of neutron's gunicorn master, both started again by
    their start commands the way the harness does: the server keeps its qemu, the new
    nova-compute reports in, and a delete (which asks neutron for ports) works."""
    nova, client = cloud.nova, cloud.nova.client()
    server_id = cloud.openstack("server", "create", "--flavor", "tiny", "--image", "blank",
                                "--nic", "none", "-f", "value", "-c", "id", "vm2").strip()

    def active() -> tuple[bool, str]:
        status = client.get("nova-api", f"/servers/{server_id}")["server"]["status"]
        return status in ("ACTIVE", "ERROR"), status

    assert wait_for(active, what="vm2 ACTIVE", timeout=180, interval=1.0) == "ACTIVE"
    qemu = qemu_pid_by_uuid(server_id)
    assert qemu is not None
    qemu_start = procs.start_time_ticks(qemu)

    killed = {}
    for daemon in ("nova-compute", "neutron-api"):
        pid = procs.read_pidfile(nova.pidfile(daemon))
        assert pid is not None and procs.alive(pid)
        os.kill(pid, signal.SIGKILL)
        killed[daemon] = pid
    wait_for(lambda: (not any(procs.alive(p) for p in killed.values()), "alive"),
             what="the killed daemons gone", timeout=10)
    restarted_at = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    for daemon in killed:
        pidfile = str(nova.pidfile(daemon))
        procs.run(["sh", "-c", start_unless_running(pidfile, nova.start_command(daemon),
                                                    restart_log(pidfile))],
                  timeout=30, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def reported() -> tuple[bool, str]:
        services = client.get("nova-api", "/os-services?binary=nova-compute")["services"]
        updated = [s["updated_at"] for s in services if s["updated_at"]]
        fresh = [u for u in updated
                 if datetime.datetime.fromisoformat(u) > restarted_at]
        return bool(fresh), f"updated_at {updated}"

    wait_for(reported, what="the new nova-compute reporting", timeout=120, interval=1.0)
    assert procs.read_pidfile(nova.pidfile("nova-compute")) not in (None, killed["nova-compute"])
    assert qemu_pid_by_uuid(server_id) == qemu and procs.start_time_ticks(qemu) == qemu_start
    assert client.get("nova-api", f"/servers/{server_id}")["server"]["status"] == "ACTIVE"

    cloud.openstack("server", "delete", server_id)

    def gone() -> tuple[bool, str]:
        servers = client.get("nova-api", "/servers")["servers"]
        return not servers, f"{[s['id'] for s in servers]}"

    wait_for(gone, what="vm2 deleted", timeout=120, interval=1.0)
    wait_for(lambda: (not procs.alive(qemu), f"qemu {qemu} alive"), what="qemu gone",
             timeout=30)


def test_down_and_up_again_on_the_same_databases(cloud: Cloud) -> None:
    """A second ``up`` over the schemas, cells, keystone entries and image of the first
    (a lab brought up again, a recovery): it finds them and changes nothing."""
    nova = cloud.nova
    nova.down(cloud.daemons)
    assert nova.daemon_pids() == []
    cloud.daemons.clear()
    nova.up(cloud.daemons.append)
    print("up again: " + ", ".join(f"{k} {v:.1f}s" for k, v in nova.timings.items()))
    assert all(check.ok for check in nova.status()), nova.status()
    cells = cloud.openstack("compute", "service", "list", "-f", "value", "-c", "Binary")
    assert sorted(cells.split()) == ["nova-compute", "nova-conductor", "nova-scheduler"]
    assert cloud.openstack("image", "list", "-f", "value", "-c", "Name").split() == ["blank"]
    endpoints = cloud.openstack("endpoint", "list", "-f", "value", "-c", "Service Type")
    assert sorted(endpoints.split()) == sorted(
        ["identity", *(2 * ["image", "placement", "compute", "network"])])


def _report_rss(cloud: Cloud, qemu: int) -> None:
    """RSS/PSS of each daemon (gunicorn: master + worker), printed for the docstring."""
    lines = []
    for daemon in [*(a for a in ("glance-api", "placement-api", "nova-api", "neutron-api")),
                   "nova-conductor", "nova-scheduler", "nova-compute"]:
        pid = procs.read_pidfile(cloud.nova.pidfile(daemon))
        assert pid is not None
        pids = [pid, *_children(pid)]
        lines.append(f"{daemon}: " + " + ".join(_memory_mb(p) for p in pids) + " MB")
    keystone = procs.read_pidfile(cloud.keystone.pidfile)
    assert keystone is not None
    lines.append("keystone: " + " + ".join(
        _memory_mb(p) for p in [keystone, *_children(keystone)]) + " MB")
    privsep = [pid for pid in cloud.nova.daemon_pids()
               if b"privsep-helper" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    lines.append("nova-compute's privsep daemon: " + " + ".join(
        _memory_mb(p) for p in privsep) + " MB")
    lines.append(f"qemu (the server): {_memory_mb(qemu)} MB")
    print("RSS/PSS " + "; ".join(lines))
