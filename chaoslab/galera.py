"""Three real MariaDB Galera nodes, each on its own loopback address.

How ``up`` gets to three Synced nodes fast
------------------------------------------
Measured on the 2-core VM: 4.9-7.1 s when quiet (typically ~5.5 s), 7.9-9.2 s with both
cores kept busy by two shell loops.

1. ``mariadb-install-db`` runs once, into a template data directory (~0.5 s).
2. The template is started once as a one-node cluster (``--wsrep-new-cluster``) and shut
   down cleanly (~0.3 s). That gives it a fresh random cluster UUID, and -- the part that
   matters -- stores UUID:seqno in InnoDB as well as in ``grastate.dat``, with
   ``safe_to_bootstrap: 1``. A bare install-db directory with a hand-written
   ``grastate.dat`` does not work: InnoDB then holds no wsrep position, a joiner reads
   back ``-1`` after its state transfer and aborts ("Application received wrong state").
3. The template is copied (``cp -a``) to the three nodes, which thus hold the same state.
4. The first node bootstraps from that state; each other node starts once the previous
   one is a member of the group (not yet Synced). Two joiners arriving together churn
   through non-Primary views and cost 3-5 s more.
5. A joiner finds the cluster's UUID and a seqno just behind it (the cluster's own
   membership changes take seqnos in Galera 4) and receives an IST of those few events
   -- no rsync SST, no data copied. MariaDB still runs ``wsrep_sst_rsync`` in its
   "bypass" mode for an IST, which costs ~1.7 s of shell per joiner and is most of the
   remaining time. ``up`` fails if a joiner's log shows a real SST anyway: that would
   mean the shortcut silently broke and the lab got slow.

``--wsrep-sst-method=skip`` for the joiners was tried and hangs them in "Joining:
receiving State Transfer"; do not go there.

The SQL account is created once all three are Synced, on the first node as root over
its unix socket; account statements replicate to the others.

``down`` stops the joiners first and the bootstrap node last, once it sees itself alone:
the last node to leave is the one Galera marks ``safe_to_bootstrap: 1``. Stopped all at
once, every node is left at 0 (and ``gvwstate.dat`` is removed by a clean shutdown, so
pc.recovery does not apply either), which would make a restart of that data a recovery
exercise rather than a start. A node that is not Synced (joining, aborting, hung) gets
3 s instead of 20 s: such a node ignores SIGTERM for ~20 s, measured.

Lab tuning (reports about this lab must say it is tuned)
--------------------------------------------------------
Group communication is tuned for fast failure detection on one quiet machine, where a
missed heartbeat means a dead or frozen process, never a congested WAN:

* ``evs.keepalive_period=PT0.5S`` and ``evs.inactive_check_period=PT0.5S`` (defaults 1 s,
  0.5 s): heartbeats often enough that a 2 s silence is meaningful.
* ``evs.suspect_timeout=PT2S`` (default 5 s): a peer silent for 2 s is suspected, and
  dropped from the view once all survivors suspect it. This sets how fast a ``kill -9``
  shows: the survivors report ``size=2`` Primary 2.2-2.8 s after it (measured 3 times;
  ~6 s with the defaults, per LAB-NOTES).
* ``evs.inactive_timeout=PT4S`` (default 15 s): a peer silent that long is declared dead
  even without consensus; must not be below the suspect timeout.
* ``evs.install_timeout=PT4S`` (default 7.5 s): how long installing a new membership may
  take before it is given up and retried.
* ``evs.join_retrans_period=PT0.3S`` (default 1 s), ``gmcast.peer_timeout=PT2S`` (default
  3 s), ``pc.announce_timeout=PT1S`` (default 3 s): faster (re)joins after a start, a
  restart or a healed partition; retransmitting join messages costs nothing on loopback.
* ``gcache.size=32M`` (default 128 M): three nodes on one VM; enough for IST after short
  outages, which is what recovery scenarios exercise.

Under CPU starvation (the whole lab starting on 2 cores) Galera logs "last inactive check
more than PT1.5S ago, skipping check": its own guard against evicting peers because the
*checker* was late. No spurious eviction was seen with these values, but a scenario that
starves the CPU for seconds could see one; that would be a lab artefact.

Production clusters use the defaults or larger values; results about *timings* measured
on this lab therefore do not transfer as they are, results about *behaviour* do.

InnoDB keeps ``innodb_flush_log_at_trx_commit=1`` on purpose (see the config text), and
is otherwise sized small (32 MB buffer pool, 16 MB redo log) so three nodes fit next to
RabbitMQ and the computes.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pymysql

from chaos.errors import LabError, ProbeTimeout
from chaos.services.galera import GaleraState, probe, query_state
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.model import Check, Host, LabSecrets, Register
from chaoslab.procs import Daemon

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "/usr/bin/mariadb-install-db"
GALERA_LIB = "/usr/lib/galera/libgalera_smm.so"
SST_SCRIPT = "/usr/bin/wsrep_sst_rsync"
RSYNC = "/usr/bin/rsync"
OS_USER = "mysql"

GCOMM_PORT = 4567
IST_PORT = 4568
SST_PORT = 4444

PROVIDER_OPTIONS = (
    "evs.keepalive_period=PT0.5S",
    "evs.inactive_check_period=PT0.5S",
    "evs.suspect_timeout=PT2S",
    "evs.inactive_timeout=PT4S",
    "evs.install_timeout=PT4S",
    "gmcast.peer_timeout=PT2S",
    "pc.announce_timeout=PT1S",
    "evs.join_retrans_period=PT0.3S",
    "gcache.size=32M",
)

# Shared by the template (mariadb-install-db) and the nodes: the template's redo log
# and system tablespace must match what the nodes expect, or every node would first
# resize them.
INNODB_SETTINGS = """\
innodb_buffer_pool_size = 32M
innodb_log_file_size = 16M
innodb_log_buffer_size = 4M
# Durable commits: each node flushes its redo log at every commit. With 0 or 2 (kolla,
# openstack-helm) a commit acknowledged just before all nodes die can vanish, and
# full-outage scenarios must be able to tell a real loss from a lab artefact.
innodb_flush_log_at_trx_commit = 1
performance_schema = OFF
key_buffer_size = 8M
aria_pagecache_buffer_size = 8M
skip-name-resolve
"""

UP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
QUICK_STOP_TIMEOUT = 3.0

# procs.stop sends SIGTERM, waits, then SIGKILL. A clean shutdown of an idle node takes
# ~0.2 s here; a node stuck in a state transfer ignores SIGTERM, hence the bound.


def _config_text(
    *,
    name: str,
    address: str,
    port: int,
    folder: Path,
    cluster_address: str,
    networking: bool = True,
) -> str:
    provider_options = "; ".join(
        (
            f"gmcast.listen_addr=tcp://{address}:{GCOMM_PORT}",
            f"ist.recv_addr={address}:{IST_PORT}",
            *PROVIDER_OPTIONS,
        )
    )
    network = f"bind-address = {address}\nport = {port}" if networking else "skip-networking"
    return f"""\
# Generated by chaoslab.galera for the local lab; rewritten by every `lab up`.
[mysqld]
user = {OS_USER}
{network}
datadir = {folder / "data"}
socket = {folder / "mysqld.sock"}
pid-file = {folder / "mysqld.pid"}
log-error = {folder / "mysqld.log"}
{INNODB_SETTINGS}
binlog_format = ROW
# Galera certifies row by row and cannot replicate table-level AUTO-INC locks
innodb_autoinc_lock_mode = 2
default_storage_engine = InnoDB

wsrep_on = ON
wsrep_provider = {GALERA_LIB}
wsrep_cluster_name = chaos-lab
wsrep_cluster_address = {cluster_address}
wsrep_node_name = {name}
wsrep_node_address = {address}
wsrep_sst_method = rsync
wsrep_sst_receive_address = {address}:{SST_PORT}
# tuned for a fast lab: see the docstring of chaoslab/galera.py
wsrep_provider_options = "{provider_options}"
"""


def _socket_connect(
    sock: Path, timeout: float = 3.0
) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    # root@localhost authenticates by unix_socket (peer credentials): we run as root,
    # so no password exists or is needed.
    return pymysql.connect(
        unix_socket=str(sock),
        user="root",
        connect_timeout=timeout,
        read_timeout=timeout,
        write_timeout=timeout,
    )


def socket_probe(sock: Path, *, timeout: float = 3.0) -> GaleraState:
    """Like :func:`probe` but as root over the node's unix socket (no account needed)."""
    conn = _socket_connect(sock, timeout)
    try:
        return query_state(conn)
    finally:
        conn.close()


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            text = fh.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return f"{path}: " + " | ".join(tail) if tail else f"{path}: (empty)"


def _aborting(daemon: Daemon) -> bool:
    """mariadbd said it gives up (it may still take a while to exit)."""
    try:
        return b"[ERROR] Aborting" in Path(daemon.log).read_bytes()
    except OSError:
        return False


def _first_error(path: Path) -> str | None:
    """The first "[ERROR]" line of a log, with the file name, or None."""
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                if b"[ERROR]" in raw:
                    return f"{path}: {raw.decode(errors='replace').strip()}"
    except OSError:
        return None
    return None


def _reachable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether a process with uid/gid may traverse every directory down to ``path``."""
    for folder in [*reversed(path.parents), path]:
        try:
            info = folder.stat()
        except FileNotFoundError:
            return True  # we will create the rest, traversable
        mode = info.st_mode
        if info.st_uid == uid:
            ok = bool(mode & stat.S_IXUSR)
        elif info.st_gid == gid:
            ok = bool(mode & stat.S_IXGRP)
        else:
            ok = bool(mode & stat.S_IXOTH)
        if not ok:
            return False
    return True


class GaleraLab:
    """The Galera component of the local lab (see the module docstring)."""

    name = "galera"

    def __init__(
        self, root: Path, nodes: list[Host], secrets: LabSecrets, *, port: int = 3306
    ) -> None:
        if len(nodes) < 1:
            raise LabError("galera: no nodes given")
        self.root = root
        self.nodes = list(nodes)
        self.secrets = secrets
        self.port = port
        self._by_name = {host.name: host for host in self.nodes}
        self._daemons: dict[str, Daemon] = {}

    # ---- paths -----------------------------------------------------------------
    def _host(self, node: str) -> Host:
        try:
            return self._by_name[node]
        except KeyError:
            raise LabError(f"galera: no node named {node!r}") from None

    def node_dir(self, node: str) -> Path:
        self._host(node)
        return self.root / node

    def datadir(self, node: str) -> Path:
        return self.node_dir(node) / "data"

    def config_file(self, node: str) -> Path:
        return self.node_dir(node) / "my.cnf"

    def socket_path(self, node: str) -> Path:
        return self.node_dir(node) / "mysqld.sock"

    def log_file(self, node: str) -> Path:
        return self.node_dir(node) / "mysqld.log"

    def pid_file(self, node: str) -> Path:
        return self.node_dir(node) / "mysqld.pid"

    def node_argv(self, node: str, *extra: str) -> list[str]:
        # --defaults-file must come first, and keeps /etc/mysql out entirely
        return [MARIADBD, f"--defaults-file={self.config_file(node)}", *extra]

    def daemon_name(self, node: str) -> str:
        return f"galera-{node}"

    # ---- config ----------------------------------------------------------------
    def _cluster_address(self) -> str:
        return "gcomm://" + ",".join(f"{h.address}:{GCOMM_PORT}" for h in self.nodes)

    def config_text(self, node: str) -> str:
        host = self._host(node)
        return _config_text(
            name=node,
            address=host.address,
            port=self.port,
            folder=self.node_dir(node),
            cluster_address=self._cluster_address(),
        )

    # ---- preflight -------------------------------------------------------------
    def preflight(self) -> list[str]:
        problems: list[str] = []
        for binary, package in (
            (MARIADBD, "mariadb-server"),
            (INSTALL_DB, "mariadb-server"),
            (GALERA_LIB, "galera-4"),
            (SST_SCRIPT, "mariadb-server"),
            (RSYNC, "rsync"),
        ):
            if not Path(binary).exists():
                problems.append(f"galera: {binary} missing (install {package})")
        try:
            account = pwd.getpwnam(OS_USER)
        except KeyError:
            problems.append(f"galera: OS user {OS_USER!r} missing (install mariadb-server)")
        else:
            if not _reachable_by(self.root, account.pw_uid, account.pw_gid):
                problems.append(
                    f"galera: user {OS_USER} cannot reach {self.root} "
                    "(a parent directory is not traversable)"
                )
        if os.geteuid() != 0:
            problems.append("galera: must run as root (mariadbd switches to user mysql)")
        for host in self.nodes:
            for port in (self.port, GCOMM_PORT, IST_PORT, SST_PORT):
                if procs.port_in_use(host.address, port):
                    problems.append(f"galera: {host.address}:{port} already in use")
        return problems

    # ---- up --------------------------------------------------------------------
    def up(self, register: Register) -> None:
        problems = self.preflight()
        if problems:
            raise LabError(problems[0])
        self.prepare(register)
        first, *others = self.nodes
        self._start(first.name, register, "--wsrep-new-cluster")
        # Joiners that find nobody keep retrying, but starting them before the
        # bootstrap node listens only wastes those retries.
        self._wait(
            lambda: (procs.port_open(first.address, GCOMM_PORT, timeout=0.2), "group port"),
            first.name,
            self.log_file(first.name),
            what=f"{first.name} group port {first.address}:{GCOMM_PORT}",
            timeout=20,
        )
        # One joiner at a time into the group (not into Synced): two joiners arriving
        # together churn through non-Primary views and cost 3-5 s more than this.
        for count, host in enumerate(others, start=2):
            self._start(host.name, register)
            self._wait_members(first.name, count)
        for host in self.nodes:
            self._wait_synced(host.name)
        for host in others:
            if self._had_sst(host.name):
                raise LabError(
                    f"galera: {host.name} needed a state transfer (SST) although its data "
                    f"was copied from the same template; {_log_tail(self.log_file(host.name))}"
                )
        self.create_account(first.name)
        # the account as clients will use it: over TCP to each node's own address
        for check in self.status():
            if not check.ok:
                raise LabError(f"{check.component} unhealthy after up: {check.detail}")

    def prepare(self, register: Register) -> None:
        """Every node's data directory (a copy of one template), config and log, ready
        to start; shared by this lab and the Kubernetes tier's Galera pods."""
        self._daemons = {}
        account = pwd.getpwnam(OS_USER)
        self._prepare_dirs(account.pw_uid, account.pw_gid)
        template = self._make_template(register, account.pw_uid, account.pw_gid)
        for host in self.nodes:
            procs.run(["cp", "-a", str(template), str(self.datadir(host.name))], timeout=30)
            self.config_file(host.name).write_text(self.config_text(host.name))
            self.log_file(host.name).touch()
            os.chown(self.log_file(host.name), account.pw_uid, account.pw_gid)

    def _prepare_dirs(self, uid: int, gid: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        for name in [*(h.name for h in self.nodes), "template"]:
            folder = self.root / name
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir()
            os.chown(folder, uid, gid)

    def _make_template(self, register: Register, uid: int, gid: int) -> Path:
        """A data directory with system tables and a Galera position stored in InnoDB.

        A bare ``mariadb-install-db`` directory is not enough: InnoDB then holds no wsrep
        position, and a joiner that receives an IST reads back "-1" from storage and
        aborts with "Application received wrong state". So the template is started once
        as a one-node cluster and shut down cleanly, which writes the same UUID:seqno
        to InnoDB and grastate.dat (with safe_to_bootstrap: 1).
        """
        folder = self.root / "template"
        data = folder / "data"
        cnf = folder / "my.cnf"
        # The template borrows the first node's address for its group port: that node
        # is not running yet, and preflight checked the port is free.
        cnf.write_text(
            _config_text(
                name="template",
                address=self.nodes[0].address,
                port=self.port,
                folder=folder,
                cluster_address="gcomm://",
                networking=False,
            )
        )
        log = folder / "mysqld.log"
        log.touch()
        os.chown(log, uid, gid)
        procs.run(
            [
                INSTALL_DB,
                f"--defaults-file={cnf}",
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
            ],
            timeout=60,
        )
        daemon = procs.spawn(
            "galera-template", [MARIADBD, f"--defaults-file={cnf}", "--wsrep-new-cluster"], log=log
        )
        register(daemon)
        self._daemons["template"] = daemon

        def synced() -> tuple[bool, str]:
            state = socket_probe(folder / "mysqld.sock", timeout=2.0)
            return state.healthy, state.describe()

        self._wait(synced, "template", log, what="template node Synced", timeout=30)
        del self._daemons["template"]  # its exit from here on is intended
        if procs.stop([daemon.pid], timeout=STOP_TIMEOUT):
            raise LabError(f"galera: template mariadbd did not stop; {_log_tail(log)}")
        grastate = (data / "grastate.dat").read_text()
        if "safe_to_bootstrap: 1" not in grastate or "seqno:   -1" in grastate:
            raise LabError(
                f"galera: template did not shut down cleanly ({' '.join(grastate.split())})"
            )
        # the nodes build their own ring buffer; copying 32 MB three times is waste
        (data / "galera.cache").unlink(missing_ok=True)
        return data

    def _start(self, node: str, register: Register, *extra: str) -> Daemon:
        # the pidfile lets the lab recognise the node after a fault or a recovery
        # restarted it under a new PID
        daemon = procs.spawn(
            self.daemon_name(node), self.node_argv(node, *extra), log=self.log_file(node),
            pidfile=self.pid_file(node),
        )
        register(daemon)
        self._daemons[node] = daemon
        return daemon

    def _first_dead(self) -> str | None:
        """The first started process that should be running and is not, or is dying:
        a node that gave up late in its start (after its state transfer) logs
        "Aborting" and then takes ~20 s more to close its group connection."""
        for name, daemon in self._daemons.items():
            if not procs.alive(daemon.pid):
                return name
            if _aborting(daemon):
                return name
        return None

    def _wait(
        self,
        check: Callable[[], tuple[bool, str]],
        node: str,
        log: Path,
        *,
        what: str,
        timeout: float,
    ) -> str:
        """wait_for that gives up at once, with that node's log tail, if any process we
        started has died: a joiner that failed to start would otherwise only show as a
        timeout of some other node's wait."""

        def poll() -> tuple[bool, str]:
            if self._first_dead():
                return True, "process exited"
            return check()

        try:
            seen = wait_for(poll, what=what, timeout=timeout, interval=0.1)
        except ProbeTimeout as exc:
            raise LabError(f"galera: {exc}; {_log_tail(log)}") from exc
        dead = self._first_dead()
        if dead:
            # the first error explains; what follows an abort is mostly its echo
            dead_log = self.root / dead / "mysqld.log"
            raise LabError(
                f"galera: {dead} exited while waiting for {what}; "
                f"{_first_error(dead_log) or _log_tail(dead_log)}"
            )
        return seen

    def _wait_synced(self, node: str, timeout: float = UP_TIMEOUT) -> None:
        want = len(self.nodes)

        def check() -> tuple[bool, str]:
            state = socket_probe(self.socket_path(node), timeout=2.0)
            return state.healthy and state.size == want, state.describe()

        self._wait(
            check,
            node,
            self.log_file(node),
            what=f"{node} Synced in a Primary cluster of {want}",
            timeout=timeout,
        )

    def _wait_members(self, node: str, count: int) -> None:
        def check() -> tuple[bool, str]:
            state = socket_probe(self.socket_path(node), timeout=2.0)
            return state.size >= count, state.describe()

        self._wait(
            check, node, self.log_file(node), what=f"{node} to see {count} members", timeout=30
        )

    def _had_sst(self, node: str) -> bool:
        try:
            text = self.log_file(node).read_text(errors="replace")
        except OSError:
            return False
        # MariaDB runs the rsync script even for an IST (it then only hands over the
        # position), so the script's running is no sign; its closing line names the kind.
        return "rsync SST completed on joiner" in text

    def create_account(self, node: str) -> None:
        """The harness's SQL account (from the lab's secrets), made through ``node``'s
        unix socket; the Kubernetes tier calls it for its own Galera too."""
        # Account statements replicate (as TOI), so creating it on one node is enough.
        # install-db with --skip-test-db makes no anonymous accounts (checked on
        # 10.11), which would otherwise shadow user@'%' for local clients.
        user = _sql_string(self.secrets.db_user)
        password = _sql_string(self.secrets.db_password)
        statements = (
            f"CREATE USER IF NOT EXISTS {user}@'%' IDENTIFIED BY {password}",
            f"ALTER USER {user}@'%' IDENTIFIED BY {password}",
            f"GRANT ALL PRIVILEGES ON *.* TO {user}@'%' WITH GRANT OPTION",
            "FLUSH PRIVILEGES",
        )
        try:
            conn = _socket_connect(self.socket_path(node), timeout=10.0)
            try:
                with conn.cursor() as cur:
                    for sql in statements:
                        cur.execute(sql)
                conn.commit()
            finally:
                conn.close()
        except pymysql.MySQLError as exc:
            # the exception text never contains the statement, so no password leaks
            raise LabError(
                f"galera: cannot create account {self.secrets.db_user!r}: {exc}"
            ) from exc

    # ---- status ----------------------------------------------------------------
    def status(self) -> list[Check]:
        checks: list[Check] = []
        want = len(self.nodes)
        for host in self.nodes:
            component = f"galera/{host.name}"
            try:
                state = probe(
                    host.address, self.port, self.secrets.db_user, self.secrets.db_password
                )
            except (pymysql.MySQLError, OSError) as exc:
                checks.append(Check(component, False, f"unreachable: {exc}"))
                continue
            ok = state.healthy and state.size == want
            checks.append(Check(component, ok, state.describe()))
        return checks

    # ---- down ------------------------------------------------------------------
    def stray_pids(self) -> list[int]:
        """Processes running from this root that nobody registered (restarted by fault
        code, SST helpers): anything whose command line names a path under ``root``."""
        markers = {str(self.root.absolute()) + "/", str(self.root.resolve()) + "/"}
        found: list[int] = []
        me = os.getpid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if not argv or not argv[0]:
                continue
            args = [a.decode(errors="replace") for a in argv]
            if not any(os.path.basename(a) in _OWN_PROGRAMS for a in args[:3]):
                continue
            if any(m in a for a in args[1:] for m in markers):
                pid = int(entry.name)
                if procs.alive(pid):
                    found.append(pid)
        return found

    def _let_view_settle(self, node: str) -> None:
        """Give ``node`` a moment to see the others gone; under CPU load it may still
        count them when it is told to stop, and then it is not marked safe_to_bootstrap
        either. Best effort: down() must stop the node anyway, within its bound."""

        def alone() -> tuple[bool, str]:
            state = socket_probe(self.socket_path(node), timeout=1.0)
            return state.size <= 1, state.describe()

        # a node that no longer answers has nothing to settle. 5 s was too short once in
        # CI, with a pip install beside it on the two cores: ctl1 still counted the
        # others when stopped, and was left not safe to bootstrap
        with contextlib.suppress(ProbeTimeout):
            wait_for(alone, what=f"{node} to see the others leave", timeout=15,
                     interval=0.05)

    def _settled(self, daemon: Daemon) -> bool:
        """Whether the daemon is a node that will honour SIGTERM promptly: one that is
        Synced (or donating). A node that is joining, aborting or not answering
        ignores SIGTERM for ~20 s (measured), and its data gains nothing by waiting."""
        node = daemon.name.removeprefix("galera-")
        if node not in self._by_name or _aborting(daemon):
            return False
        try:
            state = socket_probe(self.socket_path(node), timeout=1.0)
        except (pymysql.MySQLError, OSError):
            return False
        return state.local_state in ("Synced", "Donor/Desynced")

    def down(self, daemons: list[Daemon]) -> None:
        live = [d for d in daemons if any(procs.alive(p) for p in d.pids())]
        settled = [d for d in live if self._settled(d)]
        unsettled = [p for d in live if d not in settled for p in d.pids()]
        left = procs.stop(unsettled, timeout=QUICK_STOP_TIMEOUT)
        # The joiners first (together), the bootstrap node last: the last node to
        # leave is the one Galera marks safe_to_bootstrap, so the data left behind can
        # be restarted by the book. Stopping all at once leaves every node at 0.
        last = self.daemon_name(self.nodes[0].name)
        first_wave = [p for d in settled if d.name != last for p in d.pids()]
        second_wave = [p for d in settled if d.name == last for p in d.pids()]
        left += procs.stop(first_wave, timeout=STOP_TIMEOUT)
        if second_wave and first_wave:
            self._let_view_settle(self.nodes[0].name)
        left += procs.stop(second_wave, timeout=STOP_TIMEOUT)
        strays = self.stray_pids()
        if strays:
            left += procs.stop(strays, timeout=QUICK_STOP_TIMEOUT)
        if left:
            raise LabError(f"galera: processes {left} survived SIGKILL")


# mariadbd itself, and the helpers it starts for an rsync SST (the script runs under
# bash, so its name shows up as an argument, not as the program)
_OWN_PROGRAMS = frozenset({"mariadbd", "mysqld", "rsync", "wsrep_sst_rsync", "wsrep_sst_common"})
