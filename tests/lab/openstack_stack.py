"""A standalone real OpenStack for the lab tests, beside a running lab: a plain MariaDB
(or, with CHAOS_NOVA_TEST_DB=galera, a one-node Galera), one RabbitMQ node with its own
epmd port, keystone, a libvirtd in a mount namespace of its own, and chaoslab.nova's
glance, placement, nova and neutron, all on five addresses of 127.0.3.x under one
folder. ``running_stack`` brings it up and stops everything it started on the way out.
Shared by tests/lab/test_openstack_nova.py and test_openstack_workload.py, each on
addresses and a folder of its own."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from chaos.services.libvirt import with_libvirt
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.compute import DEFAULT_CAPABILITIES_CACHE, QEMU_CONF, libvirtd_conf
from chaoslab.fleet import LIBVIRT_DIRS, LIBVIRT_PORT
from chaoslab.galera import INNODB_SETTINGS, INSTALL_DB, MARIADBD, OS_USER, GaleraLab
from chaoslab.model import Host, LabSecrets
from chaoslab.nova import Admin, NovaLab
from chaoslab.openstack import ADMIN_PROJECT, ADMIN_USER, KeystoneLab
from chaoslab.procs import Daemon
from chaoslab.rabbitmq import RabbitLab


@dataclass(frozen=True)
class Addresses:
    """Where each part listens: five loopback addresses and RabbitMQ's epmd port."""

    mariadb: str
    rabbit: str
    keystone: str
    controller: str
    compute: str
    epmd_port: int

    @classmethod
    def from_base(cls, base: int, epmd_port: int) -> Addresses:
        """127.0.3.<base> … 127.0.3.<base+4>."""
        return cls(*(f"127.0.3.{base + n}" for n in range(5)), epmd_port=epmd_port)


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


@contextlib.contextmanager
def running_stack(root: Path, at: Addresses) -> Iterator[Cloud]:
    """The whole stack under ``root`` (emptied first) at ``at``; everything it started
    stopped on the way out, and nothing left listening."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    root.chmod(0o755)  # mariadbd runs as mysql and lives under it
    cache = Path(os.environ.get("CHAOS_OPENSTACK_CACHE") or "/tmp/h-nova/cache")
    secrets = LabSecrets.load_or_create(root)
    db = PlainMariaDB(root / "mariadb", at.mariadb, secrets.db_user, secrets.db_password)
    # CHAOS_NOVA_TEST_DB=galera: a one-node Galera (wsrep on, as the lab's) instead
    galera = (GaleraLab(root / "galera", [Host("db1", at.mariadb)], secrets)
              if os.environ.get("CHAOS_NOVA_TEST_DB") == "galera" else None)
    rabbit = RabbitLab(root / "rabbitmq", [Host("rmq1", at.rabbit)], secrets,
                       epmd_port=at.epmd_port)
    libvirt = NamespacedLibvirtd(root / "libvirt", at.compute)
    keystone = KeystoneLab(root / "keystone", at.keystone, db.url_base() + "/keystone",
                           cache=cache)
    user = urllib.parse.quote(secrets.rabbit_user, safe="")
    password = urllib.parse.quote(secrets.rabbit_password, safe="")
    nova = NovaLab(root / "openstack", at.controller, db.url_base(),
                   f"rabbit://{user}:{password}@{at.rabbit}:5672/",
                   Admin(keystone.auth_url, ADMIN_USER, keystone.admin_password(),
                         ADMIN_PROJECT),
                   libvirt.uri, compute_address=at.compute, cache=cache)
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
        listening = [f"{a}:{p}" for a, p in ((at.controller, 8774), (at.controller, 9696),
                                             (at.compute, LIBVIRT_PORT), (at.keystone, 5000),
                                             (at.rabbit, 5672), (at.mariadb, 3306))
                     if procs.port_open(a, p)]
        assert listening == []


