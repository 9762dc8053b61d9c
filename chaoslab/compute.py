"""Compute hosts of the local lab: a private dockerd each, libvirtd in a container, one qemu VM.

Each host copies how OpenStack-on-Kubernetes runs nova's libvirt: libvirtd in a container
listening on TCP (``qemu+tcp://<address>:<port>/system``) and starting qemu processes that
must outlive the container. Three configurations exist on purpose, because telling them
apart is what the harness is for:

``right``
    ``--pid=host`` and the entrypoint moves itself into ``/<prefix>-<host>`` of every cgroup
    hierarchy before exec'ing libvirtd (openstack-helm does the same with ``systemd-run
    --scope``). ``docker kill`` or kill -9 of libvirtd leaves qemu running, and a restarted
    libvirtd reconnects to it.
``no-hostpid``
    libvirtd is the init of the container's PID namespace; when it dies the kernel kills
    every process of the namespace, qemu included.
``in-cgroup``
    ``--pid=host`` but libvirtd stays in the container's cgroups; when the container stops,
    runc kills every process of its cgroup, qemu included.

Layout under ``root/<host>/``: ``docker.sock``, ``docker.pid``, ``d/`` (docker data-root),
``x/`` (exec-root), ``etc/`` ``run/`` ``lib/`` ``cache/`` ``tmp/`` (the container's
/etc/libvirt, /run, /var/lib/libvirt, /var/cache/libvirt, /tmp), ``bin/`` (entrypoint),
``log/`` (dockerd.log, and libvirt's /var/log/libvirt under ``log/libvirt``). Paths are kept
short because unix sockets (containerd's lives in ``x/``) are limited to 107 bytes.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pwd
import shlex
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any, Literal, TypeVar

from chaos.errors import LabError, ProbeTimeout, ServiceError
from chaos.services.libvirt import STATE_NAMES, DomainIdentity, with_libvirt
from chaos.services.libvirt import module as libvirt_module
from chaos.wait import wait_for
from chaoslab.model import Check, Register
from chaoslab.procs import (
    Daemon,
    alive,
    port_in_use,
    read_pidfile,
    run,
    spawn,
    start_time_ticks,
    stop,
)

T = TypeVar("T")

Mode = Literal["right", "no-hostpid", "in-cgroup"]
MODES: tuple[Mode, ...] = ("right", "no-hostpid", "in-cgroup")

IMAGE = "chaos-libvirt:lab"
CONTAINER = "libvirt"
# Outside any lab root so that every lab (and every test run) starts libvirtd warm: the
# first probe of QEMU's capabilities costs ~9 s of CPU per libvirtd on these machines.
DEFAULT_CAPABILITIES_CACHE = Path("/var/cache/chaos-lab/libvirt-qemu-capabilities")

_SOCKET_MAX = 107  # sun_path is 108 bytes with the terminating NUL
_UP_TIMEOUT = 90.0  # a cold capability probe of three libvirtds on 2 busy cores


@dataclass(frozen=True)
class ComputeHost:
    name: str
    address: str
    mode: Mode


# --------------------------------------------------------------------------- binaries


def docker_cli() -> str | None:
    """Debian's docker CLI matches its daemon; another one on PATH may be newer."""
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    return shutil.which("docker")


def _binary(name: str) -> str | None:
    for folder in ("/usr/sbin", "/usr/bin"):
        if Path(folder, name).exists():
            return str(Path(folder, name))
    return shutil.which(name)


# --------------------------------------------------------------------------- libvirt

def qemu_pid_by_uuid(uuid: str) -> int | None:
    """The live qemu process started with ``-uuid <uuid>``, seen from this PID namespace.

    The pid file libvirt writes holds the pid in libvirtd's namespace, which is not ours
    for a container without --pid=host; the command line is the same from everywhere.
    """
    for pid in _qemu_pids():
        args = _cmdline(pid)
        with contextlib.suppress(ValueError):
            if args[args.index("-uuid") + 1] == uuid and alive(pid):
                return pid
    return None


def domains(uri: str, *, timeout: float = 5.0) -> list[DomainIdentity]:
    """Every domain libvirt at ``uri`` knows, with its qemu pid and start time."""

    def listing(conn: Any) -> list[tuple[str, str, int, int]]:
        return [
            (dom.name(), dom.UUIDString(), dom.ID(), dom.state()[0])
            for dom in conn.listAllDomains(0)
        ]

    found = with_libvirt(uri, listing, timeout=timeout, what="list domains")
    result = []
    for name, uuid, dom_id, state in sorted(found):
        pid = qemu_pid_by_uuid(uuid) if dom_id >= 0 else None
        result.append(
            DomainIdentity(
                name=name,
                uuid=uuid,
                id=dom_id,
                state=STATE_NAMES.get(state, str(state)),
                qemu_pid=pid,
                start_ticks=start_time_ticks(pid) if pid else None,
            )
        )
    return result


def domain_xml(name: str, *, memory_mib: int = 64) -> str:
    # No disk, network or display: the VM only has to be a real qemu process that libvirt
    # tracks; SeaBIOS finding nothing to boot idles at <1 % CPU.
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <memballoon model='none'/>
  </devices>
</domain>
"""


# --------------------------------------------------------------------------- /proc, mounts, cgroups


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _all_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _qemu_pids() -> Iterator[int]:
    for pid in _all_pids():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith("qemu-system"):
            yield pid


def _proc_cgroups(pid: int) -> list[str]:
    """The cgroup path of ``pid`` in each hierarchy."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    return [line.split(":", 2)[2] for line in lines if line.count(":") >= 2]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount in this mount namespace."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        found.append((_unescape(left.split()[4]), right.split()[0]))
    return found


def mounts_under(root: Path) -> list[str]:
    base = str(root).rstrip("/") + "/"
    return [point for point, _ in mounts() if point.startswith(base) or point == base[:-1]]


def dockerd_start_command(argv: list[str], exec_root: Path) -> str:
    """Shell command that starts a dockerd after a crash. The containerd that a killed
    dockerd leaves behind is reparented to PID 1, which on these machines may never
    reap it: dockerd then finds its PID "alive", waits for a dead socket and gives
    up. A zombie's pidfile is removed first."""
    pidfile = exec_root / "containerd" / "containerd.pid"
    return (f"p=$(cat {pidfile} 2>/dev/null); "
            "case \"$(sed 's/.*) //' /proc/$p/stat 2>/dev/null | cut -c1)\" in "
            f"''|Z) rm -f {pidfile};; esac; exec " + shlex.join(argv))


def unmount_under(root: Path) -> list[str]:
    """Unmount everything under ``root`` (dockerd and the kubelet bind their own
    directories); the problems, if any."""
    problems = []
    # deepest first, so a mount never hides another one below it
    for point in sorted(mounts_under(root), key=len, reverse=True):
        result = run(["umount", point], timeout=10, check=False)
        if result.returncode != 0:
            result = run(["umount", "-l", point], timeout=10, check=False)
        if result.returncode != 0:
            problems.append(f"cannot unmount {point}: {result.stderr.strip()}")
    return problems


def remove_cgroup_tree(top: Path) -> list[str]:
    """Remove a cgroup folder of ours and everything below it, bottom up; processes
    still in it are ours and are stopped. The problems, if any."""
    problems = []
    for folder in _cgroup_tree_bottom_up(top):
        error = _rmdir_cgroup(folder)
        if error:
            problems.append(error)
    return problems


def _rmdir_cgroup(folder: Path) -> str | None:
    def attempt() -> tuple[bool, str]:
        try:
            folder.rmdir()
        except FileNotFoundError:
            return True, "gone"
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return True, f"cannot remove cgroup {folder}: {exc.strerror}"
            # everything in our cgroups is ours: a straggler the sweep missed
            # (forked meanwhile) is stopped here
            stop(_cgroup_procs(folder), timeout=2)
            return False, f"{folder} busy: {_cgroup_procs(folder)}"
        return True, "removed"

    try:
        seen = wait_for(attempt, what=f"removal of {folder}", timeout=10, interval=0.1)
    except ProbeTimeout as exc:
        return str(exc)
    return seen if seen.startswith("cannot") else None


def cgroup_hierarchies() -> list[Path]:
    """Mount points of every cgroup v1 hierarchy and of the unified (v2) one."""
    return sorted(Path(point) for point, kind in mounts() if kind in ("cgroup", "cgroup2"))


def _cgroup_tree_bottom_up(top: Path) -> list[Path]:
    if not top.is_dir():
        return []
    found = [Path(folder) for folder, _, _ in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _cgroup_procs(folder: Path) -> list[int]:
    try:
        return [int(x) for x in (folder / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


# --------------------------------------------------------------------------- image


def _rootfs_tar() -> bytes:
    """A rootfs of empty directories: the container binds the host's /usr and /etc."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folders = [
            "usr", "etc", "run", "tmp", "proc", "sys", "dev", "chaos", "root", "var",
            "var/lib", "var/lib/libvirt", "var/log", "var/log/libvirt", "var/cache",
            "var/cache/libvirt",
        ]  # fmt: skip
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        # usr-merged Debian: the host's /usr provides everything behind these links
        links = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64",
                 "var/run": "../run"}  # fmt: skip
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def libvirtd_conf(host: str, address: str, port: int) -> str:
    """libvirtd listening on the host's own address only, over TCP, no auth (loopback)."""
    return f"""# written by chaoslab for {host}
listen_tls = 0
listen_tcp = 1
listen_addr = "{address}"
tcp_port = "{port}"
auth_tcp = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""


QEMU_CONF = """# no libvirt-daemon-system: no virtlogd, no AppArmor/SELinux, everything as root
user = "root"
group = "root"
security_driver = "none"
dynamic_ownership = 0
stdio_handler = "file"
# no per-VM cgroups: qemu stays in libvirtd's cgroup, which is what the modes are about
cgroup_controllers = [ ]
"""


ENTRYPOINT = """#!/bin/sh
# CHAOS_CGROUP set ("right" mode): leave the container's cgroups in every hierarchy, so
# that runc, which kills every process of the container's cgroup when the container
# stops, cannot reach the qemu processes libvirtd will fork.
set -e
if [ -n "$CHAOS_CGROUP" ]; then
  for h in /sys/fs/cgroup/*; do
    [ -f "$h/cgroup.procs" ] || continue
    echo $$ > "$h/$CHAOS_CGROUP/cgroup.procs"
  done
fi
echo "libvirtd starting, pid $$, cgroups:"
cat /proc/self/cgroup
exec /usr/sbin/libvirtd --listen
"""


# --------------------------------------------------------------------------- the component


class ComputeLab:
    """The compute hosts; see the module docstring for the three modes."""

    name = "compute"

    def __init__(
        self,
        root: Path,
        hosts: list[ComputeHost],
        *,
        libvirt_port: int = 16509,
        cgroup_prefix: str = "chaos-lab",
        capabilities_cache: Path | None = DEFAULT_CAPABILITIES_CACHE,
        shared: Path | None = None,
    ) -> None:
        self.root = root.absolute()
        # a folder every libvirt container sees at the host's own path: nova-compute, a
        # process of the host, writes an instance's disk and libvirt XML there, and the
        # libvirtd it reaches over qemu+tcp opens them by that path (the seed shares
        # /var/lib/nova/instances between its nova-compute and libvirt containers)
        self.shared = shared.absolute() if shared is not None else None
        self.hosts = list(hosts)
        self.libvirt_port = libvirt_port
        self.cgroup_prefix = cgroup_prefix
        # without a shared cache the lab keeps its own, so its hosts still share one probe
        self.capabilities_cache = capabilities_cache or self.root / "caps"
        self._by_name = {h.name: h for h in self.hosts}
        self._probed = threading.Event()
        self._started = time.monotonic()
        self.timings: dict[str, dict[str, float]] = {}
        """Seconds since up() began at which each host reached each step (for reports)."""

    # ----- naming

    def host(self, name: str) -> ComputeHost:
        try:
            return self._by_name[name]
        except KeyError:
            raise LabError(f"no compute host {name!r}") from None

    def node_home(self, host: str) -> Path:
        return self.root / host

    def libvirt_uri(self, host: str) -> str:
        return f"qemu+tcp://{self.host(host).address}:{self.libvirt_port}/system"

    def docker_socket(self, host: str) -> str:
        return f"unix://{self.node_home(host) / 'docker.sock'}"

    def container_name(self, host: str) -> str:
        return CONTAINER

    def domain_name(self, host: str) -> str:
        return f"{host}-vm1"

    def cgroup_name(self, host: str) -> str:
        """Where libvirtd of a "right" host lives, in every hierarchy."""
        return f"{self.cgroup_prefix}-{host}"

    def docker_cgroup_parent(self, host: str) -> str:
        """Absolute, so containers do not nest under whatever cgroup started dockerd."""
        return f"/{self.cgroup_prefix}-{host}-docker"

    def docker_raw(self, host: str, *args: str, timeout: float = 15.0) -> CompletedProcess[str]:
        cli = docker_cli()
        if cli is None:
            raise LabError("docker CLI not found")
        return run(
            [cli, "-H", self.docker_socket(host), *args],
            timeout=timeout,
            check=False,
            # a user's ~/.docker (contexts, DOCKER_HOST) must not redirect us
            env={"DOCKER_CONFIG": str(self.root / "docker-cli")},
        )

    def docker(self, host: str, *args: str, timeout: float = 15.0) -> str:
        """stdout of a docker CLI call against this host's daemon; LabError if it fails."""
        result = self.docker_raw(host, *args, timeout=timeout)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise LabError(f"docker {args[0]} on {host}: {lines[-1] if lines else 'failed'}")
        return result.stdout.strip()

    # ----- preflight

    def preflight(self) -> list[str]:
        problems = []
        for binary in ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "libvirtd",
                       "qemu-system-x86_64"):  # fmt: skip
            if _binary(binary) is None:
                problems.append(f"{binary} not installed")
        if docker_cli() is None:
            problems.append("docker CLI not installed")
        try:
            import libvirt  # noqa: F401
        except ImportError:
            problems.append("python module libvirt (libvirt-python) missing")
        try:
            pwd.getpwnam("libvirt-qemu")
        except KeyError:
            problems.append(
                "user libvirt-qemu missing (libvirt's qemu driver refuses to load): "
                "useradd --system --no-create-home --shell /usr/sbin/nologin libvirt-qemu"
            )
        names = [h.name for h in self.hosts]
        addresses = [h.address for h in self.hosts]
        if len(set(names)) != len(names) or len(set(addresses)) != len(addresses):
            problems.append("compute host names and addresses must be unique")
        for h in self.hosts:
            if h.mode not in MODES:
                problems.append(f"{h.name}: unknown mode {h.mode!r}")
            if not h.address.startswith("127."):
                problems.append(f"{h.name}: address {h.address} is not on 127.0.0.0/8")
            elif port_in_use(h.address, self.libvirt_port):
                problems.append(f"{h.name}: {h.address}:{self.libvirt_port} already in use")
            longest = self.node_home(h.name) / "x" / "containerd" / "containerd.sock.ttrpc"
            if len(str(longest)) > _SOCKET_MAX:
                problems.append(f"{h.name}: lab root too long for unix sockets ({longest})")
            if self.lab_pids(only_host=h.name):
                problems.append(f"{h.name}: processes of an earlier lab in {self.root} remain")
        if any(h.mode == "right" for h in self.hosts):
            hierarchies = cgroup_hierarchies()
            if not hierarchies:
                problems.append("no cgroup hierarchy mounted")
            elif any(h.parent != Path("/sys/fs/cgroup") and h != Path("/sys/fs/cgroup")
                     for h in hierarchies):  # fmt: skip
                problems.append("cgroup hierarchies not all under /sys/fs/cgroup")
            elif not os.access(hierarchies[0], os.W_OK):
                problems.append(f"cgroup hierarchy {hierarchies[0]} not writable")
        return problems

    # ----- up

    def up(self, register: Register) -> None:
        if not self.hosts:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "image.tar").write_bytes(_rootfs_tar())
        lock = threading.Lock()
        self._probed.clear()
        self._started = time.monotonic()
        self.timings = {h.name: {} for h in self.hosts}

        def safe_register(daemon: Daemon) -> None:
            with lock:
                register(daemon)

        errors = self._parallel(lambda h: self._up_host(h, safe_register))
        if errors:
            raise LabError("; ".join(errors))

    def _parallel(self, work: Callable[[ComputeHost], None]) -> list[str]:
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=len(self.hosts) or 1) as pool:
            futures = [(h, pool.submit(work, h)) for h in self.hosts]
            for h, future in futures:
                try:
                    future.result()
                except (LabError, ServiceError, ProbeTimeout) as exc:
                    errors.append(f"{h.name}: {exc}")
                except Exception as exc:  # a bug must still say which host it hit
                    errors.append(f"{h.name}: {type(exc).__name__}: {exc}")
        return errors

    def _mark(self, host: str, step: str) -> None:
        self.timings[host][step] = round(time.monotonic() - self._started, 2)

    def _up_host(self, h: ComputeHost, register: Register) -> None:
        try:
            self._up_host_steps(h, register)
        finally:
            if h.mode != "no-hostpid":
                # whatever happened, no host may keep waiting for this one's probe
                self._probed.set()

    def _up_host_steps(self, h: ComputeHost, register: Register) -> None:
        home = self.node_home(h.name)
        old = self._dockerd_pid(h.name)
        if old is not None:
            raise LabError(f"dockerd-{h.name} already running (pid {old}); run down first")
        for sub in ("d", "x", "etc", "run", "lib", "cache", "tmp", "bin", "log/libvirt"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        self.write_config(h)
        (home / "daemon.json").write_text("{}\n")  # never read /etc/docker/daemon.json
        daemon = spawn(f"dockerd-{h.name}", self.dockerd_argv(h.name),
                       log=home / "log" / "dockerd.log", pidfile=self.dockerd_pidfile(h.name))
        register(daemon)
        seen = wait_for(
            lambda: self._docker_answers(h.name, daemon.pid),
            what=f"dockerd-{h.name}",
            timeout=30,
            interval=0.1,
        )
        if seen.startswith("dockerd exited"):
            raise LabError(seen)
        self._mark(h.name, "dockerd")
        if not self.docker(h.name, "image", "ls", "-q", IMAGE):
            self._import_image(h.name)
        self.docker_raw(h.name, "rm", "--force", CONTAINER)
        if h.mode == "no-hostpid" and any(o.mode != "no-hostpid" for o in self.hosts):
            # libvirtd as PID 1 never reaps the daemonized qemu of its capability probe,
            # and waits for that zombie to vanish: measured, the first define did not
            # return within 30 s. A hostPID libvirtd
            # probes (or validates the cache) first, and this one starts warm.
            wait_for(
                lambda: (self._probed.is_set(), "capability probe of a hostPID host"),
                what=f"capabilities for {h.name}",
                timeout=_UP_TIMEOUT,
                interval=0.1,
            )
        self.seed_capabilities(h.name)
        self._run_container(h)
        self._mark(h.name, "container")
        self._wait_libvirt(h.name, timeout=_UP_TIMEOUT)
        self._mark(h.name, "libvirt")
        self._ensure_domain(h.name)
        self._mark(h.name, "domain")
        if h.mode != "no-hostpid":
            # libvirt probes lazily, on the first define: only now is the cache written
            self.save_capabilities(h.name)
            self._probed.set()

    def dockerd_pidfile(self, host: str) -> Path:
        return self.node_home(host) / "docker.pid"

    def dockerd_argv(self, host: str) -> list[str]:
        """The exact command that starts this host's private docker daemon."""
        home = self.node_home(host)
        return [
            _binary("dockerd") or "dockerd",
            "--host", self.docker_socket(host),
            "--data-root", str(home / "d"),
            "--exec-root", str(home / "x"),
            "--pidfile", str(self.dockerd_pidfile(host)),
            "--config-file", str(home / "daemon.json"),
            # no docker0 on 172.17/16, no NAT rules: nothing may leave loopback
            "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
            # vfs: no overlay mounts to leak under root; the image is empty dirs anyway
            "--storage-driver=vfs",
            "--cgroup-parent", self.docker_cgroup_parent(host),
            "--shutdown-timeout", "2",
            "--log-level", "warn",
        ]  # fmt: skip

    def dockerd_start_command(self, host: str) -> str:
        return dockerd_start_command(self.dockerd_argv(host), self.node_home(host) / "x")

    def start_domains(self, host: str) -> None:
        """Start the host's domains that are not running (what nova would do)."""
        self._ensure_domain(host)

    def _import_image(self, host: str) -> None:
        # procs.run takes text input; the tar goes through a file argument instead
        self.docker(host, "image", "import", str(self.root / "image.tar"), IMAGE, timeout=30)

    def _docker_answers(self, host: str, pid: int) -> tuple[bool, str]:
        if not alive(pid):
            # done, but failed: waiting longer cannot help
            log = self.node_home(host) / "log" / "dockerd.log"
            return True, f"dockerd exited: {_last_line(log)}"
        result = self.docker_raw(host, "version", "--format", "{{.Server.Version}}", timeout=5)
        return result.returncode == 0, (result.stdout or result.stderr).strip()

    def write_config(self, h: ComputeHost) -> None:
        home = self.node_home(h.name)
        (home / "etc" / "libvirtd.conf").write_text(
            libvirtd_conf(f"{h.name} ({h.mode})", h.address, self.libvirt_port))
        (home / "etc" / "qemu.conf").write_text(QEMU_CONF)
        entry = home / "bin" / "entrypoint.sh"
        entry.write_text(ENTRYPOINT)
        entry.chmod(0o755)

    def ensure_cgroups(self, host: str) -> None:
        name = self.cgroup_name(host)
        for hierarchy in cgroup_hierarchies():
            folder = hierarchy / name
            folder.mkdir(exist_ok=True)
            # cpuset refuses tasks until its cpus and mems are set; copy the root's
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (folder / knob).exists() and not (folder / knob).read_text().strip():
                    (folder / knob).write_text((hierarchy / knob).read_text())

    def _run_container(self, h: ComputeHost) -> None:
        home = self.node_home(h.name)
        args = [
            "run", "--detach", "--name", CONTAINER, "--network", "host", "--restart", "no",
            "--label", f"chaos-lab={self.cgroup_prefix}",
            # --privileged needs CAP_SYS_RESOURCE, which these machines do not grant
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm",
            "-v", "/usr:/usr:ro", "-v", "/etc:/etc:ro",
            "-v", f"{home / 'etc'}:/etc/libvirt",
            "-v", f"{home / 'run'}:/run",
            "-v", f"{home / 'lib'}:/var/lib/libvirt",
            "-v", f"{home / 'log' / 'libvirt'}:/var/log/libvirt",
            "-v", f"{home / 'cache'}:/var/cache/libvirt",
            "-v", f"{home / 'tmp'}:/tmp",
            "-v", f"{home / 'bin'}:/chaos:ro",
        ]  # fmt: skip
        if self.shared is not None:
            self.shared.mkdir(parents=True, exist_ok=True)
            args += ["-v", f"{self.shared}:{self.shared}"]
        if h.mode in ("right", "in-cgroup"):
            args += ["--pid", "host"]
        if h.mode == "right":
            self.ensure_cgroups(h.name)
            args += [
                "--cgroupns", "host",
                "-v", "/sys/fs/cgroup:/sys/fs/cgroup",
                "-e", f"CHAOS_CGROUP={self.cgroup_name(h.name)}",
            ]  # fmt: skip
        args += ["--entrypoint", "/chaos/entrypoint.sh", IMAGE]
        self.docker(h.name, *args, timeout=30)

    def _container_state(self, host: str) -> tuple[bool, str]:
        """(running, short description) of the libvirt container."""
        fields = "{{.State.Status}} {{.State.ExitCode}} {{.State.Pid}}"
        result = self.docker_raw(host, "inspect", "--format", fields, CONTAINER, timeout=5)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            return False, f"container: {lines[-1] if lines else 'inspect failed'}"
        status, code, pid = result.stdout.split()
        if status == "running":
            return True, f"container running (libvirtd pid {pid})"
        return False, f"container {status} (exit {code})"

    def libvirtd_pid(self, host: str) -> int | None:
        """libvirtd's pid in this machine's namespace (the container's init), if running."""
        try:
            text = self.docker(host, "inspect", "--format", "{{.State.Pid}}", CONTAINER,
                               timeout=5)  # fmt: skip
        except LabError:
            return None
        pid = int(text) if text.isdigit() else 0
        return pid if pid > 0 and alive(pid) else None

    def _wait_libvirt(self, host: str, *, timeout: float) -> None:
        uri = self.libvirt_uri(host)

        def probe() -> tuple[bool, str]:
            try:
                version = with_libvirt(uri, lambda c: c.getLibVersion(), timeout=3, what="ping")
                return True, f"libvirt {version}"
            except ServiceError as exc:
                running, state = self._container_state(host)
                if not running:
                    # the entrypoint failed; waiting longer cannot help
                    return True, f"{state}: {self._container_log_tail(host)}"
                return False, str(exc)

        seen = wait_for(probe, what=f"libvirt on {host}", timeout=timeout, interval=0.2)
        if not seen.startswith("libvirt "):
            raise LabError(seen)

    def _container_log_tail(self, host: str) -> str:
        # libvirtd logs to a file, so its last words are there, not in docker logs
        log = self.node_home(host) / "log" / "libvirt" / "libvirtd.log"
        if log.exists():
            return f"libvirtd.log: {_last_line(log)}"
        result = self.docker_raw(host, "logs", "--tail", "3", CONTAINER, timeout=5)
        lines = (result.stdout + result.stderr).strip().splitlines()
        return lines[-1] if lines else "no output"

    def _ensure_domain(self, host: str) -> None:
        uri = self.libvirt_uri(host)
        name = self.domain_name(host)
        libvirt = libvirt_module()

        def define_and_start(conn: Any) -> None:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                dom = conn.defineXML(domain_xml(name))
            if not dom.isActive():
                dom.create()

        with_libvirt(uri, define_and_start, timeout=30, what=f"start {name}")

        def probe() -> tuple[bool, list[DomainIdentity]]:
            found = domains(uri, timeout=3)
            ok = any(d.name == name and d.state == "running" and d.qemu_pid for d in found)
            return ok, found

        wait_for(probe, what=f"{name} running", timeout=20, interval=0.1)

    @contextlib.contextmanager
    def domain_set_aside(self, host: str) -> Iterator[None]:
        """The host's own domain stopped and undefined for the duration, then defined
        and started again (a new qemu). nova-compute's first start refuses a hypervisor
        that already runs domains ("My hypervisor has existing instances, but I appear
        to be a new service in this database"): on a site every domain of a compute is
        nova's, and here the lab's own is in the way once, while nova-compute registers;
        restarts after that find their service and do not ask."""
        name = self.domain_name(host)
        libvirt = libvirt_module()

        def remove(conn: Any) -> None:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                return
            if dom.isActive():
                dom.destroy()
            dom.undefine()

        with_libvirt(self.libvirt_uri(host), remove, timeout=30, what=f"set {name} aside")
        try:
            yield
        finally:
            self._ensure_domain(host)

    def start_libvirt_container(self, host: str) -> None:
        """(Re)start the libvirt container, as kubelet would; return once libvirt answers."""
        h = self.host(host)
        if h.mode == "right":
            self.ensure_cgroups(host)
        if self.docker_raw(host, "inspect", CONTAINER, timeout=10).returncode == 0:
            self.docker(host, "start", CONTAINER, timeout=30)
        else:
            self._run_container(h)
        self._wait_libvirt(host, timeout=60)

    # ----- capability cache

    def seed_capabilities(self, host: str) -> None:
        shared = self.capabilities_cache
        if not shared.is_dir():
            return
        target = self.node_home(host) / "cache" / "qemu" / "capabilities"
        target.mkdir(parents=True, exist_ok=True)
        for xml in shared.glob("*.xml"):
            shutil.copy2(xml, target / xml.name)

    def save_capabilities(self, host: str) -> None:
        """Keep the freshest probe result for the next lab; libvirt re-probes if stale."""
        shared = self.capabilities_cache
        source = self.node_home(host) / "cache" / "qemu" / "capabilities"
        files = {p.name: p.read_bytes() for p in source.glob("*.xml")}
        if not files:
            return
        try:
            shared.mkdir(parents=True, exist_ok=True)
            current = {p.name: p.read_bytes() for p in shared.glob("*.xml")}
            if current == files:
                return
            for name, data in files.items():
                # several labs may save at once: each file is replaced atomically
                temp = shared / f".{name}.{os.getpid()}.{threading.get_ident()}"
                temp.write_bytes(data)
                os.replace(temp, shared / name)
            for name in set(current) - set(files):
                with contextlib.suppress(FileNotFoundError):
                    (shared / name).unlink()
        except OSError:
            pass  # the cache only saves time; a lab works without it

    # ----- status

    def status(self) -> list[Check]:
        if not self.hosts:
            return []
        with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
            return list(pool.map(self._host_status, self.hosts))

    def _host_status(self, h: ComputeHost) -> Check:
        component = f"libvirt/{h.name}"
        pid = self._dockerd_pid(h.name)
        if pid is None:
            # qemu of a "right" host outlives its dockerd: worth knowing when this fails
            vms = [qemu_pid_by_uuid(u) for u in sorted(self._lab_uuids(h.name))]
            survivors = [p for p in vms if p]
            return Check(component, False, f"dockerd not running; qemu alive: {survivors}")
        try:
            running, state = self._container_state(h.name)
        except LabError as exc:
            return Check(component, False, f"dockerd {pid}: {exc}")
        if not running:
            return Check(component, False, f"dockerd {pid}, {state}")
        try:
            found = domains(self.libvirt_uri(h.name), timeout=3)
        except ServiceError as exc:
            return Check(component, False, f"{state}; {exc}")
        if not found:
            return Check(component, False, f"{state}; no domains")
        listing = ", ".join(f"{d.name} {d.state} qemu {d.qemu_pid}" for d in found)
        ok = all(d.state == "running" and d.qemu_pid for d in found)
        return Check(component, ok, f"{h.mode}: {state}; {listing}")

    # ----- down

    def _dockerd_pid(self, host: str) -> int | None:
        """dockerd of this host, from its pid file, checked against its command line."""
        pid = read_pidfile(self.node_home(host) / "docker.pid")
        if pid and alive(pid) and self._mentions_root(pid, host):
            return pid
        return None

    def _mentions_root(self, pid: int, host: str | None = None) -> bool:
        base = str(self.node_home(host) if host else self.root) + "/"
        return any(base in arg for arg in _cmdline(pid))

    def _lab_uuids(self, only_host: str | None = None) -> set[str]:
        """UUIDs of the domains defined under root, from libvirt's own files."""
        uuids = set()
        for h in self.hosts:
            if only_host and h.name != only_host:
                continue
            home = self.node_home(h.name)
            files = [*(home / "etc" / "qemu").glob("*.xml"),
                     *(home / "run" / "libvirt" / "qemu").glob("*.xml")]  # fmt: skip
            for xml in files:
                with contextlib.suppress(OSError):
                    text = xml.read_text()
                    start = text.find("<uuid>")
                    end = text.find("</uuid>", start)
                    if start >= 0 and end > start:
                        uuids.add(text[start + 6 : end].strip())
        return uuids

    def lab_pids(self, only_host: str | None = None) -> list[int]:
        """Live processes of this lab: its docker daemons and shims (by their command
        line naming the root), anything in its cgroups (libvirtd, qemu), and qemu processes
        of its domains wherever they ended up."""
        me = os.getpid()
        uuids = self._lab_uuids(only_host)
        daemons = ("dockerd", "containerd", "containerd-shim-runc-v2", "containerd-shim", "runc")
        hosts = [only_host] if only_host else [h.name for h in self.hosts]
        found = []
        for pid in _all_pids():
            if pid == me or not alive(pid):
                continue
            args = _cmdline(pid)
            if not args:
                continue  # kernel threads
            exe = os.path.basename(args[0])
            ours = exe in daemons and any(self._mentions_root(pid, host) for host in hosts)
            if ours or any(self._owned_cgroup_of(path, hosts) for path in _proc_cgroups(pid)):
                found.append(pid)
            elif exe.startswith("qemu-system") and "-uuid" in args:
                with contextlib.suppress(IndexError):
                    if args[args.index("-uuid") + 1] in uuids:
                        found.append(pid)
        return found

    def _owned_cgroup_of(self, path: str, hosts: list[str]) -> bool:
        for host in hosts:
            for top in (f"/{self.cgroup_name(host)}", self.docker_cgroup_parent(host)):
                if path == top or path.startswith(top + "/"):
                    return True
        return False

    def down(self, daemons: list[Daemon]) -> None:
        problems = self._parallel(lambda h: self._down_host(h, daemons))
        # the lab is being destroyed: no need to give stragglers (shims ignore SIGTERM)
        # long to exit cleanly
        leftover = stop(self.lab_pids(), timeout=1)
        if leftover:
            problems.append(f"processes still alive: {leftover}")
        problems += self._unmount_all()
        problems += self._remove_cgroups()
        if not problems:
            problems += self._remove_state()
        if problems:
            raise LabError("compute down incomplete: " + "; ".join(problems))

    def _down_host(self, h: ComputeHost, daemons: list[Daemon]) -> None:
        pid = self._dockerd_pid(h.name)
        if pid is not None:
            # politely first: libvirt tidies its state, then the container goes. Not when
            # libvirtd is PID 1: qemu stays a zombie it never reaps, and destroy then
            # waits 2 x 40 s for it to vanish (measured); removing the container is enough.
            with contextlib.suppress(LabError, ServiceError, ProbeTimeout):
                if h.mode != "no-hostpid" and self._container_state(h.name)[0]:
                    with_libvirt(
                        self.libvirt_uri(h.name),
                        lambda conn: [d.destroy() for d in conn.listAllDomains(1)],
                        timeout=3,
                        what="destroy domains",
                    )
            with contextlib.suppress(LabError):
                self.docker_raw(h.name, "rm", "--force", CONTAINER, timeout=15)
        pids = {p for d in daemons if d.name == f"dockerd-{h.name}" for p in d.pids()
                if self._mentions_root(p, h.name)}  # fmt: skip
        if pid is not None:
            pids.add(pid)
        # dockerd stops the containerd it started on SIGTERM; the sweep in down()
        # catches a containerd orphaned by a dockerd that was killed
        leftover = stop(sorted(pids), timeout=10)
        if leftover:
            raise LabError(f"dockerd {leftover} did not stop")

    def _unmount_all(self) -> list[str]:
        return unmount_under(self.root)

    def _remove_cgroups(self) -> list[str]:
        problems = []
        for hierarchy in cgroup_hierarchies():
            for h in self.hosts:
                for top in (self.cgroup_name(h.name), self.docker_cgroup_parent(h.name)[1:]):
                    problems += remove_cgroup_tree(hierarchy / top)
        return problems

    def _remove_state(self) -> list[str]:
        if mounts_under(self.root):
            return ["mounts remain under root; state left in place"]
        for h in self.hosts:
            home = self.node_home(h.name)
            for sub in ("d", "x", "etc", "run", "lib", "cache", "tmp", "bin"):
                shutil.rmtree(home / sub, ignore_errors=True)
            for name in ("docker.sock", "docker.pid", "daemon.json"):
                with contextlib.suppress(FileNotFoundError):
                    (home / name).unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.root / "image.tar").unlink()
        return []


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1][-200:] if lines else "empty log"
