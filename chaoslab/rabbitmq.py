"""RabbitMQ part of the local lab: a real 3-node cluster, one node per controller.

Each node runs on its controller's own loopback address. Host names ("ctl1") resolve
for Erlang through a private inetrc file, so /etc/hosts stays untouched. One epmd,
started by us in the foreground, listens on 127.0.0.1 and on every node address.
Erlang distribution listens on the node address and binds its outgoing connections
to it too, so iptables rules between two node addresses really cut the cluster.

The cluster forms at boot with classic_config peer discovery: the first node boots
as the seed (no peers listed), the others list the seed and retry until its database
is up, so all three start at once and no join_cluster call is needed (measured:
8-11 s from nothing to a healthy cluster on 2 cores). The user comes from
default_user/default_pass in rabbitmq.conf (mode 600): no rabbitmqctl call at all.

Erlang distribution is started by the VM (-sname) rather than by RabbitMQ, whose
prelaunch check binds the dist port on the wildcard address and so refuses a second
node using the same port on another address.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import shutil
import signal
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chaos.errors import LabError, ProbeTimeout
from chaos.services.rabbitmq import RabbitState, probe
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.model import Check, Host, LabSecrets, Register
from chaoslab.procs import Daemon

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
SERVER = RABBIT_BIN / "rabbitmq-server"
CTL = RABBIT_BIN / "rabbitmqctl"

UP_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0


def _short(node: str) -> str:
    return node.split("@", 1)[0]


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file that holds a secret without it ever being readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.chmod(0o600)  # a previous cookie is mode 400
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(mode)


def _erl_ip(address: str) -> str:
    return "{" + address.replace(".", ",") + "}"


class RabbitLab:
    name = "rabbitmq"

    def __init__(
        self,
        root: Path,
        nodes: list[Host],
        secrets: LabSecrets,
        *,
        epmd_port: int = 4369,
        amqp_port: int = 5672,
        dist_port: int = 25672,
        mgmt_port: int = 15672,
        net_ticktime: int = 15,
        partition_handling: str = "ignore",
    ) -> None:
        if not nodes:
            raise LabError("rabbitmq: no nodes given")
        self.root = Path(root)
        self.nodes = list(nodes)
        self.secrets = secrets
        self.epmd_port = epmd_port
        self.amqp_port = amqp_port
        self.dist_port = dist_port
        self.mgmt_port = mgmt_port
        # Erlang's default 60 s makes a partition visible only after 45-75 s; the lab
        # wants fault effects within seconds, at the price of less tolerance to stalls.
        self.net_ticktime = net_ticktime
        # RabbitMQ's default; "pause_minority" or "autoheal" change what a partition
        # fault does, so the caller chooses what the site under test runs
        self.partition_handling = partition_handling
        self._hosts = {h.name: h for h in self.nodes}

    # -- naming and paths -------------------------------------------------------

    def _host(self, node: str) -> Host:
        try:
            return self._hosts[node]
        except KeyError:
            raise LabError(f"rabbitmq: unknown node {node!r}") from None

    def node_name(self, node: str) -> str:
        # one epmd serves every node and registers names without the host part,
        # so the name itself must differ per node
        return f"rabbit-{self._host(node).name}@{node}"

    def amqp_url(self, node: str) -> str:
        user = urllib.parse.quote(self.secrets.rabbit_user, safe="")
        password = urllib.parse.quote(self.secrets.rabbit_password, safe="")
        return f"amqp://{user}:{password}@{self._host(node).address}:{self.amqp_port}/"

    def mgmt_url(self, node: str) -> str:
        return f"http://{self._host(node).address}:{self.mgmt_port}"

    def _dir(self, node: str) -> Path:
        return self.root / "nodes" / self._host(node).name

    @property
    def _inetrc(self) -> Path:
        return self.root / "inetrc"

    @property
    def inetrc(self) -> Path:
        """The Erlang resolver file that names the lab's hosts (ctl1 = 127.0.0.11 …)."""
        return self._inetrc

    @property
    def _conf_env_file(self) -> Path:
        return self.root / "rabbitmq-env.conf"

    def data_dir(self, node: str) -> Path:
        """RABBITMQ_MNESIA_BASE: everything the node persists (wiping it = a lost disk)."""
        return self._dir(node) / "mnesia"

    def pidfile(self, node: str) -> Path:
        return self._dir(node) / "rabbit.pid"

    def log_file(self, node: str) -> Path:
        return self._dir(node) / "log" / f"{self.node_name(node)}.log"

    def _base_env(self, node: str) -> dict[str, str]:
        """What both the server and the CLI need to find and reach the nodes."""
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            # the Elixir CLI refuses or warns on a non-UTF-8 locale
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(self._dir(node) / "home"),
            # an empty file, so /etc/rabbitmq/rabbitmq-env.conf is never read
            "RABBITMQ_CONF_ENV_FILE": str(self._conf_env_file),
            "ERL_INETRC": str(self._inetrc),
            "ERL_EPMD_PORT": str(self.epmd_port),
            # only used if a node has to start epmd itself: never on the wildcard
            "ERL_EPMD_ADDRESS": ",".join(["127.0.0.1", *(h.address for h in self.nodes)]),
        }

    def node_env(self, node: str) -> dict[str, str]:
        host = self._host(node)
        folder = self._dir(node)
        ip = _erl_ip(host.address)
        # Distribution starts with the VM (-sname), not in RabbitMQ's prelaunch: the
        # prelaunch check test-binds the dist port on the wildcard address, which fails
        # as soon as another node of any lab listens on that port on its own address.
        # No spaces inside a term: rabbitmq-server word-splits these arguments.
        erl_args = " ".join(
            [
                f"-sname {self.node_name(node)}",
                f"-kernel inet_dist_listen_min {self.dist_port}",
                f"-kernel inet_dist_listen_max {self.dist_port}",
                f"-kernel inet_dist_use_interface {ip}",
                f"-kernel inet_dist_connect_options [{{ip,{ip}}}]",
                f"-kernel net_ticktime {self.net_ticktime}",
            ]
        )
        return {
            **self._base_env(node),
            "RABBITMQ_NODENAME": self.node_name(node),
            "RABBITMQ_NODE_IP_ADDRESS": host.address,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.data_dir(node)),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
            # both default to files under /etc/rabbitmq, which must not leak in
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(folder / "advanced.config"),
            "RABBITMQ_CONFIG_FILES": str(folder / "conf.d"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.pidfile(node)),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": erl_args,
        }

    def node_argv(self, node: str) -> list[str]:
        self._host(node)
        return [str(SERVER)]

    # -- files ------------------------------------------------------------------

    def _conf(self, node: str, *, seed_alone: bool = True) -> str:
        host = self._host(node)
        lines = [
            f"listeners.tcp.default = {host.address}:{self.amqp_port}",
            f"management.tcp.ip = {host.address}",
            f"management.tcp.port = {self.mgmt_port}",
            f"default_user = {self.secrets.rabbit_user}",
            f"default_pass = {self.secrets.rabbit_password}",
            "default_vhost = /",
            "default_user_tags.administrator = true",
            "default_permissions.configure = .*",
            "default_permissions.read = .*",
            "default_permissions.write = .*",
            "loopback_users = none",
            "cluster_name = chaos-lab",
            f"cluster_partition_handling = {self.partition_handling}",
            "log.console = false",
            "log.file.level = info",
            "cluster_formation.peer_discovery_backend = classic_config",
            # a joining node waits for the seed's database: up to 120 x 0.5 s
            "cluster_formation.discovery_retry_limit = 120",
            "cluster_formation.discovery_retry_interval = 500",
        ]
        if node != self.nodes[0].name or not seed_alone:
            # At first boot the seed lists nobody, so it boots at once and the others
            # retry until its database is up. With everyone listed everywhere, 3.10's
            # discovery has each booting node wait for a peer whose database is up,
            # which none is yet (reasoned from the code, not measured).
            lines += [
                f"cluster_formation.classic_config.nodes.{i} = {self.node_name(h.name)}"
                for i, h in enumerate(self.nodes, start=1)
            ]
        return "\n".join(lines) + "\n"

    def _write_files(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._conf_env_file.write_text("")
        entries = [f'{{host, {_erl_ip(h.address)}, ["{h.name}"]}}.' for h in self.nodes]
        # file first: our host entries; native after it for everything else
        self._inetrc.write_text("\n".join([*entries, "{lookup, [file, native]}."]) + "\n")
        for host in self.nodes:
            folder = self._dir(host.name)
            if folder.exists():
                # "from nothing": old Mnesia data would skip peer discovery
                shutil.rmtree(folder)
            for sub in ("home", "mnesia", "log", "conf.d"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            (folder / "home").chmod(0o700)
            _write_private(folder / "home" / ".erlang.cookie", self.secrets.erlang_cookie, 0o400)
            _write_private(folder / "rabbitmq.conf", self._conf(host.name))
            (folder / "enabled_plugins").write_text("[rabbitmq_management].\n")

    # -- lifecycle --------------------------------------------------------------

    def _listen_ports(self) -> list[tuple[str, int]]:
        wanted = [("127.0.0.1", self.epmd_port)]
        for h in self.nodes:
            wanted += [
                (h.address, self.epmd_port),
                (h.address, self.amqp_port),
                (h.address, self.dist_port),
                (h.address, self.mgmt_port),
            ]
        return wanted

    def preflight(self) -> list[str]:
        problems: list[str] = []
        for binary in (SERVER, CTL):
            if not os.access(binary, os.X_OK):
                problems.append(f"rabbitmq: {binary} missing (apt-get install rabbitmq-server)")
        for tool in ("erl", "epmd"):
            if shutil.which(tool) is None:
                problems.append(f"rabbitmq: {tool} not on PATH (erlang missing)")
        for address, port in self._listen_ports():
            if procs.port_in_use(address, port):
                problems.append(f"rabbitmq: {address}:{port} already in use")
        return problems

    def _epmd_argv(self) -> list[str]:
        epmd = shutil.which("epmd") or "epmd"
        addresses = ",".join(["127.0.0.1", *(h.address for h in self.nodes)])
        # foreground (no -daemon) so the PID we get is epmd's own
        return [epmd, "-port", str(self.epmd_port), "-address", addresses]

    def up(self, register: Register) -> None:
        problems = self.preflight()
        if problems:
            raise LabError(problems[0] + (f" (+{len(problems) - 1} more)" if problems[1:] else ""))
        self._write_files()
        epmd = self.start_epmd(register)
        daemons = [epmd]
        seed, *joiners = self.nodes
        for host in self.nodes:
            daemon = procs.spawn(
                f"rabbitmq-{host.name}",
                self.node_argv(host.name),
                log=self._dir(host.name) / "log" / "server.out",
                env=self.node_env(host.name),
                cwd=self._dir(host.name),
                pidfile=self.pidfile(host.name),
            )
            register(daemon)
            daemons.append(daemon)
            if host is seed and joiners:
                self.wait_seed_booted(daemons)
        self.finish_up(daemons)

    def wait_seed_booted(self, daemons: list[Daemon]) -> None:
        """The joiners start once the seed has booted (its AMQP listener opens last).
        Started while the seed still creates its tables, a joiner sometimes died with
        schema_integrity_check_failed (seen twice here in a day of lab ups; the
        RabbitMQ cluster operator saw the same race, rabbitmq/cluster-operator#689)."""
        seed = self.nodes[0]
        self._wait(lambda: procs.port_open(seed.address, self.amqp_port, timeout=0.3),
                   what=f"seed node {seed.name} booted", timeout=UP_TIMEOUT, daemons=daemons)

    def prepare(self) -> None:
        """Config, cookie, inetrc and empty data for every node: ready to start (shared
        with the Kubernetes tier's RabbitMQ pods)."""
        self._write_files()

    def start_epmd(self, register: Register, name: str = "epmd") -> Daemon:
        """The one epmd of these nodes, on 127.0.0.1 and every node address."""
        epmd = procs.spawn(
            name,
            self._epmd_argv(),
            log=self.root / "epmd.log",
            env=self._base_env(self.nodes[0].name),
        )
        register(epmd)
        self._wait(
            lambda: all(
                procs.port_open(a, self.epmd_port)
                for a in ["127.0.0.1", *(h.address for h in self.nodes)]
            ),
            what="epmd listening",
            timeout=10.0,
            daemons=[epmd],
        )
        return epmd

    def write_node_env(self, node: str) -> Path:
        """The node's environment as a file (mode 600) that a start command sources."""
        env_file = self._dir(node) / "node.env"
        env_file.parent.mkdir(parents=True, exist_ok=True)
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"{k}={shlex.quote(v)}\n"
                                    for k, v in self.node_env(node).items()))
        return env_file

    def start_command(self, node: str) -> str:
        env_file = shlex.quote(str(self._dir(node) / "node.env"))
        return f"set -a; . {env_file}; set +a; exec " + shlex.join(self.node_argv(node))

    def cli_prefix(self, node: str) -> str:
        env_file = shlex.quote(str(self._dir(node) / "node.env"))
        return f"set -a; . {env_file}; set +a; {RABBIT_BIN}/"

    def finish_up(self, daemons: list[Daemon]) -> None:
        """Once the nodes run: the cluster whole, a quorum queue works, and the seed
        lists its peers from now on."""
        self.wait_healthy(timeout=UP_TIMEOUT, daemons=daemons)
        self._check_quorum_queue()
        # From now on the seed lists its peers too, as every node of a real site does:
        # a wiped seed restarted later then rejoins like any other node instead of
        # booting a cluster of its own. Read only at boot, so harmless while running.
        seed = self.nodes[0].name
        _write_private(self._dir(seed) / "rabbitmq.conf", self._conf(seed, seed_alone=False))

    def _wait(
        self, ready: Callable[[], bool], *, what: str, timeout: float, daemons: list[Daemon]
    ) -> None:
        """wait_for that gives up at once when one of ``daemons`` has died."""

        def check() -> tuple[bool, str]:
            dead = [d.name for d in daemons if not procs.alive(d.pid)]
            if dead:
                return True, f"died: {', '.join(dead)}"
            return bool(ready()), "not yet"

        try:
            seen = wait_for(check, what=what, timeout=timeout, interval=0.25)
        except ProbeTimeout as exc:
            raise LabError(f"rabbitmq: {exc}") from exc
        if seen.startswith("died"):
            raise LabError(f"rabbitmq: {seen} while waiting for {what}{_death_reason(daemons)}")

    def wait_healthy(self, *, timeout: float, daemons: list[Daemon] | None = None) -> None:
        """Wait until every node answers with all nodes running and no partition."""
        expected = sorted(self.node_name(h.name) for h in self.nodes)
        watched = daemons or []

        def check() -> tuple[bool, str]:
            dead = [d.name for d in watched if not procs.alive(d.pid)]
            if dead:
                return True, f"died: {', '.join(dead)}"
            views: list[str] = []
            done = True
            for host in self.nodes:
                try:
                    state = self.probe(host.name, timeout=2.0, queues=False)
                except (OSError, ValueError) as exc:
                    done = False
                    views.append(f"{host.name}: {type(exc).__name__}")
                    continue
                good = state.running_nodes == expected and not state.partitioned
                done = done and good
                views.append(f"{host.name}: {len(state.running_nodes)}/{len(expected)} running")
            return done, "; ".join(views)

        try:
            seen = wait_for(check, what="rabbitmq cluster healthy", timeout=timeout, interval=0.5)
        except ProbeTimeout as exc:
            raise LabError(f"rabbitmq: {exc}") from exc
        if seen.startswith("died"):
            raise LabError(f"rabbitmq: {seen} before the cluster formed{_death_reason(watched)}")

    def probe(self, node: str, *, timeout: float = 3.0, queues: bool = True) -> RabbitState:
        return probe(
            self.mgmt_url(node),
            self.secrets.rabbit_user,
            self.secrets.rabbit_password,
            timeout=timeout,
            queues=queues,
        )

    def _check_quorum_queue(self) -> None:
        """Declare and delete a quorum queue over HTTP: proves Ra has a majority."""
        base = self.mgmt_url(self.nodes[0].name)
        url = f"{base}/api/queues/%2F/chaos-lab-selftest"
        token = base64.b64encode(
            f"{self.secrets.rabbit_user}:{self.secrets.rabbit_password}".encode()
        ).decode()
        headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        body = json.dumps({"durable": True, "arguments": {"x-queue-type": "quorum"}}).encode()
        try:
            for method, data in (("PUT", body), ("DELETE", None)):
                request = urllib.request.Request(url, data=data, headers=headers, method=method)
                with urllib.request.urlopen(request, timeout=10.0):
                    pass
        except (OSError, ValueError) as exc:
            raise LabError(f"rabbitmq: quorum queue self-test failed: {exc}") from exc

    def status(self) -> list[Check]:
        # in parallel: during a partition each probe can take its full timeout
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            return list(pool.map(self._check, [h.name for h in self.nodes]))

    def _check(self, node: str) -> Check:
        expected = sorted(self.node_name(h.name) for h in self.nodes)
        component = f"rabbitmq/{node}"
        try:
            state = self.probe(node, timeout=3.0, queues=False)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return Check(component, False, f"management API: {reason}"[:100])
        missing = [_short(n) for n in expected if n not in state.running_nodes]
        cut_off = [_short(n) for n in state.partitions.get(self.node_name(node), [])]
        ok = not missing and not state.partitioned and state.running_nodes == expected
        detail = f"{len(state.running_nodes)}/{len(expected)} running"
        if missing:
            detail += f", down: {','.join(missing)}"
        if cut_off:
            detail += f", partitioned from: {','.join(cut_off)}"
        elif state.partitioned:
            detail += ", partitions elsewhere"
        return Check(component, ok, detail)

    def _our_processes(self) -> list[int]:
        """beam.smp and epmd processes of this root, found through /proc.

        Catches nodes restarted by hand after ``up`` (so not in the daemon list).
        """
        marker = f"RABBITMQ_MNESIA_BASE={self.root / 'nodes'}/".encode()
        inetrc = f"ERL_INETRC={self._inetrc}\0".encode()
        found: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            exe = cmdline.split(b"\0", 1)[0].rsplit(b"/", 1)[-1]
            if exe == b"beam.smp":
                ours = marker in environ
            elif exe == b"epmd":
                # also an epmd a node started by itself (-daemon, port from the env)
                ours = inetrc in environ
            else:
                ours = False
            if ours:
                found.append(int(entry.name))
        return found

    def down(self, daemons: list[Daemon]) -> None:
        epmd = [d for d in daemons if d.name == "epmd"]
        nodes = [d for d in daemons if d.name != "epmd"]
        pids = [p for d in nodes for p in d.pids()]
        epmd_pids = [p for d in epmd for p in d.pids()]
        for pid in self._our_processes():
            if pid not in pids and pid not in epmd_pids:
                (epmd_pids if _exe(pid) == "epmd" else pids).append(pid)
        # nodes first: epmd going away under live nodes would make them log noise
        left = procs.stop(pids, timeout=STOP_TIMEOUT)
        left += procs.stop(epmd_pids, timeout=5.0)
        left = [p for p in left if procs.alive(p)]
        if left:
            procs.signal_pids(left, signal.SIGKILL)
            raise LabError(f"rabbitmq: processes {left} survived SIGKILL")

    # -- CLI --------------------------------------------------------------------

    def ctl(self, node: str, *args: str, timeout: float = 30.0) -> str:
        env = self._base_env(node)
        argv = [str(CTL), "-n", self.node_name(node), *args]
        result = procs.run(argv, timeout=timeout, env=env, check=False)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise LabError(
                f"rabbitmqctl {' '.join(args)} on {node} exited {result.returncode}: "
                f"{lines[-1] if lines else ''}"
            )
        return result.stdout


def _death_reason(daemons: list[Daemon]) -> str:
    """The line where a dead node's output says why, e.g. ": Kernel pid terminated (…)"."""
    for daemon in daemons:
        if procs.alive(daemon.pid):
            continue
        try:
            lines = Path(daemon.log).read_text(errors="replace").splitlines()[-200:]
        except OSError:
            continue
        for marker in ("Kernel pid terminated", "BOOT FAILED", "[error]"):
            hits = [line for line in lines if marker in line]
            if hits:
                return f": {hits[-1].strip()[:200]} (log {daemon.log})"
        return f" (log {daemon.log})"
    return ""


def _exe(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return cmdline.split(b"\0", 1)[0].rsplit(b"/", 1)[-1].decode(errors="replace")
