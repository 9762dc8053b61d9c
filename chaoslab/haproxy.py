"""One write endpoint in front of the lab's Galera nodes, as the seed and kolla-ansible
put HAProxy before MariaDB for OpenStack's services: ``<address>:3306`` sends every
connection to one node (ctl1), the others standing by as ``backup``, so that writes never
land on two nodes at once (Galera's certification conflicts); a node that fails its
health check is dropped within about two seconds (``inter 1s fall 2``), its sessions cut
(``on-marked-down shutdown-sessions``), and the next one serves.

The health check is clustercheck's, as kolla-ansible's: HTTP on ``<node>:9200``, 200
only for a node Synced in a Primary component (``chaoslab/clustercheck.py``, one process
for the lab's three nodes, started and stopped with HAProxy). HAProxy's own
``mysql-check`` only logs in, and a node cut off from its peers still lets it: behind
it, a partitioned ctl1 kept the endpoint, and keystone erred for as long as the
partition lasted.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pymysql

from chaos.errors import LabError
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.model import Check, Host, LabSecrets, Register
from chaoslab.procs import Daemon

HAPROXY = "/usr/sbin/haproxy"
CHECK_PORT = 9200  # clustercheck's, as kolla-ansible runs it


class HaproxyLab:
    name = "haproxy"

    def __init__(self, root: Path, address: str, nodes: list[Host], secrets: LabSecrets,
                 sockets: dict[str, Path], *, port: int = 3306) -> None:
        self.root = root
        self.address = address
        self.port = port
        self.nodes = nodes
        self.secrets = secrets
        self.sockets = sockets  # each node's unix socket, for clustercheck
        self.config = root / "haproxy.cfg"
        self.pidfile = root / "haproxy.pid"

    def preflight(self) -> list[str]:
        problems = []
        if not Path(HAPROXY).exists():
            problems.append(f"{HAPROXY} is missing (Debian package haproxy)")
        if procs.port_in_use(self.address, self.port):
            problems.append(f"haproxy: {self.address}:{self.port} is already in use")
        problems += [f"clustercheck: {h.address}:{CHECK_PORT} is already in use"
                     for h in self.nodes if procs.port_in_use(h.address, CHECK_PORT)]
        return problems

    def _config_text(self) -> str:
        servers = "\n".join(
            f"  server {h.name} {h.address}:{self.port} check port {CHECK_PORT}"
            + ("" if i == 0 else " backup")
            for i, h in enumerate(self.nodes))
        return f"""# written by chaoslab.haproxy: Galera's one write endpoint
global
  maxconn 512
defaults
  mode tcp
  timeout connect 3s
  # OpenStack's services keep pooled connections open for long
  timeout client 1h
  timeout server 1h
listen galera
  bind {self.address}:{self.port}
  option httpchk GET /
  http-check expect status 200
  default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""

    def _connect(self, host: str, timeout: float = 3.0) -> pymysql.connections.Connection:
        return pymysql.connect(host=host, port=self.port, user=self.secrets.db_user,
                               password=self.secrets.db_password, connect_timeout=timeout,
                               read_timeout=timeout, write_timeout=timeout)

    def up(self, register: Register) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        checks = procs.spawn("clustercheck", [sys.executable, "-m", "chaoslab.clustercheck",
                                              *(f"{h.address}:{CHECK_PORT}="
                                                f"{self.sockets[h.name]}" for h in self.nodes)],
                             log=self.root / "clustercheck.log")
        register(checks)
        self.config.write_text(self._config_text())
        procs.run([HAPROXY, "-c", "-q", "-f", str(self.config)], timeout=10)
        daemon = procs.spawn("haproxy", [HAPROXY, "-db", "-f", str(self.config), "-p",
                                         str(self.pidfile)],
                             log=self.root / "haproxy.log", pidfile=self.pidfile)
        register(daemon)

        def serving() -> tuple[bool, str]:
            for started in (daemon, checks):
                if not procs.alive(started.pid):
                    raise LabError(f"{started.name} exited at start; see {started.log}")
            return self._answers()

        wait_for(serving, what=f"Galera through haproxy at {self.address}:{self.port}",
                 timeout=30, interval=0.25)

    def _answers(self) -> tuple[bool, str]:
        try:
            conn = self._connect(self.address)
        except pymysql.MySQLError as exc:
            return False, str(exc)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@hostname, @@port")
                cur.fetchone()
                cur.execute("SHOW STATUS LIKE 'wsrep_local_state_comment'")
                row = cur.fetchone()
        finally:
            conn.close()
        return True, f"answers ({row[1] if row else 'no wsrep'})"

    def status(self) -> list[Check]:
        try:
            ok, detail = self._answers()
        except (pymysql.MySQLError, OSError) as exc:
            ok, detail = False, str(exc)
        return [Check(f"haproxy/{self.address}", ok, f"Galera write endpoint {detail}")]

    def down(self, daemons: list[Daemon]) -> None:
        pids = [p for d in daemons for p in d.pids()]
        own = procs.read_pidfile(self.pidfile)
        if own is not None:
            pids.append(own)
        left = procs.stop(sorted(set(pids)), timeout=5)
        if left:
            raise LabError(f"haproxy: processes {left} survived SIGKILL")
        deadline = time.monotonic() + 5
        while procs.port_in_use(self.address, self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)
