"""A fleet of light compute hosts (``chaos lab up --computes N``), for the seed's scale.

The lab's three computes each run a docker daemon with libvirtd in a container, about
160 MB and a second of CPU each before any VM. Fifty of those do not fit two cores. A
fleet host keeps what the harness acts on and observes, and drops the rest:

- its own loopback address (cmp4 = 127.0.1.4) and its own sshd listening there;
- its own libvirtd, a process of the host (the inventory's ``libvirt.pidfile`` and
  ``start``, as a distribution's service runs it), in a mount namespace of its own so
  that its ``/run/libvirt``, ``/var/lib/libvirt`` and the rest are the host's directory,
  listening on ``<address>:16509``;
- small qemu (TCG) domains, started *paused*: each is a real qemu process that libvirt
  tracks, with a pid and a start time the VM oracle follows, at 10 MB of private memory
  and no CPU. A running idle domain costs 19 MB and 0.7 % of a core (both measured with
  /proc/PID/smaps_rollup and /proc/PID/stat here), so 1000 running ones would need 7
  cores.

A killed libvirtd leaves its qemu processes running (they are not its children once
started), and a new libvirtd in a new namespace finds them again through the same
directories: the fleet's VMs survive a libvirtd kill, as on a host built right.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.errors import ConfigError, LabError, ProbeTimeout, ServiceError
from chaos.services.libvirt import module, with_libvirt
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.compute import DEFAULT_CAPABILITIES_CACHE, QEMU_CONF, libvirtd_conf
from chaoslab.model import SSH_PORT, Check, Host, Register
from chaoslab.procs import Daemon
from chaoslab.sshd import SshdLab

LIBVIRT_PORT = 16509
# the fleet's hosts follow the lab's three computes: cmp4 .. cmpN
FIRST = 4
MAX_COMPUTES = 100  # 97 fleet hosts: 127.0.1.4 .. 127.0.1.100
MAX_VMS = 40  # per host
# directories libvirtd insists on; each fleet host's own is bound over them in its namespace
LIBVIRT_DIRS = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt",
                "log": "/var/log/libvirt", "cache": "/var/cache/libvirt"}


@dataclass(frozen=True)
class FleetSize:
    """How many computes the lab has in all, and how many VMs each fleet host runs."""

    computes: int
    vms: int

    def __post_init__(self) -> None:
        if not FIRST - 1 <= self.computes <= MAX_COMPUTES:
            raise ConfigError(f"--computes {self.computes}: the lab has {FIRST - 1} to "
                              f"{MAX_COMPUTES} computes")
        if not 1 <= self.vms <= MAX_VMS:
            raise ConfigError(f"--vms {self.vms}: 1 to {MAX_VMS} VMs per fleet host")

    def hosts(self) -> list[Host]:
        return [Host(f"cmp{n}", f"127.0.1.{n}") for n in range(FIRST, self.computes + 1)]


def domain_xml(name: str) -> str:
    # 16 MiB and a 1 MiB translation cache: a paused domain never touches either
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>16</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><tcg><tb-cache unit='MiB'>1</tb-cache></tcg></features>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <memballoon model='none'/>
  </devices>
</domain>
"""


class FleetLab:
    name = "fleet"

    def __init__(self, root: Path, size: FleetSize, *,
                 capabilities_cache: Path = DEFAULT_CAPABILITIES_CACHE) -> None:
        self.root = root
        self.size = size
        self.hosts = size.hosts()
        self.capabilities_cache = capabilities_cache
        # each host its own sshd, as each real compute has
        self.sshd = SshdLab(root / "sshd", self.hosts, port=SSH_PORT, per_daemon=1)

    # -- facts the inventory writes ---------------------------------------------------

    def home(self, host: str) -> Path:
        return self.root / host

    def uri(self, host: Host) -> str:
        return f"qemu+tcp://{host.address}:{LIBVIRT_PORT}/system"

    def pidfile(self, host: str) -> Path:
        return self.home(host) / "libvirtd.pid"

    def start_command(self, host: str) -> str:
        """libvirtd of ``host`` as is: a new mount namespace, its directories bound in."""
        return "exec unshare --mount --propagation private sh " + shlex.quote(
            str(self.home(host) / "libvirtd.sh"))

    def vm_names(self, host: str) -> list[str]:
        return [f"{host}-vm{i}" for i in range(1, self.size.vms + 1)]

    # -- the component ----------------------------------------------------------------

    def preflight(self) -> list[str]:
        problems = self.sshd.preflight()
        if shutil.which("unshare") is None:
            problems.append("fleet: unshare (util-linux) is missing")
        problems += [f"fleet: {h.address}:{LIBVIRT_PORT} is already in use"
                     for h in self.hosts if procs.port_in_use(h.address, LIBVIRT_PORT)]
        return problems

    def _write(self, host: Host) -> None:
        home = self.home(host.name)
        for sub in LIBVIRT_DIRS:
            (home / sub).mkdir(parents=True, exist_ok=True)
        (home / "etc" / "libvirtd.conf").write_text(
            libvirtd_conf(host.name, host.address, LIBVIRT_PORT))
        (home / "etc" / "qemu.conf").write_text(QEMU_CONF)
        binds = " && ".join(f"mount --bind {shlex.quote(str(home / sub))} {target}"
                            for sub, target in LIBVIRT_DIRS.items())
        (home / "libvirtd.sh").write_text(
            "# run by the inventory's libvirt.start, inside a fresh mount namespace\n"
            f"mount --make-rprivate / && {binds} && exec /usr/sbin/libvirtd --listen "
            f"--pid-file {shlex.quote(str(self.pidfile(host.name)))}\n")
        cache = home / "cache" / "qemu" / "capabilities"
        cache.mkdir(parents=True, exist_ok=True)
        # a warm capability cache: a cold probe costs ~9 s of CPU per libvirtd
        if self.capabilities_cache.is_dir():
            for xml in self.capabilities_cache.glob("*.xml"):
                shutil.copy2(xml, cache / xml.name)

    def up(self, register: Register) -> None:
        for target in LIBVIRT_DIRS.values():
            # mount points only; each libvirtd binds its own host's directory over them
            Path(target).mkdir(parents=True, exist_ok=True)
        self.sshd.up(register)
        for host in self.hosts:
            self._write(host)
            register(procs.spawn(f"libvirtd-{host.name}",
                                 ["sh", "-c", self.start_command(host.name)],
                                 log=self.home(host.name) / "libvirtd.out",
                                 pidfile=self.pidfile(host.name)))
        self._wait_all(timeout=120)
        # eight hosts at a time: libvirtd forks qemu and waits for its monitor, mostly
        # sleeping; more only queue on two cores
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(self._start_domains, self.hosts))

    def _wait_all(self, *, timeout: float) -> None:
        def probe() -> tuple[bool, str]:
            silent = [h.name for h in self.hosts if not self._answers(h)]
            return not silent, f"libvirt not answering on {len(silent)}: {silent[:5]}"

        wait_for(probe, what=f"libvirt on {len(self.hosts)} fleet hosts", timeout=timeout,
                 interval=0.5)

    def _answers(self, host: Host) -> bool:
        try:
            with_libvirt(self.uri(host), lambda c: c.getLibVersion(), timeout=3, what="ping")
        except ServiceError:
            return False
        return True

    def _start_domains(self, host: Host) -> None:
        libvirt = module()

        def define_and_start(conn: Any) -> None:
            for name in self.vm_names(host.name):
                try:
                    dom = conn.lookupByName(name)
                except libvirt.libvirtError:
                    dom = conn.defineXML(domain_xml(name))
                if not dom.isActive():
                    dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)

        with_libvirt(self.uri(host), define_and_start, timeout=30 + 3 * self.size.vms,
                     what=f"start {self.size.vms} domains on {host.name}")

    def status(self) -> list[Check]:
        def one(host: Host) -> Check:
            def count(conn: Any) -> int:
                return sum(1 for d in conn.listAllDomains(0) if d.isActive())

            try:
                live = with_libvirt(self.uri(host), count, timeout=3, what="list domains")
            except ServiceError as exc:
                return Check(f"libvirt/{host.name}", False, str(exc)[:120])
            return Check(f"libvirt/{host.name}", live == self.size.vms,
                         f"libvirtd answers; {live}/{self.size.vms} VMs")

        with ThreadPoolExecutor(max_workers=16) as pool:
            checks = list(pool.map(one, self.hosts))
        bad = [c for c in checks if not c.ok]
        # one line for the healthy fleet, one per host that is not
        summary = Check("fleet", not bad, f"{len(self.hosts) - len(bad)}/{len(self.hosts)} "
                        f"hosts healthy, {self.size.vms} VM(s) each")
        return [*self.sshd.status(), summary, *bad]

    def qemu_pids(self) -> list[int]:
        """The fleet's qemu processes: those whose guest name is a fleet VM's."""
        names = {f"guest={n}" for h in self.hosts for n in self.vm_names(h.name)}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args and args[0].endswith(b"qemu-system-x86_64"):
                with contextlib.suppress(ValueError):
                    if args[args.index(b"-name") + 1].decode().split(",")[0] in names:
                        found.append(int(entry.name))
        return found

    def libvirtd_pids(self) -> list[int]:
        """Every fleet libvirtd alive now, whoever started it (a recovery may have)."""
        pids = [procs.read_pidfile(self.pidfile(h.name)) for h in self.hosts]
        return [p for p in pids if p is not None and procs.alive(p)]

    def down(self, daemons: list[Daemon]) -> None:
        problems = []
        started = time.monotonic()
        # qemu first: libvirtd gone, nothing restarts them
        left = procs.stop([*self.qemu_pids(), *self.libvirtd_pids(),
                           *(p for d in daemons for p in d.pids())], timeout=10)
        if left:
            problems.append(f"processes still alive: {left}")
        with contextlib.suppress(LabError, ProbeTimeout):
            self.sshd.down([d for d in daemons if d.name == "sshd"])
        if not problems:
            shutil.rmtree(self.root, ignore_errors=True)
        if problems:
            raise LabError(f"fleet down incomplete after {time.monotonic() - started:.0f}s: "
                           + "; ".join(problems))
