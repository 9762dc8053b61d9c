"""The lab orchestrator: bring every component up in parallel, remember every process
in a state file, report health, write the site inventory, and tear it all down.

State lives in ``<root>/lab.json``, rewritten atomically (and fsync'd) each time a
daemon is spawned, so a crash at any point leaves enough behind for ``lab down``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from chaos.errors import ConfigError, HarnessError, LabError
from chaos.inventory import LAB_DIR, lab_dir
from chaoslab.fleet import FleetLab, FleetSize
from chaoslab.inventory import kube_inventory, lab_env, lab_inventory
from chaoslab.model import COMPUTES, CONTROLLERS, SSH_PORT, Check, Component, Host, LabSecrets
from chaoslab.procs import Daemon

if TYPE_CHECKING:
    from chaoslab.compute import ComputeLab
    from chaoslab.haproxy import HaproxyLab
    from chaoslab.kube import KubeLab
    from chaoslab.nova import NovaLab
    from chaoslab.openstack import KeystoneLab

# the harness knows where a lab lives (its default inventory); the lab takes it from there
DEFAULT_ROOT = LAB_DIR
STATE_VERSION = 1
UP_TIMEOUT = 240.0
# the write endpoint OpenStack's services use for Galera (lab up --openstack): HAProxy
DB_ENDPOINT = "127.0.0.10"


def lab_root() -> Path:
    """``$CHAOS_LAB_DIR`` or /var/lib/chaos-lab."""
    return lab_dir()


@dataclass
class UpResult:
    already_up: bool
    seconds: float
    inventory: Path


class Lab:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or lab_root()
        self.state_file = self.root / "lab.json"
        self.inventory_file = self.root / "inventory.yaml"
        # the Kubernetes tier's site: the same services, as pods (``lab up --kube``)
        self.kube_inventory_file = self.root / "inventory-kube.yaml"
        self._state_lock = threading.Lock()
        self._state: dict[str, Any] = {}

    # -- components -------------------------------------------------------------------

    def secrets(self) -> LabSecrets:
        return LabSecrets.load_or_create(self.root)

    def kube_enabled(self) -> bool:
        state = self.read_state()
        return bool(state and state.get("kube"))

    def kube(self, platform: str | None = None) -> KubeLab:
        """The Kubernetes tier, running the topology it was brought up with (or
        ``platform``'s, for an up)."""
        from chaoslab.kube import KubeLab

        state = self.read_state() or {}
        return KubeLab(self.root / "kube", self.secrets(), cgroup_prefix=self.cgroup_prefix(),
                       platform=platform or state.get("kube_platform") or "seed")

    def openstack_enabled(self) -> bool:
        state = self.read_state()
        return bool(state and state.get("openstack"))

    def keystone(self) -> KeystoneLab:
        """Keystone on ctl1's address, its database on the lab's Galera (ctl1's node)."""
        from urllib.parse import quote

        from chaoslab.openstack import KeystoneLab

        s = self.secrets()
        # through the one write endpoint, as OpenStack's services reach Galera on a site
        url = (f"mysql+pymysql://{quote(s.db_user, safe='')}:{quote(s.db_password, safe='')}"
               f"@{DB_ENDPOINT}:3306/keystone")
        return KeystoneLab(self.root / "openstack" / "keystone", CONTROLLERS[0].address, url)

    def compute(self) -> ComputeLab:
        """The compute hosts cmp1-cmp3, each container binding nova's instances folder."""
        from chaoslab.compute import ComputeHost, ComputeLab

        return ComputeLab(self.root / "compute",
                          [ComputeHost(n, a, m) for n, a, m in COMPUTES],  # type: ignore[arg-type]
                          cgroup_prefix=self.cgroup_prefix(), shared=self.nova_instances())

    def nova_instances(self) -> Path:
        """nova-compute's instances folder, which cmp1's libvirt container binds at the
        same path (every container binds it, OpenStack or not: a tier added later finds
        it there)."""
        return self.root / "compute" / "nova-instances"

    def nova(self) -> NovaLab:
        """glance, placement, nova and neutron on ctl1's address beside keystone, their
        databases through the one write endpoint, their transport URL listing every
        RabbitMQ node, and nova-compute for cmp1, whose libvirtd (in its container with
        hostPID) it reaches over qemu+tcp as the seed's does."""
        from urllib.parse import quote

        from chaoslab.nova import Admin, NovaLab
        from chaoslab.openstack import ADMIN_PROJECT, ADMIN_USER
        from chaoslab.rabbitmq import RabbitLab

        s = self.secrets()
        keystone = self.keystone()
        rabbit = RabbitLab(self.root / "rabbitmq", CONTROLLERS, s)
        user, password = quote(s.rabbit_user, safe=""), quote(s.rabbit_password, safe="")
        # oslo.messaging's form for a cluster: every member, one URL, tried in turn
        transport = "rabbit://" + ",".join(f"{user}:{password}@{h.address}:{rabbit.amqp_port}"
                                           for h in CONTROLLERS) + "/"
        name, address, _ = COMPUTES[0]
        database = (f"mysql+pymysql://{quote(s.db_user, safe='')}:"
                    f"{quote(s.db_password, safe='')}@{DB_ENDPOINT}:3306")
        return NovaLab(self.root / "openstack" / "nova", CONTROLLERS[0].address, database,
                       transport, Admin(keystone.auth_url, ADMIN_USER,
                                        keystone.admin_password(), ADMIN_PROJECT),
                       self.compute().libvirt_uri(name), compute_address=address,
                       compute_host=name, controller_host=CONTROLLERS[0].name,
                       instances_path=self.nova_instances())

    def haproxy(self) -> HaproxyLab:
        """Galera's one write endpoint for OpenStack's services (``DB_ENDPOINT``:3306)."""
        from chaoslab.galera import GaleraLab
        from chaoslab.haproxy import HaproxyLab

        galera = GaleraLab(self.root / "galera", CONTROLLERS, self.secrets())
        return HaproxyLab(self.root / "openstack" / "haproxy", DB_ENDPOINT, CONTROLLERS,
                          self.secrets(), {h.name: galera.socket_path(h.name)
                                           for h in CONTROLLERS})

    def fleet_size(self) -> FleetSize | None:
        """The fleet of light computes the running lab has (``lab up --computes N``)."""
        state = self.read_state()
        fleet = state.get("fleet") if state else None
        return FleetSize(fleet["computes"], fleet["vms"]) if fleet else None

    def fleet(self, size: FleetSize) -> FleetLab:
        return FleetLab(self.root / "fleet", size)

    def components(self, *, kube: bool | None = None,
                   fleet: FleetSize | None = None) -> list[Component]:
        """The process lab's components, the fleet's when it has one, and the Kubernetes
        tier's when it is (to be) up."""
        parts = self._process_components()
        size = fleet or self.fleet_size()
        if size is not None and size.hosts():
            parts.append(self.fleet(size))
        if self.kube_enabled() if kube is None else kube:
            parts.append(self.kube())
        if self.openstack_enabled():
            parts += [self.haproxy(), self.keystone(), self.nova()]
        return parts

    def _process_components(self) -> list[Component]:
        # imported here so `chaos inventory check` and unit tests need none of the lab
        from chaoslab.galera import GaleraLab
        from chaoslab.rabbitmq import RabbitLab
        from chaoslab.sshd import SshdLab

        secrets = self.secrets()
        hosts = CONTROLLERS + [Host(n, a) for n, a, _ in COMPUTES]
        return [
            SshdLab(self.root / "sshd", hosts, port=SSH_PORT),
            GaleraLab(self.root / "galera", CONTROLLERS, secrets),
            # pause_minority, as kolla-ansible configures it: a minority node pauses and
            # rejoins by itself once the network heals ('ignore' stays split for good)
            RabbitLab(self.root / "rabbitmq", CONTROLLERS, secrets,
                      partition_handling="pause_minority"),
            self.compute(),
        ]

    def cgroup_prefix(self) -> str:
        """Cgroup names are machine-wide: a lab at another root (a test's, a stale one)
        gets names of its own, so its 'down' can never touch this lab's processes."""
        if self.root == DEFAULT_ROOT:
            return "chaos-lab"
        return "chaos-lab-" + hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:8]

    # -- state ------------------------------------------------------------------------

    def read_state(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LabError(f"{self.state_file}: unreadable lab state ({exc}); "
                           "run 'chaos lab down' to clear it") from exc
        return data

    def _write_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        with open(tmp, "w") as out:
            json.dump(self._state, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.state_file)

    def _register(self, component: str) -> Any:
        def register(daemon: Daemon) -> None:
            with self._state_lock:
                self._state["daemons"].append({"component": component, **daemon.to_json()})
                self._write_state()

        return register

    @staticmethod
    def daemons(state: dict[str, Any], component: str | None = None) -> list[Daemon]:
        return [
            Daemon.from_json({k: v for k, v in d.items() if k != "component"})
            for d in state.get("daemons", [])
            if component is None or d["component"] == component
        ]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One lab command at a time acts on a root."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LabError(f"another chaos lab command is working on {self.root}") from None
            yield

    def is_running(self) -> bool:
        state = self.read_state()
        if not state or state.get("phase") != "up":
            return False
        return all(d.alive() for d in self.daemons(state))

    # -- up / down / status -----------------------------------------------------------

    def up(self, *, kube: bool = False, fleet: FleetSize | None = None,
           openstack: bool = False, platform: str = "seed") -> UpResult:
        """Bring the lab up from nothing; with ``kube``, the Kubernetes tier too (added
        to a running lab when only it is missing); with ``fleet``, that many computes in
        all, the ones past the first three light (chaoslab.fleet); with ``openstack``,
        OpenStack's services on the lab's own (so far keystone; added to a running lab
        like the Kubernetes tier)."""
        start = time.monotonic()
        if kube and not self.kube_enabled():
            from chaoslab import kubebuild

            problems = kubebuild.preflight()
            if problems:
                raise LabError(problems[0])
            # the one-time build (~9 min cold) runs before any daemon, outside up's timeout
            kubebuild.ensure_binaries()
        if openstack and not self.openstack_enabled():
            from chaoslab.openstack import ensure_venv

            # OpenStack's own venv (~55 s cold), before any daemon, outside up's timeout
            ensure_venv()
        with self._locked():
            state = self.read_state()
            if state is not None:
                dead = [d.name for d in self.daemons(state) if not d.alive()]
                # a lab that came up and lost members since (a fault, a crash) is up but
                # unhealthy: nothing is started here; the CLI says what brings it back.
                # Every process gone is another thing: a lab from before a reboot.
                everything_gone = bool(dead) and len(dead) == len(self.daemons(state))
                if state.get("phase") == "up" and not everything_gone:
                    have = self.fleet_size()
                    if fleet is not None and fleet != have:
                        computes = have.computes if have else 3
                        raise ConfigError(
                            f"the lab is up with {computes} computes"
                            + (f" ({have.vms} VM(s) each past the third)" if have else "")
                            + f"; for --computes {fleet.computes} --vms {fleet.vms}, run "
                            "'chaos lab down' first")
                    running = state.get("kube_platform") or "seed"
                    if kube and state.get("kube") and running != platform:
                        raise ConfigError(
                            f"the lab's Kubernetes tier runs the {running} topology; for "
                            f"--platform {platform}, run 'chaos lab down' first")
                    added = False
                    if kube and not state.get("kube"):
                        self._state = state
                        self._add_kube(platform)
                        added = True
                    if openstack and not state.get("openstack"):
                        self._state = self.read_state() or state
                        self._add_openstack()
                        added = True
                    if added:
                        return UpResult(False, time.monotonic() - start, self.inventory_file)
                    # nothing to start, but the inventories are written again: a harness
                    # updated since the lab came up may read them in a newer format
                    self.write_inventory()
                    if state.get("kube"):
                        self.write_kube_inventory()
                    return UpResult(True, time.monotonic() - start, self.inventory_file)
                why = ("every one of its processes is gone" if everything_gone
                       else "an 'up' never finished")
                raise LabError(
                    f"stale lab directory {self.root} from a crashed run ({why}); "
                    "run 'chaos lab down' first"
                )
            components = self.components(kube=False, fleet=fleet)
            problems = [p for c in self.components(kube=kube, fleet=fleet)
                        for p in c.preflight()]
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise LabError(problems[0] + more)
            self._state = {"version": STATE_VERSION, "phase": "starting",
                           "started": time.time(), "daemons": [], "kube": False}
            if fleet is not None and fleet.hosts():
                self._state["fleet"] = {"computes": fleet.computes, "vms": fleet.vms}
            self._write_state()
            try:
                self._up_all(components)
                self.write_inventory()
            except BaseException:
                self._down_all(components, self._state)
                self._clear()
                raise
            # helpers that ran during up and ended on purpose (the Galera template node)
            # are not part of the running lab; every component checked its own health
            alive = [d.alive() for d in self.daemons(self._state)]
            self._state["daemons"] = [d for d, up in zip(self._state["daemons"], alive,
                                                          strict=True) if up]
            self._state["phase"] = "up"
            self._state["up_seconds"] = round(time.monotonic() - start, 2)
            self._write_state()
            if kube:
                # after the process lab, not beside it: started together on two cores,
                # the process lab's RabbitMQ ctl2 once died at boot with
                # schema_integrity_check_failed (cause not found: the failed up's logs
                # went with its teardown); one after the other costs ~12 s and worked
                self._add_kube(platform)
            if openstack:
                self._add_openstack()
        return UpResult(False, time.monotonic() - start, self.inventory_file)

    def _add_kube(self, platform: str) -> None:
        """The Kubernetes tier beside a running process lab; torn down again if it fails."""
        self._state["kube_platform"] = platform
        self._add_tier(self.kube(platform), "kube", self.write_kube_inventory)

    def _add_openstack(self) -> None:
        """OpenStack's services on the running process lab's Galera (after it, as they
        need it), through HAProxy's write endpoint: keystone, then nova and the rest; the
        inventory then names them. A part that fails takes the ones before it down."""
        added: list[Component] = []
        nova = self.nova()
        compute = self.compute()
        try:
            parts: list[Component] = [self.haproxy(), self.keystone(), nova]
            for part in parts:
                # cmp1's own domain is in the way of nova-compute's first start
                with (compute.domain_set_aside(nova.compute_host) if part is nova
                      else contextlib.nullcontext()):
                    self._add_tier(part, "openstack", self.write_inventory)
                added.append(part)
        except BaseException:
            for part in reversed(added):
                part.down(self.daemons(self._state, part.name))
                self._state["daemons"] = [d for d in self._state["daemons"]
                                          if d["component"] != part.name]
            self._state["openstack"] = False
            self._write_state()
            raise

    def _add_tier(self, component: Component, flag: str,
                  write: Callable[[], Path]) -> None:
        """``component`` beside a running process lab, remembered under ``flag`` in the
        state; torn down again if it fails."""
        problems = component.preflight()
        if problems:
            raise LabError(problems[0])
        self._state[flag] = True
        self._write_state()
        try:
            self._up_all([component])
            write()
            self._state["daemons"] = [d for d in self._state["daemons"]
                                      if Daemon.from_json({k: v for k, v in d.items()
                                                           if k != "component"}).alive()]
        except BaseException:
            component.down(self.daemons(self._state, component.name))
            self._state["daemons"] = [d for d in self._state["daemons"]
                                      if d["component"] != component.name]
            self._state[flag] = False
            self._write_state()
            raise
        self._write_state()

    def _up_all(self, components: list[Component]) -> None:
        """Bring ``components`` up at once. Each is waited for ``UP_TIMEOUT`` or the
        longer bound it states (``up_timeout``: the sum of its own bounded waits, e.g.
        the openstack-helm tier's chart timings); one still starting then is reported
        with how its start ended, since leaving the pool waits for it all the same."""
        bounds = {c.name: max(UP_TIMEOUT, float(getattr(c, "up_timeout", UP_TIMEOUT)))
                  for c in components}
        errors, late = [], []
        with ThreadPoolExecutor(max_workers=len(components)) as pool:
            futures = {c.name: pool.submit(c.up, self._register(c.name)) for c in components}
            for name, future in futures.items():
                try:
                    future.result(timeout=bounds[name])
                except HarnessError as exc:
                    errors.append(f"{name}: {exc}")
                except TimeoutError:
                    late.append(name)
        for name in late:
            cause = futures[name].exception()
            errors.append(f"{name}: not up within {bounds[name]:.0f}s"
                          + (f" ({cause})" if cause is not None else
                             " (it came up later; its bound is too short)"))
        if errors:
            raise LabError("; ".join(errors))

    def down(self) -> float:
        start = time.monotonic()
        with self._locked():
            state = self.read_state() or {"daemons": []}
            self._down_all(self.components(), state)
            self._forget_faults()
            self._clear()
        return time.monotonic() - start

    def _forget_faults(self) -> None:
        """Faults still open on this lab went with it: nothing is left to revert, and a
        ledger entry naming a vanished inventory would stop every later run's heal."""
        from chaos.ledger import Ledger

        ledger = Ledger()
        ours = {str(p.resolve()) for p in (self.inventory_file, self.kube_inventory_file)}
        for entry in list(ledger.open_faults()):
            if entry.get("inventory") in ours:
                ledger.clear(entry["id"])

    def _down_all(self, components: list[Component], state: dict[str, Any]) -> None:
        errors = []
        for component in reversed(components):
            try:
                component.down(self.daemons(state, component.name))
            except HarnessError as exc:
                errors.append(f"{component.name}: {exc}")
        left = [d.name for d in self.daemons(state) if d.alive()]
        if left:
            errors.append(f"still running: {', '.join(left)}")
        if errors:
            raise LabError("lab down incomplete: " + "; ".join(errors))

    def _clear(self) -> None:
        """Forget the lab: everything under the root goes, but the lock we hold."""
        for entry in self.root.iterdir():
            if entry.name == ".lock":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def status(self) -> list[Check]:
        state = self.read_state()
        if state is None:
            raise LabError(f"no lab at {self.root}; run 'chaos lab up'")
        checks = []
        if state.get("phase") != "up":
            checks.append(Check("lab", False, "an 'up' never finished; run 'chaos lab down'"))
        dead = [d.name for d in self.daemons(state) if not d.alive()]
        checks.append(Check("processes", not dead,
                            f"dead: {', '.join(dead)}" if dead
                            else f"{len(self.daemons(state))} lab processes alive"))
        with ThreadPoolExecutor(max_workers=4) as pool:
            for found in pool.map(lambda c: c.status(), self.components()):
                checks.extend(found)
        return checks

    # -- what operators and the harness use --------------------------------------------

    def write_inventory(self) -> Path:
        return _write_yaml(self.inventory_file, lab_inventory(self), "# written by 'chaos lab "
                           "up'; the same format a site's inventory uses")

    def write_kube_inventory(self) -> Path:
        return _write_yaml(self.kube_inventory_file, kube_inventory(self),
                           "# written by 'chaos lab up --kube': the lab's services as pods")

    def env(self) -> str:
        """Shell assignments for ``eval "$(chaos lab env)"``."""
        if not self.is_running():
            raise LabError(f"no running lab at {self.root}; run 'chaos lab up'")
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in lab_env(self).items())


def _write_yaml(path: Path, data: dict[str, Any], header: str) -> Path:
    """Replace ``path`` atomically with ``header`` and ``data`` as YAML."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + "\n" + yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)
    return path
