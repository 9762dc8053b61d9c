"""The lab's Kubernetes tier (``chaos lab up --kube``): a real control plane on loopback.

etcd (Debian's etcd-server), kube-apiserver, kube-controller-manager, kube-scheduler and
one kubelet per node, each kubelet on a private dockerd — Kubernetes 1.20.2 built from
Debian's source package by :mod:`chaoslab.kubebuild`. The nodes are the seed's hosts
on addresses of their own (127.0.1.x), so the process lab (127.0.0.x) runs beside it.

What this machine forces, and how it is met (LAB-NOTES has the measurements):

* No CAP_SYS_RESOURCE: a negative ``oom_score_adj`` is refused, and the kubelet gives
  system-critical containers -998. Each node's dockerd runs containers through a runc
  wrapper that clamps the value to 0 in the bundle's config.json. The kubelet and
  dockerd are told not to lower their own scores either.
* No registry: images are ``docker import``\\ ed locally — the pod sandbox from pause.c,
  and a base image of empty directories whose pods mount the host's /usr and /etc
  read-only (``imagePullPolicy: Never``).
* Nothing may leave 127.0.0.0/8: pods use host networking only, every Service is
  headless (no cluster IP is ever allocated), no kube-proxy runs, kubelets do not write
  iptables chains, and the service range the apiserver insists on lies in loopback.
* Several kubelets on one kernel: each has its own root dir, dockershim socket, ports
  on its node address and dockerd (a kubelet garbage-collects every pod container it
  finds on its runtime, so two kubelets must never share one).

The lab authenticates every component with one generated bearer token (mode 600 under
the lab's secrets); kubelets allow the apiserver's exec requests without client
certificates. Acceptable on a single-user lab, never on a site.
"""

from __future__ import annotations

import io
import secrets as _secrets
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaoslab.compute import ComputeHost, ComputeLab
    from chaoslab.galera import GaleraLab
    from chaoslab.podnet import PodNet
    from chaoslab.rabbitmq import RabbitLab

from chaos.errors import LabError, ServiceError
from chaos.wait import wait_for
from chaoslab import kubebuild, kubetopology, procs
from chaoslab.compute import domains
from chaoslab.model import Check, Host, LabSecrets, Register
from chaoslab.procs import Daemon

API_ADDRESS = "127.0.0.30"
API_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
# the apiserver insists on a service range; nothing is ever sent there (headless
# Services only, no kube-proxy), and it lies in loopback all the same
SERVICE_RANGE = "127.0.100.0/24"
PAUSE_IMAGE = "chaos/pause:lab"
BASE_IMAGE = "chaos/base:lab"
EPMD_PORT = 4370  # the kube tier's RabbitMQ nodes' own epmd
UP_TIMEOUT = 180.0
CONTROL_PLANE_UP = 240.0  # etcd, the API server, the node daemons Ready (the seed's shape: all)
# openstack-helm's shape, each StatefulSet or DaemonSet Ready. MariaDB's first start has
# the chart's own race: the leader publishes `live` before its mariadbd is ready, and a
# pod that reads `live` with no ready endpoint takes the full-outage path: 12 fresh
# samples 10 s apart (the leader TTL 120 s / the period), then it joins. Measured: its
# join 154 s after the pods were made, 97 s for the whole tier without the race.
OSH_RABBIT_READY = 150.0
OSH_MARIADB_READY = 360.0
OSH_LIBVIRT_READY = 120.0
OSH_NOVA_READY = 60.0
PLATFORMS = ("seed", "openstack-helm")


@dataclass(frozen=True)
class KubeNode:
    name: str
    address: str
    role: str  # "controller" or "compute"


NODES = [
    KubeNode("ctl1", "127.0.1.11", "controller"),
    KubeNode("ctl2", "127.0.1.12", "controller"),
    KubeNode("ctl3", "127.0.1.13", "controller"),
    KubeNode("cmp1", "127.0.1.21", "compute"),
]

RUNC_CLAMP = """#!/bin/sh
# written by chaoslab.kube: this machine refuses a negative oom_score_adj (no
# CAP_SYS_RESOURCE) and the kubelet asks -998 for system-critical containers.
# Clamp it to 0 in the bundle runc is about to create, then be runc.
prev=
for arg in "$@"; do
  case "$prev" in
    --bundle|-b) sed -i -E 's/"oomScoreAdj":-[0-9]+/"oomScoreAdj":0/' "$arg/config.json" ;;
  esac
  prev=$arg
done
exec runc "$@"
"""


def _tar(files: dict[str, tuple[bytes, int]], folders: list[str],
         links: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def base_rootfs() -> bytes:
    """Empty directories: pods mount the host's /usr and /etc read-only (usr-merged
    Debian: /bin, /sbin and /lib are links into /usr)."""
    # dockershim refuses an image of size 0: one small file makes it a real one
    note = b"chaos lab base image: pods mount the host's /usr and /etc\n"
    folders = ["usr", "etc", "run", "tmp", "proc", "sys", "dev", "root", "var", "var/lib",
               "var/log", "chaos"]
    return _tar({"chaos-image": (note, 0o644)}, folders,
                {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64",
                 "var/run": "../run"})


# The kubelet links every container's log into this fixed directory (1.20 has no flag
# for it; pod logs themselves live in each node's directory, by a lab patch): the one
# trace of the tier outside the lab's root, removed by down
CONTAINER_LOGS = Path("/var/log/containers")


def remove_pod_logs() -> list[str]:
    """The kubelets' links to the lab namespace's container logs; the problems."""
    problems = []
    for link in CONTAINER_LOGS.glob(f"*_{kubetopology.NAMESPACE}_*.log"):
        try:
            link.unlink()
        except OSError as exc:
            problems.append(f"cannot remove {link}: {exc.strerror}")
    return problems


class KubeLab:
    """The control plane and its nodes, as a lab component."""

    name = "kube"

    def __init__(self, root: Path, secrets: LabSecrets, *, cgroup_prefix: str = "chaos-lab",
                 nodes: list[KubeNode] | None = None, platform: str = "seed") -> None:
        if platform not in PLATFORMS:
            raise LabError(f"unknown platform {platform!r} (platforms: {', '.join(PLATFORMS)})")
        self.root = root
        # which topology the tier runs: the seed's (a Deployment per node, host
        # networking) or openstack-helm's (StatefulSets on a pod network; chaoslab.osh)
        self.platform = platform
        self.secrets = secrets
        # cgroup names are machine-wide: each lab root has its own (see Lab.cgroup_prefix)
        self.cgroup_prefix = cgroup_prefix
        self.nodes = nodes or NODES
        self.bin = kubebuild.bin_dir()
        self._daemons: list[Daemon] = []
        self._api: Any = None

    @property
    def controllers(self) -> list[KubeNode]:
        return [n for n in self.nodes if n.role == "controller"]

    def galera(self) -> GaleraLab:
        """The Galera nodes the pods run: the process lab's code, at kube addresses."""
        from chaoslab.galera import GaleraLab

        return GaleraLab(self.root / "galera", [Host(n.name, n.address)
                                                for n in self.controllers], self.secrets)

    def rabbit(self) -> RabbitLab:
        """The RabbitMQ nodes the pods run: the process lab's code at kube addresses,
        with an epmd of their own (another port: the process lab's epmd keeps 4369)."""
        from chaoslab.rabbitmq import RabbitLab

        return RabbitLab(self.root / "rabbitmq", [Host(n.name, n.address)
                                                  for n in self.controllers], self.secrets,
                         epmd_port=EPMD_PORT, partition_handling="pause_minority")

    @property
    def computes(self) -> list[KubeNode]:
        return [n for n in self.nodes if n.role == "compute"]

    def compute(self) -> ComputeLab:
        """libvirt's state directories and config, as the process lab's "right" host
        has them (hostPID, own cgroups), at kube addresses; run by pods here."""
        from chaoslab.compute import ComputeHost, ComputeLab

        return ComputeLab(self.root / "compute",
                          [ComputeHost(n.name, n.address, "right") for n in self.computes],
                          cgroup_prefix=f"{self.cgroup_prefix}-kube-libvirt")

    def dockerd_start_command(self, node: str) -> str:
        from chaoslab.compute import dockerd_start_command

        kube_node = next(n for n in self.nodes if n.name == node)
        return dockerd_start_command(self.dockerd_argv(kube_node), self.node_dir(node) / "x")

    @property
    def scripts(self) -> Path:
        return self.root / "scripts"

    def podnet(self) -> PodNet:
        """The pod network of the openstack-helm shape (its own network namespace)."""
        from chaoslab.podnet import PodNet

        return PodNet(self.root / "podnet", netns=f"{self.cgroup_prefix}-podnet",
                      api_address=API_ADDRESS, api_port=API_PORT)

    @property
    def pod_network(self) -> bool:
        return self.platform == "openstack-helm"

    # -- paths --------------------------------------------------------------------

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def api_cert(self) -> Path:
        return self.pki / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def api_url(self) -> str:
        return f"https://{API_ADDRESS}:{API_PORT}"

    def node_dir(self, node: str) -> Path:
        return self.root / "nodes" / node

    def cgroup_parent(self, node: str) -> str:
        return f"{self.cgroup_prefix}-kube-{node}"

    def docker_socket(self, node: str) -> str:
        return f"unix://{self.node_dir(node) / 'docker.sock'}"

    def dockerd_pidfile(self, node: str) -> Path:
        return self.node_dir(node) / "docker.pid"

    def token(self) -> str:
        """The lab's API token (generated once, mode 600, beside its other secrets)."""
        path = self.token_file
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        value = _secrets.token_urlsafe(24)
        path.write_text(value)  # no newline: clients send a tokenFile's bytes as they are
        return value

    @property
    def token_file(self) -> Path:
        return self.root.parent / "secrets" / "kube-token"

    # -- preflight ----------------------------------------------------------------

    def preflight(self) -> list[str]:
        problems = kubebuild.preflight()
        for binary, package in (("/usr/bin/etcd", "etcd-server"), ("/usr/bin/openssl", "openssl"),
                                ("/usr/sbin/dockerd", "docker.io"), ("/usr/sbin/runc", "runc")):
            if not Path(binary).exists():
                problems.append(f"kube: {binary} missing (install {package})")
        for port in (API_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT):
            if procs.port_in_use(API_ADDRESS, port):
                problems.append(f"kube: {API_ADDRESS}:{port} already in use")
        for node in self.nodes:
            for port in (KUBELET_PORT, KUBELET_HEALTHZ_PORT):
                if procs.port_in_use(node.address, port):
                    problems.append(f"kube: {node.address}:{port} already in use")
        if self.pod_network:
            problems += self.podnet().preflight()
        problems += [f"kube {p}" for p in self.galera().preflight()]
        problems += [f"kube {p}" for p in self.rabbit().preflight()]
        return problems

    # -- up -----------------------------------------------------------------------

    def up(self, register: Register) -> None:
        problems = self.preflight()
        if problems:
            raise LabError(problems[0])
        kubebuild.ensure_binaries()
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        self._start_etcd(register)
        self._start_apiserver(register)
        if self.pod_network:
            from chaoslab import osh

            net = self.podnet()
            net.reserve(osh.address_plan())
            self._daemons += net.up(register)
        for node in self.nodes:
            self._start_dockerd(node, register)
        self._start_controllers(register)
        for node in self.nodes:
            self._wait_docker(node)
            self._import_images(node)
            self._start_kubelet(node, register)
        self._wait_nodes_ready()
        kubetopology.write_scripts(self.scripts)
        kubetopology.create_namespace(self.api())
        if self.platform == "openstack-helm":
            self._deploy_osh()
            return
        self._deploy_rabbitmq(register)  # boots while Galera's pods come up one by one
        self._deploy_compute()
        self._deploy_galera(register)
        self.rabbit().finish_up(self._daemons)
        self._finish_compute()

    def api(self) -> Any:
        """One API client for this component, made on first use (not per poll: each
        would read the kubeconfig and open a connection pool of its own)."""
        if self._api is None:
            from kubernetes import config

            self._api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(self.kubeconfig))
        return self._api

    def _deploy_osh(self) -> None:
        """openstack-helm's shape (chaoslab.osh): its StatefulSets on the pod network,
        the libvirt and nova-compute DaemonSets on the computes."""
        from chaoslab import osh, podnet

        net = self.podnet()
        address = {key.split("/", 1)[1]: net.address(octet)
                   for key, octet in osh.address_plan().items()}
        controllers = [n.name for n in self.controllers]
        volumes = self.root / "volumes"
        s = self.secrets
        from chaoslab.galera import PROVIDER_OPTIONS

        start_script = (Path(__file__).parent / "pods" / "osh_mariadb_start.py").read_text()
        objects = [osh.storage_class(), *osh.rabbitmq_objects(
            nodes=controllers, volumes=volumes, address=address, gateway=podnet.GATEWAY,
            user=s.rabbit_user, password=s.rabbit_password, cookie=s.erlang_cookie),
            *osh.mariadb_objects(
                nodes=controllers, volumes=volumes, address=address, gateway=podnet.GATEWAY,
                start_script=start_script, admin_user=s.db_user, admin_password=s.db_password,
                provider_options="; ".join(PROVIDER_OPTIONS))]
        for obj in objects:
            if obj["kind"] == "PersistentVolume":
                path = Path(obj["spec"]["local"]["path"])
                path.mkdir(parents=True, exist_ok=True)
                if obj["metadata"]["name"].startswith("mysql-data"):
                    # mariadbd drops to the mysql user, as on the process lab
                    shutil.chown(path, "mysql", "mysql")
        osh.apply(self.api(), objects)
        compute = self.compute()
        for h in compute.hosts:
            self._prepare_compute_home(h)
            osh.apply(self.api(), osh.compute_objects(kubetopology.compute_objects(
                h.name, image=BASE_IMAGE, scripts=self.scripts, home=compute.node_home(h.name),
                cgroup=compute.cgroup_name(h.name), uri=compute.libvirt_uri(h.name)), h.name))
        self._wait_statefulset(osh.RABBIT_STS, timeout=OSH_RABBIT_READY)
        self._wait_statefulset(osh.MARIADB_STS, timeout=OSH_MARIADB_READY)
        for h in compute.hosts:
            self._wait_daemonset(f"libvirt-libvirt-{h.name}", timeout=OSH_LIBVIRT_READY)
            compute.start_domains(h.name)
            compute.save_capabilities(h.name)
            self._wait_daemonset(f"nova-compute-{h.name}", timeout=OSH_NOVA_READY)

    @property
    def up_timeout(self) -> float:
        """How long the lab waits for ``up``: the control plane and its nodes, then, for
        openstack-helm's shape, each of its deploy's bounded waits in turn."""
        if self.platform != "openstack-helm":
            return CONTROL_PLANE_UP
        hosts = len(self.computes)
        return (CONTROL_PLANE_UP + OSH_RABBIT_READY + OSH_MARIADB_READY
                + hosts * (OSH_LIBVIRT_READY + OSH_NOVA_READY))

    def _wait_statefulset(self, name: str, *, timeout: float) -> None:
        from kubernetes import client

        apps: Any = client.AppsV1Api(self.api())

        def ready() -> tuple[bool, object]:
            sts = apps.read_namespaced_stateful_set(name, kubetopology.NAMESPACE,
                                                    _request_timeout=5)
            have = int(sts.status.ready_replicas or 0)
            return have >= int(sts.spec.replicas), f"{have}/{sts.spec.replicas} ready"

        self._wait(ready, what=f"statefulset {name} ready", timeout=timeout, interval=2)

    def _deploy_galera(self, register: Register) -> None:
        galera = self.galera()
        galera.prepare(register)
        names = [n.name for n in self.controllers]
        # the first pod bootstraps the cluster from the template's state, once
        (galera.node_dir(names[0]) / "bootstrap-once").touch()
        objects = kubetopology.galera_objects(
            names, image=BASE_IMAGE, scripts=self.scripts,
            node_dir={n: galera.node_dir(n) for n in names},
            config={n: galera.config_file(n) for n in names},
            pidfile={n: galera.pid_file(n) for n in names},
            log={n: galera.log_file(n) for n in names},
            socket={n: galera.socket_path(n) for n in names})
        # one node at a time, as the process lab does: a joiner that finds nobody gives
        # up, and two joiners arriving together churn through non-Primary views
        for name in names:
            kubetopology.apply(self.api(), [o for o in objects
                                            if o["metadata"]["name"] == f"galera-{name}"])
            self._wait_deployment(f"galera-{name}", timeout=120)
        kubetopology.apply(self.api(), [o for o in objects if o["metadata"]["name"] == "galera"])
        galera.create_account(names[0])
        for check in galera.status():
            if not check.ok:
                raise LabError(f"kube {check.component} unhealthy after up: {check.detail}")

    def _deploy_rabbitmq(self, register: Register) -> None:
        rabbit = self.rabbit()
        rabbit.prepare()
        names = [n.name for n in self.controllers]
        for name in names:
            rabbit.write_node_env(name)
        # a host daemon, as epmd is one per host: the nodes register with it
        self._daemons.append(rabbit.start_epmd(register, name="kube-epmd"))
        objects = kubetopology.rabbitmq_objects(
            names, image=BASE_IMAGE, scripts=self.scripts, root=rabbit.root,
            start={n: rabbit.start_command(n) for n in names},
            pidfile={n: rabbit.pidfile(n) for n in names},
            log={n: rabbit.log_file(n).parent / "server.out" for n in names},
            amqp_port=rabbit.amqp_port)
        # classic_config peer discovery forms the cluster at boot: the seed first, the
        # joiners once it has booted (see RabbitLab.wait_seed_booted)
        seed = [o for o in objects if o["metadata"]["name"] == f"rabbitmq-{names[0]}"]
        kubetopology.apply(self.api(), seed)
        rabbit.wait_seed_booted(self._daemons)
        kubetopology.apply(self.api(), [o for o in objects if o not in seed])

    def _deploy_compute(self) -> None:
        compute = self.compute()
        for h in compute.hosts:
            home = compute.node_home(h.name)
            self._prepare_compute_home(h)
            kubetopology.apply(self.api(), kubetopology.compute_objects(
                h.name, image=BASE_IMAGE, scripts=self.scripts, home=home,
                cgroup=compute.cgroup_name(h.name), uri=compute.libvirt_uri(h.name)))

    def _prepare_compute_home(self, h: ComputeHost) -> None:
        compute = self.compute()
        home = compute.node_home(h.name)
        for sub in ("etc", "run", "lib", "cache", "tmp", "bin", "log/libvirt"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        compute.write_config(h)
        compute.ensure_cgroups(h.name)
        compute.seed_capabilities(h.name)

    def _finish_compute(self) -> None:
        """libvirt answers, its VM runs (what nova would have started), nova's
        stand-in holds its connection."""
        compute = self.compute()
        for h in compute.hosts:
            self._wait_daemonset(f"libvirt-{h.name}", timeout=120)
            compute.start_domains(h.name)
            compute.save_capabilities(h.name)
            self._wait_daemonset(f"nova-compute-{h.name}", timeout=60)

    def _wait_daemonset(self, name: str, *, timeout: float) -> None:
        from kubernetes import client

        apps: Any = client.AppsV1Api(self.api())

        def ready() -> tuple[bool, object]:
            ds = apps.read_namespaced_daemon_set(name, kubetopology.NAMESPACE,
                                                 _request_timeout=5)
            want = int(ds.status.desired_number_scheduled or 0)
            have = int(ds.status.number_ready or 0)
            return want > 0 and have >= want, f"{have}/{want} ready"

        self._wait(ready, what=f"daemonset {name} ready", timeout=timeout)

    def deployment_states(self) -> dict[str, tuple[int, int]]:
        from kubernetes import client

        apps: Any = client.AppsV1Api(self.api())
        listed = apps.list_namespaced_deployment(
            kubetopology.NAMESPACE, _request_timeout=5)
        return {d.metadata.name: (int(d.status.available_replicas or 0), int(d.spec.replicas))
                for d in listed.items}

    def statefulset_states(self) -> dict[str, tuple[int, int]]:
        from kubernetes import client

        apps: Any = client.AppsV1Api(self.api())
        listed = apps.list_namespaced_stateful_set(kubetopology.NAMESPACE, _request_timeout=5)
        return {s.metadata.name: (int(s.status.ready_replicas or 0), int(s.spec.replicas))
                for s in listed.items}

    def _wait_deployment(self, name: str, *, timeout: float) -> None:
        def available() -> tuple[bool, object]:
            ready, want = self.deployment_states().get(name, (0, 1))
            return ready >= want, f"{ready}/{want} available"

        self._wait(available, what=f"deployment {name} available", timeout=timeout)

    def _write_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        self.pki.chmod(0o700)
        token = self.token()
        tokens = self.pki / "tokens.csv"
        tokens.touch(mode=0o600)
        tokens.write_text(f'{token},chaos-lab,chaos-lab,"system:masters"\n')
        key = self.pki / "sa.key"
        if not key.exists():
            procs.run(["openssl", "genrsa", "-out", str(key), "2048"], timeout=30)
            procs.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out",
                       str(self.pki / "sa.pub")], timeout=30)
        if not self.api_cert.exists():
            # the apiserver's serving certificate, self-signed: clients verify it
            procs.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                       "-keyout", str(self.pki / "apiserver.key"), "-out", str(self.api_cert),
                       "-days", "3650", "-subj", "/CN=chaos-lab-apiserver",
                       "-addext", f"subjectAltName={self._api_names()}"], timeout=30)
        self.kubeconfig.touch(mode=0o600)
        self.kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: chaos-lab
  cluster:
    server: {self.api_url}
    certificate-authority: {self.api_cert}
users:
- name: chaos-lab
  user:
    tokenFile: {self.token_file}
contexts:
- name: chaos-lab
  context: {{cluster: chaos-lab, user: chaos-lab}}
current-context: chaos-lab
""")

    def _api_names(self) -> str:
        """The API server's names: its address, and for pods on the pod network the
        relay at the network's gateway and the in-cluster names of the API."""
        from chaoslab import osh, podnet

        names = [f"IP:{API_ADDRESS}", f"IP:{podnet.GATEWAY}"]
        return ",".join(names + [f"DNS:{n}" for n in osh.API_HOST_NAMES])

    def _spawn(self, register: Register, name: str, argv: list[str], *,
               pidfile: Path | None = None, env: dict[str, str] | None = None) -> Daemon:
        daemon = procs.spawn(name, argv, log=self.root / "log" / f"{name}.log", pidfile=pidfile,
                             env=env)
        register(daemon)
        self._daemons.append(daemon)
        return daemon

    def _dead(self) -> str | None:
        for daemon in self._daemons:
            if not daemon.alive():
                lines = Path(daemon.log).read_text(errors="replace").strip().splitlines()
                return f"kube: {daemon.name} exited: {lines[-1] if lines else '(no log)'}"
        return None

    def _wait(self, check: Callable[[], tuple[bool, object]], *, what: str, timeout: float,
              interval: float = 0.5) -> None:
        """wait_for, but a daemon of ours that exited ends the wait at once, with its
        last log line (an exception in ``check`` is only an observation to wait_for)."""
        def poll() -> tuple[bool, object]:
            dead = self._dead()
            return (True, dead) if dead else check()

        wait_for(poll, what=what, timeout=timeout, interval=interval, progress=False)
        dead = self._dead()
        if dead:
            raise LabError(dead)

    def _start_etcd(self, register: Register) -> None:
        client = f"http://{API_ADDRESS}:{ETCD_CLIENT_PORT}"
        peer = f"http://{API_ADDRESS}:{ETCD_PEER_PORT}"
        self._spawn(register, "kube-etcd", [
            "/usr/bin/etcd", "--name", "chaos-lab", "--data-dir", str(self.root / "etcd"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"chaos-lab={peer}", "--log-level", "warn",
        ])  # fmt: skip
        self._wait_port(API_ADDRESS, ETCD_CLIENT_PORT, "etcd", timeout=30)

    def _start_apiserver(self, register: Register) -> None:
        self._spawn(register, "kube-apiserver", [
            str(self.bin / "kube-apiserver"),
            "--etcd-servers", f"http://{API_ADDRESS}:{ETCD_CLIENT_PORT}",
            "--bind-address", API_ADDRESS, "--advertise-address", API_ADDRESS,
            "--secure-port", str(API_PORT), "--insecure-port", "0",
            "--cert-dir", str(self.pki),
            "--tls-cert-file", str(self.api_cert),
            "--tls-private-key-file", str(self.pki / "apiserver.key"),
            "--token-auth-file", str(self.pki / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-key-file", str(self.pki / "sa.pub"),
            "--service-account-signing-key-file", str(self.pki / "sa.key"),
            "--service-account-issuer", self.api_url,
            "--service-cluster-ip-range", SERVICE_RANGE,
            "--allow-privileged=true",
            "--kubelet-preferred-address-types", "InternalIP",
            "--endpoint-reconciler-type", "none",
            "--v", "1",
        ])  # fmt: skip
        self._wait_api(timeout=90)

    def _start_controllers(self, register: Register) -> None:
        common = ["--kubeconfig", str(self.kubeconfig), "--leader-elect=false",
                  "--port", "0", "--bind-address", API_ADDRESS, "--v", "1"]
        self._spawn(register, "kube-controller-manager", [
            str(self.bin / "kube-controller-manager"), *common, "--secure-port", "10257",
            "--service-account-private-key-file", str(self.pki / "sa.key"),
            # service account tokens carry the API's CA (pods of the openstack-helm shape)
            "--root-ca-file", str(self.api_cert),
            "--use-service-account-credentials=false", "--allocate-node-cidrs=false",
            # a quiet single-machine lab: notice a dead node in 20 s, not 40 s
            "--node-monitor-grace-period", "20s", "--pod-eviction-timeout", "30s",
        ])  # fmt: skip
        self._spawn(register, "kube-scheduler", [
            str(self.bin / "kube-scheduler"), *common, "--secure-port", "10259",
        ])

    def dockerd_argv(self, node: KubeNode) -> list[str]:
        home = self.node_dir(node.name)
        return [
            "/usr/sbin/dockerd", "--host", self.docker_socket(node.name),
            "--data-root", str(home / "d"), "--exec-root", str(home / "x"),
            "--pidfile", str(self.dockerd_pidfile(node.name)),
            "--config-file", str(home / "daemon.json"),
            "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
            "--storage-driver=vfs", "--cgroup-parent", self.cgroup_parent(node.name),
            "--add-runtime", f"chaos-runc={self.root / 'bin' / 'runc-clamp'}",
            "--default-runtime", "chaos-runc",
            "--oom-score-adjust", "0", "--shutdown-timeout", "2", "--log-level", "warn",
        ]  # fmt: skip

    def _start_dockerd(self, node: KubeNode, register: Register) -> None:
        home = self.node_dir(node.name)
        home.mkdir(parents=True, exist_ok=True)
        (home / "daemon.json").write_text("{}\n")
        wrapper = self.root / "bin" / "runc-clamp"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(RUNC_CLAMP)
        wrapper.chmod(0o755)
        self._spawn(register, f"kube-dockerd-{node.name}", self.dockerd_argv(node),
                    pidfile=self.dockerd_pidfile(node.name))

    def docker(self, node: str, *args: str, timeout: float = 30.0,
               check: bool = True) -> CompletedProcess[str]:
        return procs.run(["docker", "--host", self.docker_socket(node), *args],
                         timeout=timeout, check=check)

    def _wait_docker(self, node: KubeNode) -> None:
        def answers() -> tuple[bool, object]:
            result = self.docker(node.name, "version", "--format", "{{.Server.Version}}",
                                 timeout=5, check=False)
            return result.returncode == 0, (result.stdout or result.stderr).strip()

        self._wait(answers, what=f"dockerd of {node.name}", timeout=60, interval=0.3)

    def _import_images(self, node: KubeNode) -> None:
        images = self.root / "images"
        images.mkdir(exist_ok=True)
        pause_tar = images / "pause.tar"
        if not pause_tar.exists():
            pause = (self.bin / "pause").read_bytes()
            pause_tar.write_bytes(_tar({"pause": (pause, 0o755)}, [], {}))
            (images / "base.tar").write_bytes(base_rootfs())
        self.docker(node.name, "image", "import", "--change", 'ENTRYPOINT ["/pause"]',
                    str(pause_tar), PAUSE_IMAGE)
        self.docker(node.name, "image", "import", str(images / "base.tar"), BASE_IMAGE)

    def kubelet_argv(self, node: KubeNode) -> list[str]:
        home = self.node_dir(node.name)
        shim = f"unix://{home / 'dockershim.sock'}"
        return [
            str(self.bin / "kubelet"),
            "--kubeconfig", str(self.kubeconfig),
            "--hostname-override", node.name, "--node-ip", node.address,
            "--address", node.address, "--port", str(KUBELET_PORT), "--read-only-port", "0",
            "--healthz-bind-address", node.address, "--healthz-port", str(KUBELET_HEALTHZ_PORT),
            "--root-dir", str(home / "kubelet"), "--cert-dir", str(home / "pki"),
            "--container-runtime", "docker", "--docker-endpoint", self.docker_socket(node.name),
            "--container-runtime-endpoint", shim, "--image-service-endpoint", shim,
            "--experimental-dockershim-root-directory", str(home / "dockershim"),
            "--pod-infra-container-image", PAUSE_IMAGE,
            "--node-labels", self._node_labels(node),
            "--cgroup-driver", "cgroupfs", "--cgroups-per-qos=false",
            "--enforce-node-allocatable=", "--eviction-hard=", "--fail-swap-on=false",
            "--image-gc-high-threshold", "100", "--image-gc-low-threshold", "99",
            "--oom-score-adj", "0", "--make-iptables-util-chains=false",
            "--hairpin-mode", "none", "--volume-plugin-dir", str(home / "volume-plugins"),
            "--anonymous-auth=true", "--authorization-mode", "AlwaysAllow",
            "--node-status-update-frequency", "4s", "--sync-frequency", "10s",
            "--v", "1",
            *(self.podnet().kubelet_args() if self.pod_network else []),
        ]  # fmt: skip

    def _node_labels(self, node: KubeNode) -> str:
        """The lab's role label, and the charts' node selector labels."""
        chart = ("openstack-control-plane=enabled" if node.role == "controller"
                 else "openstack-compute-node=enabled")
        return f"chaos.lab/role={node.role},{chart}"

    def pod_logs(self, node: str) -> Path:
        """This kubelet's pod log directory (a lab patch; /var/log/pods otherwise)."""
        return self.node_dir(node) / "pod-logs"

    def _start_kubelet(self, node: KubeNode, register: Register) -> None:
        self.pod_logs(node.name).mkdir(parents=True, exist_ok=True)
        self._spawn(register, f"kubelet-{node.name}", self.kubelet_argv(node),
                    env={"CHAOS_KUBELET_POD_LOGS": str(self.pod_logs(node.name))})

    # -- waits --------------------------------------------------------------------

    def _wait_port(self, address: str, port: int, what: str, *, timeout: float) -> None:
        self._wait(lambda: (procs.port_open(address, port, timeout=0.3), "not listening"),
                   what=f"{what} on {address}:{port}", timeout=timeout, interval=0.2)

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api())

    def _wait_api(self, *, timeout: float) -> None:
        def ready() -> tuple[bool, str]:
            self.core().list_namespace(_request_timeout=3)
            return True, "answers"

        self._wait(ready, what=f"kube-apiserver at {self.api_url}", timeout=timeout)

    def node_states(self) -> dict[str, str]:
        """Node name -> "Ready", "NotReady" or "Unknown" (unschedulable marked)."""
        found = {}
        for item in self.core().list_node(_request_timeout=5).items:
            ready = next((c.status for c in item.status.conditions or []
                          if c.type == "Ready"), "Unknown")
            state = {"True": "Ready", "False": "NotReady"}.get(ready, "Unknown")
            if item.spec.unschedulable:
                state += ",SchedulingDisabled"
            found[item.metadata.name] = state
        return found

    def _wait_nodes_ready(self) -> None:
        want = {n.name for n in self.nodes}

        def ready() -> tuple[bool, object]:
            states = self.node_states()
            return all(states.get(n) == "Ready" for n in want), states

        self._wait(ready, what="every kube node Ready", timeout=UP_TIMEOUT, interval=1)

    # -- status / down ------------------------------------------------------------

    def status(self) -> list[Check]:
        try:
            states = self.node_states()
        except Exception as exc:
            return [Check("kube/apiserver", False, f"{type(exc).__name__}: {exc}"[:200])]
        checks = [Check("kube/apiserver", True, f"{self.api_url} answers")]
        for node in self.nodes:
            state = states.get(node.name, "absent")
            checks.append(Check(f"kube/node/{node.name}", state == "Ready", state))
        deployments = self.deployment_states()
        for name, (ready, want) in sorted(deployments.items()):
            checks.append(Check(f"kube/deployment/{name}", ready >= want,
                                f"{ready}/{want} available"))
        if self.platform == "openstack-helm":
            for name, (ready, want) in sorted(self.statefulset_states().items()):
                checks.append(Check(f"kube/statefulset/{name}", ready >= want,
                                    f"{ready}/{want} ready"))
        else:
            checks += [Check(f"kube/{c.component}", c.ok, c.detail)
                       for c in [*self.galera().status(), *self.rabbit().status()]]
        compute = self.compute()
        for h in compute.hosts:
            try:
                found = domains(compute.libvirt_uri(h.name), timeout=3)
                running = [d for d in found if d.state == "running" and d.qemu_pid]
                checks.append(Check(f"kube/libvirt/{h.name}", bool(running),
                                    ", ".join(f"{d.name} {d.state} qemu {d.qemu_pid}"
                                              for d in found) or "no domain"))
            except (LabError, ServiceError) as exc:
                checks.append(Check(f"kube/libvirt/{h.name}", False, str(exc)[:200]))
        return checks

    def down(self, daemons: list[Daemon]) -> None:
        # kubelets first, so nothing restarts the containers taken away next
        order = sorted(daemons, key=lambda d: (not d.name.startswith("kubelet"),
                                               d.name.startswith("kube-dockerd"),
                                               d.name == "kube-etcd"))
        for daemon in order:
            if daemon.name.startswith("kube-dockerd"):
                node = daemon.name.removeprefix("kube-dockerd-")
                self._remove_containers(node)
            left = procs.stop(daemon.pids(), timeout=15)
            if left:
                raise LabError(f"{daemon.name} did not stop (pids {left})")
        # a mariadbd a fault's revert or a recovery started in a pod dies with the
        # container; one started anywhere else from this root would not
        strays = self.galera().stray_pids()
        if procs.stop(strays, timeout=5):
            raise LabError(f"kube galera: processes {strays} survived SIGKILL")
        from chaoslab.compute import cgroup_hierarchies, remove_cgroup_tree, unmount_under

        # libvirtd and its qemu left the containers' cgroups on purpose: removing the
        # containers did not stop them
        compute = self.compute()
        left = procs.stop(compute.lab_pids(), timeout=5)
        problems = [f"libvirt processes {left} survived SIGKILL"] if left else []
        problems += unmount_under(self.root)
        problems += remove_pod_logs()
        problems += self.podnet().down()
        for hierarchy in cgroup_hierarchies():
            for kube_node in self.nodes:
                problems += remove_cgroup_tree(hierarchy / self.cgroup_parent(kube_node.name))
            for h in compute.hosts:
                problems += remove_cgroup_tree(hierarchy / compute.cgroup_name(h.name))
        if problems:
            raise LabError("kube: " + "; ".join(problems[:3]))

    def _remove_containers(self, node: str) -> None:
        listed = self.docker(node, "ps", "-aq", timeout=15, check=False)
        ids = listed.stdout.split() if listed.returncode == 0 else []
        if ids:
            self.docker(node, "rm", "-f", *ids, timeout=60, check=False)
