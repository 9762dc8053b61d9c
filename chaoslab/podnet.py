"""The Kubernetes tier's pod network: a bridge inside a network namespace the lab creates.

Real sites run Galera and RabbitMQ pods on a pod network (each pod its own network
namespace and address; peers reach each other by the discovery names), so a partition
must cut pod traffic, not a host's. Nothing here may use an address outside
127.0.0.0/8 except inside namespaces the lab creates, so:

* ``chaos-…-podnet`` is a network namespace of the lab's own, holding the bridge
  ``cbr0`` (``GATEWAY``/24). No address of the pod network exists in the host's
  namespace, and the host has no route to it.
* The kubelets use CNI (dockershim ``--network-plugin=cni``) with a plugin of the lab's
  own, ``chaos-podnet`` (:data:`PLUGIN`, stdlib Python): for each pod sandbox it
  creates a veth pair whose pod end is the pod's ``eth0`` and whose other end joins the
  bridge in the lab's namespace. (No packaged plugin puts its bridge anywhere but the
  namespace the kubelet runs in.) Addresses are stable per pod name — a StatefulSet's
  ``mariadb-server-0`` keeps its address across restarts — which lets the pods'
  ``hostAliases`` stand in for cluster DNS (no DNS server runs in the lab).
* Pods reach the API server (the MariaDB start script keeps its state ConfigMap,
  RabbitMQ's Kubernetes peer discovery lists endpoints) at ``GATEWAY:6443``: a socat in
  the lab's namespace hands each connection, through a unix socket, to a socat in the
  host's that connects to the API server — the lab's ``kubernetes`` Service, without a
  virtual IP.
* The harness reaches pod ports as an operator without a route does: ``kubectl
  port-forward``'s way, through the API (inventory ``reach: port-forward``).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from chaos.errors import LabError
from chaoslab import procs
from chaoslab.model import Register
from chaoslab.procs import Daemon

SUBNET = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
BRIDGE = "cbr0"
API_RELAY_PORT = 443  # the in-cluster API port (KUBERNETES_SERVICE_PORT)
FIRST_DYNAMIC = 100  # addresses below are given out by name (see ``reserve``)

PLUGIN = r'''#!/usr/bin/python3
"""chaos-podnet: the lab's CNI plugin (written by chaoslab.podnet).

ADD: a veth pair, the pod's end as eth0 with the address its pod name owns, the other
end on the bridge in the lab's network namespace; DEL: the pair goes. Addresses are
stable per namespace/pod name (a file, under a lock). CNI spec 0.4.0."""
import fcntl, json, os, subprocess, sys, hashlib


def ip(*args, netns=None):
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(" ".join(cmd) + ": " + done.stderr.strip())


def in_pod(netns_path, *args):
    cmd = ["nsenter", "--net=" + netns_path, "ip"] + list(args)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(" ".join(cmd) + ": " + done.stderr.strip())


def fail(code, msg, version):
    print(json.dumps({"cniVersion": version, "code": code, "msg": msg}))
    sys.exit(1)


def address_for(conf, key):
    state = conf["state"]
    with open(state + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(state) as f:
                table = json.load(f)
        except FileNotFoundError:
            table = {}
        if key not in table:
            used = set(table.values())
            prefix = conf["subnet"].rsplit(".", 1)[0]
            free = [n for n in range(conf["first_dynamic"], 255) if n not in used]
            if not free:
                raise RuntimeError("pod network full")
            table[key] = free[0]
            tmp = state + ".tmp"
            with open(tmp, "w") as f:
                json.dump(table, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, state)
        return conf["subnet"].rsplit(".", 1)[0] + "." + str(table[key])


def main():
    conf = json.load(sys.stdin)
    version = conf.get("cniVersion", "0.4.0")
    command = os.environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        print(json.dumps({"cniVersion": version,
                          "supportedVersions": ["0.3.0", "0.3.1", "0.4.0"]}))
        return
    container = os.environ.get("CNI_CONTAINERID", "")
    peer = "v" + hashlib.sha1(container.encode()).hexdigest()[:12]
    if conf["type"] == "loopback":
        if command == "ADD":
            in_pod(os.environ["CNI_NETNS"], "link", "set", "lo", "up")
            print(json.dumps({"cniVersion": version, "interfaces": [
                {"name": "lo", "sandbox": os.environ["CNI_NETNS"]}], "ips": [
                {"version": "4", "address": "127.0.0.1/8", "interface": 0}]}))
        return
    if command == "DEL":
        try:
            ip("link", "del", peer, netns=conf["netns"])
        except RuntimeError:
            pass  # gone already: DEL is idempotent
        return
    if command == "CHECK":
        return
    if command != "ADD":
        fail(4, "unknown CNI_COMMAND " + command, version)
    args = dict(kv.split("=", 1) for kv in os.environ.get("CNI_ARGS", "").split(";") if "=" in kv)
    key = args.get("K8S_POD_NAMESPACE", "") + "/" + args.get("K8S_POD_NAME", container)
    netns_path = os.environ["CNI_NETNS"]
    ifname = os.environ.get("CNI_IFNAME", "eth0")
    try:
        address = address_for(conf, key)
        prefix = conf["subnet"].split("/")[1]
        try:
            ip("link", "del", peer, netns=conf["netns"])  # a retried ADD
        except RuntimeError:
            pass
        in_pod(netns_path, "link", "add", ifname, "type", "veth", "peer", "name", peer,
               "netns", conf["netns"])
        ip("link", "set", peer, "master", conf["bridge"], "up", netns=conf["netns"])
        in_pod(netns_path, "addr", "add", address + "/" + prefix, "dev", ifname)
        in_pod(netns_path, "link", "set", ifname, "up")
        in_pod(netns_path, "link", "set", "lo", "up")
        in_pod(netns_path, "route", "add", "default", "via", conf["gateway"])
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        fail(11, str(exc), version)
    print(json.dumps({"cniVersion": version,
                      "interfaces": [{"name": ifname, "sandbox": netns_path}],
                      "ips": [{"version": "4", "address": address + "/" + prefix,
                               "gateway": conf["gateway"], "interface": 0}],
                      "dns": {}}))


main()
'''


class PodNet:
    """The lab's pod network: its namespace, bridge, CNI files and API relay."""

    def __init__(self, root: Path, *, netns: str, api_address: str, api_port: int) -> None:
        self.root = root
        self.netns = netns
        self.api_address = api_address
        self.api_port = api_port

    @property
    def cni_bin(self) -> Path:
        return self.root / "cni-bin"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni-conf"

    @property
    def state(self) -> Path:
        """Pod name → the last octet of its address."""
        return self.root / "addresses.json"

    @property
    def relay_socket(self) -> Path:
        return self.root / "api.sock"

    def preflight(self) -> list[str]:
        problems = []
        for binary in ("/usr/bin/socat", "/usr/bin/nsenter", "/usr/sbin/ip"):
            if not Path(binary).exists():
                problems.append(f"podnet: {binary} missing")
        if Path(f"/run/netns/{self.netns}").exists():
            problems.append(f"podnet: network namespace {self.netns} exists already "
                            "(a lab not taken down?)")
        return problems

    def reserve(self, names: dict[str, int]) -> None:
        """Give pods (``namespace/name``) their addresses before they exist: the last
        octet, below FIRST_DYNAMIC. The pods' hostAliases name them."""
        self.root.mkdir(parents=True, exist_ok=True)
        table = json.loads(self.state.read_text()) if self.state.exists() else {}
        for key, octet in names.items():
            if not 1 < octet < FIRST_DYNAMIC:
                raise LabError(f"podnet: {key}: octet {octet} not in 2..{FIRST_DYNAMIC - 1}")
            table[key] = octet
        self.state.write_text(json.dumps(table, indent=1, sort_keys=True))

    @staticmethod
    def address(octet: int) -> str:
        return str(ipaddress.ip_network(SUBNET)[octet])

    def up(self, register: Register) -> list[Daemon]:
        """The namespace with its bridge, the plugin and its config, the API relay."""
        self.root.mkdir(parents=True, exist_ok=True)
        procs.run(["ip", "netns", "add", self.netns], timeout=10)
        prefix = SUBNET.split("/")[1]
        for args in (["link", "add", BRIDGE, "type", "bridge"],
                     ["addr", "add", f"{GATEWAY}/{prefix}", "dev", BRIDGE],
                     ["link", "set", BRIDGE, "up"], ["link", "set", "lo", "up"]):
            procs.run(["ip", "-n", self.netns, *args], timeout=10)
        self.cni_bin.mkdir(exist_ok=True)
        self.cni_conf.mkdir(exist_ok=True)
        for name in ("chaos-podnet", "loopback"):
            path = self.cni_bin / name
            path.write_text(PLUGIN)
            path.chmod(0o755)
        (self.cni_conf / "10-chaos-podnet.conf").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "chaos-podnet", "type": "chaos-podnet",
            "netns": self.netns, "bridge": BRIDGE, "subnet": SUBNET, "gateway": GATEWAY,
            "first_dynamic": FIRST_DYNAMIC, "state": str(self.state)}, indent=1))
        daemons = []
        log = self.root / "log"
        log.mkdir(exist_ok=True)
        self.relay_socket.unlink(missing_ok=True)
        host_side = procs.spawn("podnet-api-host", [
            "socat", f"UNIX-LISTEN:{self.relay_socket},fork,mode=600",
            f"TCP:{self.api_address}:{self.api_port},connect-timeout=5"],
            log=log / "api-host.log")
        register(host_side)
        daemons.append(host_side)
        pod_side = procs.spawn("podnet-api-pods", [
            "ip", "netns", "exec", self.netns, "socat",
            f"TCP-LISTEN:{API_RELAY_PORT},bind={GATEWAY},fork,reuseaddr",
            f"UNIX-CONNECT:{self.relay_socket}"], log=log / "api-pods.log")
        register(pod_side)
        daemons.append(pod_side)
        return daemons

    def kubelet_args(self) -> list[str]:
        return ["--network-plugin", "cni", "--cni-bin-dir", str(self.cni_bin),
                "--cni-conf-dir", str(self.cni_conf)]

    def exists(self) -> bool:
        return Path(f"/run/netns/{self.netns}").exists()

    def down(self) -> list[str]:
        """The namespace goes, and the bridge and every pod's far end with it."""
        if not self.exists():
            return []
        done = procs.run(["ip", "netns", "delete", self.netns], timeout=10, check=False)
        return [] if done.returncode == 0 else [
            f"podnet: cannot delete {self.netns}: {done.stderr.strip()}"]
