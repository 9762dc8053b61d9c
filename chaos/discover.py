"""``chaos inventory discover``: a site inventory from what a Kubernetes cluster runs.

Two parts. ``classify`` is pure: a ``Snapshot`` of listed objects (the API's own JSON,
as dicts) in, a ``Discovery`` out — the inventory as a dict and the findings: what was
recognised, what looked like a database, a broker or libvirt but matched no known
pattern (and why), what the operator still has to give. ``snapshot`` and ``discover``
are the thin part: they list the objects through the official client, every call with a
request timeout, and only get and list (never create, patch, delete; never a Secret).

Patterns recognised (the facts each rests on are in docs/DESIGN.md):
- openstack-helm: StatefulSets labelled ``application=mariadb|rabbitmq,
  component=server``, the libvirt DaemonSet ``application=libvirt,component=libvirt``;
  the clusters are recovered by the platform (``clusters:``), MariaDB's state ConfigMap
  found by its ``openstackhelm.openstack.org/cluster.state`` annotation;
- mariadb-operator (``app.kubernetes.io/name=mariadb``, ``app.kubernetes.io/instance``
  = the StatefulSet's name) and the RabbitMQ cluster operator
  (``app.kubernetes.io/component=rabbitmq, app.kubernetes.io/part-of=rabbitmq``): also
  recovered by their platform;
- the seed's: one Deployment per node labelled ``app=galera|rabbitmq, node=<node>``,
  pinned by nodeSelector, host networking, a supervisor as PID 1
  (``supervise PIDFILE LOG START...``) whose arguments give the process verbs; recovered
  by the harness.

Secrets are never read: credentials are written as references (``{env: VAR}``) and the
findings say which variables to set and where the cluster keeps each value.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from chaos.errors import ConfigError, EnvironmentProblem

Obj = dict[str, Any]

STATE_ANNOTATION = "openstackhelm.openstack.org/cluster.state"
REQUEST_TIMEOUT = 10.0
# the variables the written credentials name
DB_PASSWORD_VAR = "CHAOS_DB_PASSWORD"
RABBITMQ_PASSWORD_VAR = "CHAOS_RABBITMQ_PASSWORD"
ERLANG_COOKIE_VAR = "CHAOS_ERLANG_COOKIE"
# the faults that act on a service's process (pidfile + start) and refuse without them
PROCESS_FAULTS = "kill, stop, freeze, wipe, fill-disk, power-off"
# what a host without access refuses (the faults and probes that need its own shell)
HOST_NEEDS = ("partition (iptables on the host), libvirt's kill, freeze and kill-container, "
              "the VM survival check (qemu pids read on the compute host) and libvirt "
              "recovery")
# words that make an object look like one of the services discover knows
LOOKS_LIKE = {
    "a database": ("mariadb", "mysql", "galera", "percona", "pxc"),
    "a message broker": ("rabbitmq",),
    "libvirt": ("libvirt",),
}
# env variables whose values are never read, whatever they hold
SECRETISH = re.compile(r"PASS|COOKIE|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)


@dataclass(frozen=True)
class Snapshot:
    """The objects listed from a cluster (the API's JSON as dicts, camelCase keys)."""

    nodes: list[Obj] = field(default_factory=list)
    pods: list[Obj] = field(default_factory=list)
    statefulsets: list[Obj] = field(default_factory=list)
    deployments: list[Obj] = field(default_factory=list)
    daemonsets: list[Obj] = field(default_factory=list)
    services: list[Obj] = field(default_factory=list)
    configmaps: list[Obj] = field(default_factory=list)
    # what could not be listed, and why (a forbidden list the rest can do without)
    gaps: list[str] = field(default_factory=list)


Verdict = Literal["found", "not classified", "ignored", "note", "set"]


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    subject: str
    why: str

    def line(self) -> str:
        return f"{self.verdict}: {self.subject}: {self.why}"


@dataclass(frozen=True)
class Options:
    """What the caller says of the site, beside what the cluster shows."""

    kubeconfig: str
    context: str | None = None
    # "local": every node is this machine (the lab)
    access: Literal["local"] | None = None
    name: str = "discovered"
    db_user: str | None = None
    rabbitmq_user: str | None = None
    # reads a file of this machine (None: unreadable); given only with access local,
    # where a node's files are this machine's: the seed's config and env files
    read_local: Callable[[str], str | None] | None = None


@dataclass
class Discovery:
    inventory: Obj | None
    findings: list[Finding]

    def lines(self) -> list[str]:
        """Each finding, what was found first and what to set last."""
        order = {"found": 0, "not classified": 1, "ignored": 2, "note": 3, "set": 4}
        return [f.line() for f in sorted(self.findings, key=lambda f: order[f.verdict])]


# -- reading objects -------------------------------------------------------------------


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj.get("metadata") or {}
    return meta


def _name(obj: Obj) -> str:
    return str(_meta(obj).get("name", "?"))


def _ns(obj: Obj) -> str:
    return str(_meta(obj).get("namespace") or "default")


def _labels(obj: Obj) -> dict[str, str]:
    return dict(_meta(obj).get("labels") or {})


def _ref(kind: str, obj: Obj) -> str:
    return f"{kind} {_ns(obj)}/{_name(obj)}"


def _template(workload: Obj) -> Obj:
    template: Obj = (workload.get("spec") or {}).get("template") or {}
    return template


def _pod_spec(obj: Obj) -> Obj:
    """A pod's spec, or a workload's pod template spec."""
    if "template" in (obj.get("spec") or {}):
        spec: Obj = _template(obj).get("spec") or {}
        return spec
    own: Obj = obj.get("spec") or {}
    return own


def _all_labels(workload: Obj) -> dict[str, str]:
    """The workload's labels and its pod template's (charts label both, not always alike)."""
    return {**_labels(_template(workload)), **_labels(workload)}


def _has(labels: dict[str, str], want: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in want.items())


def _selector(workload: Obj) -> dict[str, str]:
    selector: dict[str, str] = ((workload.get("spec") or {}).get("selector") or {}).get(
        "matchLabels") or {}
    return dict(selector)


def _pods_of(workload: Obj, pods: list[Obj]) -> list[Obj]:
    """The workload's pods: its namespace, its selector's labels (oldest name first)."""
    want = _selector(workload)
    if not want:
        return []
    return sorted((p for p in pods if _ns(p) == _ns(workload) and _has(_labels(p), want)),
                  key=_name)


def _containers(spec: Obj) -> list[Obj]:
    return list(spec.get("containers") or [])


def _container(spec: Obj, name: str) -> Obj | None:
    for c in _containers(spec):
        if c.get("name") == name:
            return c
    return None


def _port(container: Obj | None, names: Iterable[str], default: int | None) -> int | None:
    for p in (container or {}).get("ports") or []:
        if p.get("name") in names and p.get("containerPort"):
            return int(p["containerPort"])
    return default


def _mount(container: Obj | None, *, volume: str | None = None,
           path: str | None = None) -> str | None:
    for m in (container or {}).get("volumeMounts") or []:
        if (volume is not None and m.get("name") == volume) or \
                (path is not None and m.get("mountPath") == path):
            return str(m.get("mountPath"))
    return None


def _env(container: Obj | None, name: str) -> Obj | None:
    for e in (container or {}).get("env") or []:
        if e.get("name") == name:
            found: Obj = e
            return found
    return None


_FIELDS: dict[str, Callable[[Obj], Any]] = {
    "metadata.name": _name, "metadata.namespace": _ns,
    "spec.nodeName": lambda p: (p.get("spec") or {}).get("nodeName"),
    "status.podIP": lambda p: (p.get("status") or {}).get("podIP")}


def _env_value(container: Obj | None, name: str, pod: Obj | None = None,
               depth: int = 0) -> str | None:
    """A plain env value of the container, its ``$(VAR)`` references expanded from the
    container's other plain values and the pod's fields. Never a value from a Secret,
    and never a variable whose name says it holds one."""
    if SECRETISH.search(name) or depth > 5:
        return None
    entry = _env(container, name)
    if entry is None:
        return None
    if "value" in entry and entry["value"] is not None:
        value = str(entry["value"])
    else:
        ref = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        read = _FIELDS.get(str(ref))
        got = read(pod) if read is not None and pod is not None else None
        return None if got is None else str(got)

    def expand(match: re.Match[str]) -> str:
        inner = _env_value(container, match.group(1), pod, depth + 1)
        return match.group(0) if inner is None else inner

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", expand, value)


def _secret_ref(container: Obj | None, name: str) -> str | None:
    """Where an env variable's value is kept: ``Secret NS/NAME key K`` (never read)."""
    entry = _env(container, name)
    ref = ((entry or {}).get("valueFrom") or {}).get("secretKeyRef")
    if not ref:
        return None
    return f"Secret {ref.get('name')} key {ref.get('key')}"


def _secret_volume(spec: Obj, container: Obj | None, path_end: str) -> str | None:
    """The Secret mounted where a path ends in ``path_end`` (an Erlang cookie file)."""
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    for m in (container or {}).get("volumeMounts") or []:
        secret = (volumes.get(m.get("name")) or {}).get("secret")
        if not secret:
            continue
        if str(m.get("mountPath", "")).endswith(path_end):
            key = m.get("subPath")
            return f"Secret {secret.get('secretName')}" + (f" key {key}" if key else "")
        for item in secret.get("items") or []:  # a directory mount, the file an item
            if str(item.get("path", "")).endswith(path_end):
                return f"Secret {secret.get('secretName')} key {item.get('key')}"
    return None


def _tcp_probe_port(container: Obj) -> int | None:
    """The port a TCP readiness probe checks (libvirtd's listening port)."""
    port = ((container.get("readinessProbe") or {}).get("tcpSocket") or {}).get("port")
    return int(port) if isinstance(port, int) else None


def _host_network(spec: Obj) -> bool:
    return bool(spec.get("hostNetwork"))


def host_name(node: str) -> str:
    """An inventory host name for a Kubernetes node name (dots and capitals are not
    allowed in the inventory's names)."""
    name = re.sub(r"[^a-z0-9-]", "-", node.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = "n" + name
    return name[:63]


# -- the cluster's nodes ---------------------------------------------------------------


def _addresses(nodes: list[Obj]) -> dict[str, str]:
    """node name -> its InternalIP (else ExternalIP)."""
    out: dict[str, str] = {}
    for node in nodes:
        addrs = {a.get("type"): a.get("address")
                 for a in (node.get("status") or {}).get("addresses") or []}
        address = addrs.get("InternalIP") or addrs.get("ExternalIP")
        if address:
            out[_name(node)] = str(address)
    return out


def _pod_node(pod: Obj) -> str | None:
    node = (pod.get("spec") or {}).get("nodeName")
    return str(node) if node else None


def _pinned_node(spec: Obj) -> str | None:
    node = (spec.get("nodeSelector") or {}).get("kubernetes.io/hostname")
    return str(node) if node else None


# -- what was found ----------------------------------------------------------------------


@dataclass
class Member:
    """One cluster member (or one compute's libvirt) on one node."""

    service: str  # galera | rabbitmq | libvirt
    node: str  # the Kubernetes node
    section: Obj
    pod: Obj | None  # None: a seed Deployment whose pod is not there now


@dataclass
class Found:
    """One recognised workload and what it gives the inventory."""

    service: str
    pattern: str  # openstack-helm | mariadb-operator | rabbitmq-operator | seed
    ref: str  # "StatefulSet openstack/mariadb-server"
    members: list[Member]
    cluster: Obj | None = None  # its clusters: entry (a platform recovers it)
    notes: list[str] = field(default_factory=list)
    # credential hints: which user, where each secret value is kept
    user: str | None = None
    secrets: dict[str, str] = field(default_factory=dict)


class _Classifier:
    def __init__(self, snap: Snapshot, options: Options) -> None:
        self.snap = snap
        self.options = options
        self.addresses = _addresses(snap.nodes)
        self.findings: list[Finding] = []
        self.found: list[Found] = []
        self.claimed: set[tuple[str, str, str]] = set()  # (kind, ns, name) classified

    # -- findings --

    def say(self, verdict: Verdict, subject: str, why: str) -> None:
        self.findings.append(Finding(verdict, subject, why))

    def claim(self, kind: str, obj: Obj) -> None:
        self.claimed.add((kind, _ns(obj), _name(obj)))

    def workloads(self) -> list[tuple[str, Obj]]:
        return ([("StatefulSet", o) for o in self.snap.statefulsets]
                + [("Deployment", o) for o in self.snap.deployments]
                + [("DaemonSet", o) for o in self.snap.daemonsets])

    def address_of(self, node: str, pod: Obj | None) -> str | None:
        if node in self.addresses:
            return self.addresses[node]
        host_ip = ((pod or {}).get("status") or {}).get("hostIP")
        return str(host_ip) if host_ip else None

    def target(self, pod: Obj, container: str) -> str:
        return f"k8s://{_ns(pod)}/{_name(pod)}?container={container}"

    def scheduled(self, ref: str, pods: list[Obj]) -> list[tuple[Obj, str]]:
        """(pod, node) of each pod on a node; the others are findings."""
        out = []
        for pod in pods:
            node = _pod_node(pod)
            if node is None:
                self.say("not classified", f"pod {_ns(pod)}/{_name(pod)} of {ref}",
                         "not on a node yet (Pending): no host to give it; rerun when it "
                         "is scheduled")
                continue
            out.append((pod, node))
        return out

    # -- openstack-helm ------------------------------------------------------------------

    def osh_mariadb(self, sts: Obj) -> None:
        ref = _ref("StatefulSet", sts)
        spec = _pod_spec(sts)
        container = _container(spec, "mariadb")
        if container is None:
            self.say("not classified", ref, "openstack-helm's labels (application=mariadb, "
                     "component=server) but no container named mariadb")
            return
        state = self.state_configmap(sts, container)
        if state is None:
            self.say("not classified", ref, "openstack-helm's MariaDB, but no ConfigMap in "
                     f"{_ns(sts)} carries the {STATE_ANNOTATION} annotation (nor does the "
                     "container name one in STATE_CONFIGMAP): the platform's recovery could "
                     "not be watched, and the harness must not fight it")
            return
        datadir = self.pvc_mount(sts, container, "/var/lib/mysql")
        config = _mount(container, path="/etc/mysql/my.cnf")
        port = _port(container, ("mysql",), 3306) or 3306
        members = []
        for pod, node in self.scheduled(ref, _pods_of(sts, self.snap.pods)):
            section: Obj = {"port": port, "target": self.target(pod, "mariadb"),
                            "datadir": datadir}
            if config:
                section["config"] = config
            if not _host_network(_pod_spec(pod)):
                section["reach"] = "port-forward"
            members.append(Member("galera", node, section, pod))
        found = Found("galera", "openstack-helm", ref, members, cluster={
            "recovered_by": "platform", "platform": "openstack-helm",
            "namespace": _ns(sts), "statefulset": _name(sts), "state_configmap": state})
        found.user = _env_value(container, "MYSQL_DBADMIN_USERNAME") or "root"
        where = _secret_ref(container, "MYSQL_DBADMIN_PASSWORD")
        if where:
            found.secrets[DB_PASSWORD_VAR] = f"{_ns(sts)}: {where}"
        found.notes.append(f"state ConfigMap {_ns(sts)}/{state}; data on "
                           + ("a PVC" if self.is_pvc(sts, container, datadir) else "a volume")
                           + f" at {datadir}")
        self.add(found, sts, "StatefulSet")

    def state_configmap(self, sts: Obj, container: Obj) -> str | None:
        """The ConfigMap carrying the cluster state annotation in the StatefulSet's
        namespace (the one the container's STATE_CONFIGMAP names, if several)."""
        named = _env_value(container, "STATE_CONFIGMAP")
        carrying = [_name(c) for c in self.snap.configmaps
                    if _ns(c) == _ns(sts) and STATE_ANNOTATION in (_meta(c).get("annotations")
                                                                   or {})]
        if named and named in carrying:
            return named
        if len(carrying) == 1:
            return carrying[0]
        if carrying:
            self.say("note", _ref("StatefulSet", sts), "several ConfigMaps carry the state "
                     f"annotation ({', '.join(sorted(carrying))}); took {sorted(carrying)[0]}")
            return sorted(carrying)[0]
        return named  # the start script creates it on its first run

    def pvc_mount(self, sts: Obj, container: Obj, default: str) -> str:
        """Where the StatefulSet's volume claim is mounted (else ``default``)."""
        for claim in (sts.get("spec") or {}).get("volumeClaimTemplates") or []:
            mounted = _mount(container, volume=_name(claim))
            if mounted:
                return mounted
        return default

    def is_pvc(self, sts: Obj, container: Obj, path: str) -> bool:
        claims = {_name(c) for c in (sts.get("spec") or {}).get("volumeClaimTemplates") or []}
        return any(m.get("name") in claims and m.get("mountPath") == path
                   for m in container.get("volumeMounts") or [])

    def osh_rabbitmq(self, sts: Obj) -> None:
        ref = _ref("StatefulSet", sts)
        spec = _pod_spec(sts)
        container = _container(spec, "rabbitmq")
        if container is None:
            self.say("not classified", ref, "openstack-helm's labels (application=rabbitmq, "
                     "component=server) but no container named rabbitmq")
            return
        service = str((sts.get("spec") or {}).get("serviceName") or "")
        members = self.rabbit_members(sts, container, ref, fallback=lambda pod: (
            f"rabbit@{_name(pod)}.{service}.{_ns(pod)}.svc.cluster.local" if service
            else None))
        found = Found("rabbitmq", "openstack-helm", ref, members, cluster={
            "recovered_by": "platform", "platform": "openstack-helm",
            "namespace": _ns(sts), "statefulset": _name(sts)})
        self.rabbit_secrets(found, spec, container, sts)
        self.add(found, sts, "StatefulSet")

    def rabbit_members(self, sts: Obj, container: Obj, ref: str,
                       fallback: Callable[[Obj], str | None]) -> list[Member]:
        amqp = _port(container, ("amqp",), 5672) or 5672
        management = _port(container, ("management", "http", "https"), None)
        members = []
        for pod, node in self.scheduled(ref, _pods_of(sts, self.snap.pods)):
            name = _env_value(container, "RABBITMQ_NODENAME", pod)
            if name is None or "$(" in name:
                name = fallback(pod)
            if name is None or not re.fullmatch(r"[A-Za-z0-9_-]+@[A-Za-z0-9_.-]+", name):
                self.say("not classified", f"pod {_ns(pod)}/{_name(pod)} of {ref}",
                         "its Erlang node name is not in the pod spec (RABBITMQ_NODENAME) "
                         "and the StatefulSet names no headless service")
                continue
            section: Obj = {"node": name, "amqp_port": amqp, "target": self.target(pod,
                                                                                "rabbitmq"),
                            # the image's CLI is on its PATH
                            "cli": ""}
            if management is not None:
                section["management_port"] = management
            base = _env_value(container, "RABBITMQ_MNESIA_BASE", pod)
            if base:
                section["data_dir"] = base
            if not _host_network(_pod_spec(pod)):
                section["reach"] = "port-forward"
            members.append(Member("rabbitmq", node, section, pod))
        return members

    def rabbit_secrets(self, found: Found, spec: Obj, container: Obj, sts: Obj) -> None:
        ns = _ns(sts)
        cookie = _secret_ref(container, "RABBITMQ_ERLANG_COOKIE") or _secret_volume(
            spec, container, ".erlang.cookie")
        if cookie is None:
            for init in spec.get("initContainers") or []:
                cookie = _secret_volume(spec, init, ".erlang.cookie")
                if cookie:
                    break
        if cookie is None and _env(container, "RABBITMQ_ERLANG_COOKIE") is not None:
            cookie = "a plain value in the pod spec (env RABBITMQ_ERLANG_COOKIE; not copied)"
        if cookie:
            found.secrets[ERLANG_COOKIE_VAR] = f"{ns}: {cookie}" if cookie.startswith(
                "Secret") else cookie
        for c in [container, *(spec.get("initContainers") or [])]:
            where = _secret_ref(c, "RABBITMQ_ADMIN_PASSWORD") or _secret_ref(
                c, "RABBITMQ_DEFAULT_PASS")
            user_where = _secret_ref(c, "RABBITMQ_ADMIN_USERNAME") or _secret_ref(
                c, "RABBITMQ_DEFAULT_USER")
            if where:
                found.secrets[RABBITMQ_PASSWORD_VAR] = f"{ns}: {where}"
                if user_where:
                    found.notes.append(f"its user is in {ns}: {user_where} "
                                       "(give it with --rabbitmq-user)")
                break

    def osh_libvirt(self, ds: Obj) -> None:
        ref = _ref("DaemonSet", ds)
        spec = _pod_spec(ds)
        container = _container(spec, "libvirt")
        if container is None:
            self.say("not classified", ref, "openstack-helm's labels (application=libvirt, "
                     "component=libvirt) but no container named libvirt")
            return
        members = []
        selector = ",".join(f"{k}={v}" for k, v in sorted(_selector(ds).items()))
        for pod, node in self.scheduled(ref, _pods_of(ds, self.snap.pods)):
            address = self.address_of(node, pod)
            if address is None:
                continue  # said once, when hosts are built
            port = _tcp_probe_port(container)
            # a DaemonSet's pod is replaced under a new name: named by its selector and
            # its node, the replacement is still the target
            members.append(Member("libvirt", node, {
                "uri": f"qemu+tcp://{address}{f':{port}' if port else ''}/system",
                "container": f"k8s://{_ns(ds)}/?selector={selector}&node={node}"
                             "&container=libvirt"}, pod))
        found = Found("libvirt", "openstack-helm", ref, members)
        if not spec.get("hostPID"):
            found.notes.append("no hostPID: its VMs' qemu processes are not visible from it")
        self.add(found, ds, "DaemonSet")

    # -- operators -----------------------------------------------------------------------

    def mariadb_operator(self, sts: Obj) -> None:
        ref = _ref("StatefulSet", sts)
        spec = _pod_spec(sts)
        container = _container(spec, "mariadb")
        if container is None:
            self.say("not classified", ref, "mariadb-operator's labels but no container "
                     "named mariadb")
            return
        galera = _container(spec, "agent") is not None or _port(
            container, ("cluster",), None) is not None or any(
            p.get("containerPort") == 4567 for p in container.get("ports") or [])
        if not galera:
            self.say("not classified", ref, "a mariadb-operator MariaDB without Galera (no "
                     "agent container, no cluster port 4567): the harness's galera service "
                     "is a Galera cluster")
            return
        datadir = self.pvc_mount(sts, container, "/var/lib/mysql")
        port = _port(container, ("mariadb", "mysql"), 3306) or 3306
        members = []
        for pod, node in self.scheduled(ref, _pods_of(sts, self.snap.pods)):
            section: Obj = {"port": port, "target": self.target(pod, "mariadb"),
                            "datadir": datadir}
            if not _host_network(_pod_spec(pod)):
                section["reach"] = "port-forward"
            members.append(Member("galera", node, section, pod))
        found = Found("galera", "mariadb-operator", ref, members, cluster={
            "recovered_by": "platform", "platform": "mariadb-operator",
            "namespace": _ns(sts), "statefulset": _name(sts)})
        found.user = "root"
        where = _secret_ref(container, "MARIADB_ROOT_PASSWORD")
        if where:
            found.secrets[DB_PASSWORD_VAR] = f"{_ns(sts)}: {where}"
        self.add(found, sts, "StatefulSet")

    def rabbitmq_operator(self, sts: Obj) -> None:
        ref = _ref("StatefulSet", sts)
        cluster = _all_labels(sts).get("app.kubernetes.io/name", "")
        spec = _pod_spec(sts)
        container = _container(spec, "rabbitmq")
        if container is None:
            self.say("not classified", ref, "the RabbitMQ cluster operator's labels but no "
                     "container named rabbitmq")
            return
        if _name(sts) != f"{cluster}-server":
            self.say("note", ref, f"the operator names its StatefulSet {cluster}-server; "
                     "taken by its labels all the same")
        service = str((sts.get("spec") or {}).get("serviceName") or f"{cluster}-nodes")
        members = self.rabbit_members(sts, container, ref, fallback=lambda pod: (
            f"rabbit@{_name(pod)}.{service}.{_ns(pod)}"))
        found = Found("rabbitmq", "rabbitmq-operator", ref, members, cluster={
            "recovered_by": "platform", "platform": "rabbitmq-operator",
            "namespace": _ns(sts), "statefulset": _name(sts)})
        self.rabbit_secrets(found, spec, container, sts)
        ns = _ns(sts)
        found.secrets.setdefault(ERLANG_COOKIE_VAR, f"{ns}: Secret {cluster}-erlang-cookie")
        found.secrets.setdefault(RABBITMQ_PASSWORD_VAR,
                                 f"{ns}: Secret {cluster}-default-user key password")
        found.notes.append(f"its user is in {ns}: Secret {cluster}-default-user key username "
                           "(give it with --rabbitmq-user)")
        self.add(found, sts, "StatefulSet")

    # -- the seed's ----------------------------------------------------------------------

    def seed(self, kind: str, workload: Obj, app: str) -> None:
        """A Deployment per node (app=galera|rabbitmq, node=<node>) or a libvirt
        DaemonSet per node (app=libvirt, node=<node>), as the seed builds them."""
        ref = _ref(kind, workload)
        labels = _all_labels(workload)
        node = labels.get("node") or ""
        spec = _pod_spec(workload)
        pinned = _pinned_node(spec)
        pods = [p for p in _pods_of(workload, self.snap.pods) if _pod_node(p)]
        if pinned is None:
            self.say("not classified", ref, f"labelled app={app},node={node} as the seed's, "
                     "but not pinned to a node (no nodeSelector kubernetes.io/hostname): "
                     "which host it stands for is not known")
            return
        if not _selector(workload) or _selector(workload) != {"app": app, "node": node}:
            self.say("note", ref, f"its selector is {_selector(workload)}; the target selects "
                     f"app={app},node={node}")
        service = {"galera": "galera", "rabbitmq": "rabbitmq", "libvirt": "libvirt"}[app]
        container_name = {"galera": "mariadb", "rabbitmq": "rabbitmq",
                          "libvirt": "libvirt"}[app]
        container = _container(spec, container_name)
        if container is None:
            self.say("not classified", ref, f"the seed's labels but no container named "
                     f"{container_name}")
            return
        ns = _ns(workload)
        target = f"k8s://{ns}/?selector=app={app},node={node}&container={container_name}"
        pod = pods[0] if pods else None
        found = Found(service, "seed", ref, [])
        if app == "libvirt":
            port = _tcp_probe_port(container)
            address = self.address_of(pinned, pod)
            if address is None:
                self.say("not classified", ref, f"its node {pinned} has no address "
                         "(InternalIP) the API shows, and it has no pod to read one from")
                return
            uri = f"qemu+tcp://{address}{':' + str(port) if port else ''}/system"
            found.members.append(Member("libvirt", pinned, {"uri": uri, "container": target},
                                        pod))
            if not spec.get("hostPID"):
                self.say("note", ref, "no hostPID: its VMs' qemu processes are not visible "
                         "from it")
            self.add(found, workload, kind)
            return
        if not _host_network(spec):
            self.say("note", ref, "not on the host's network: reached by port-forward")
        supervised = self.supervised(container)
        section: Obj = {"target": target}
        if not _host_network(spec):
            section["reach"] = "port-forward"
        missing: list[str] = []
        if app == "galera":
            ok = self.seed_galera(ref, workload, container, supervised, section, missing)
        else:
            ok = self.seed_rabbitmq(ref, workload, container, supervised, section, missing,
                                    pinned, pod)
        if not ok:
            return
        if missing:
            self.say("note", ref, f"{', '.join(missing)} not shown by the pod spec: "
                     + self.refused(service, missing))
        found.members.append(Member(service, pinned, section, pod))
        self.add(found, workload, kind)

    @staticmethod
    def refused(service: str, missing: list[str]) -> str:
        if "pidfile" in missing or "start" in missing:
            return f"{PROCESS_FAULTS} of {service} are refused (delete-pod and drain act " \
                   "through the API)"
        if "datadir" in missing or "data_dir" in missing:
            return "wipe and fill-disk are refused" + (
                "; recovery cannot read or force a node's Mnesia state" if service ==
                "rabbitmq" else "")
        return "nothing is refused for it"

    @staticmethod
    def supervised(container: Obj) -> tuple[str, str, list[str]] | None:
        """(pidfile, log, start argv) where PID 1 is the seed's supervisor."""
        argv = [str(a) for a in [*(container.get("command") or []),
                                 *(container.get("args") or [])]]
        if len(argv) >= 4 and Path(argv[0]).name == "supervise":
            return argv[1], argv[2], argv[3:]
        return None

    def seed_galera(self, ref: str, workload: Obj, container: Obj,
                    supervised: tuple[str, str, list[str]] | None, section: Obj,
                    missing: list[str]) -> bool:
        config = datadir = None
        if supervised is not None:
            pidfile, _, argv = supervised
            section["pidfile"] = pidfile
            binary = Path(argv[0]).name
            if binary in ("mariadbd", "mysqld"):
                section["start"] = shlex.join(argv)
                for arg in argv[1:]:
                    if arg.startswith("--defaults-file="):
                        config = arg.partition("=")[2]
                    if arg.startswith("--datadir="):
                        datadir = arg.partition("=")[2]
            elif len(argv) == 2 and argv[1].endswith(".cnf"):
                # the seed's start script: recovers the node's position, then execs
                # mariadbd with this config. The harness needs mariadbd's own command
                # (recovery appends --wsrep-recover, --wsrep-new-cluster to it).
                config = argv[1]
                section["start"] = shlex.join(["/usr/sbin/mariadbd", f"--defaults-file={config}"])
                self.say("note", ref, f"PID 1 starts Galera through {argv[0]} {config}; its "
                         f"start is written as mariadbd's own command line ({section['start']}), "
                         "which recovery extends with --wsrep-recover or --wsrep-new-cluster")
            else:
                missing.append("start")
        else:
            missing += ["pidfile", "start"]
        if config:
            section["config"] = config
        port = self.service_port(workload, ("mysql",))
        if port:
            section["port"] = port
        if datadir is None and config and self.options.read_local is not None:
            datadir = _cnf_datadir(self.options.read_local(config))
            if datadir:
                self.say("note", ref, f"data directory {datadir} read from {config} on this "
                         "machine (--access local: the node is this machine)")
        if datadir is None:
            self.say("not classified", ref, "the seed's Galera, but its data directory is "
                     "shown neither by the pod spec (--datadir) nor by a config file readable "
                     "here" + ("" if self.options.access == "local" else
                               " (its config is read only with --access local)")
                     + ": the inventory's galera needs one; add the node by hand")
            return False
        section["datadir"] = datadir
        return True

    def seed_rabbitmq(self, ref: str, workload: Obj, container: Obj,
                      supervised: tuple[str, str, list[str]] | None, section: Obj,
                      missing: list[str], node: str, pod: Obj | None) -> bool:
        env_file_values: dict[str, str] = {}
        if supervised is not None:
            pidfile, _, argv = supervised
            section["pidfile"] = pidfile
            script = argv[2] if len(argv) == 3 and Path(argv[0]).name in (
                "sh", "bash", "dash") and argv[1] == "-c" else shlex.join(argv)
            section["start"] = script
            sourced = re.match(r"\s*(set -a;\s*\.\s+(\S+);\s*set \+a;)\s*exec\s+(\S+/)"
                               r"rabbitmq-server\s*$", script)
            if sourced:
                section["cli"] = f"{sourced.group(1)} {sourced.group(3)}"
                if self.options.read_local is not None:
                    env_file_values = _env_file(self.options.read_local(
                        shlex.split(sourced.group(2))[0]))
        else:
            missing += ["pidfile", "start"]
        name = _env_value(container, "RABBITMQ_NODENAME", pod) or env_file_values.get(
            "RABBITMQ_NODENAME")
        if not name:
            name = f"rabbit@{node}"
            self.say("note", ref, f"its Erlang node name is not in the pod spec; {name} "
                     "written (RabbitMQ's default on a host network: rabbit@<hostname>)")
        section["node"] = name
        base = _env_value(container, "RABBITMQ_MNESIA_BASE", pod) or env_file_values.get(
            "RABBITMQ_MNESIA_BASE")
        if base:
            section["data_dir"] = base
        else:
            missing.append("data_dir")
        port = ((container.get("readinessProbe") or {}).get("tcpSocket") or {}).get("port")
        amqp = int(port) if isinstance(port, int) else self.service_port(workload, ("amqp",))
        if amqp:
            section["amqp_port"] = amqp
        return True

    def service_port(self, workload: Obj, names: Iterable[str]) -> int | None:
        """A port of a Service selecting exactly this workload's pods, by its name."""
        labels = _labels(_template(workload))
        for svc in self.snap.services:
            sel = (svc.get("spec") or {}).get("selector") or {}
            if _ns(svc) != _ns(workload) or not sel or sel != _selector(workload):
                continue
            if not _has(labels, sel):
                continue
            for p in (svc.get("spec") or {}).get("ports") or []:
                if p.get("name") in names and p.get("port"):
                    return int(p["port"])
        return None

    # -- everything --------------------------------------------------------------------

    def add(self, found: Found, workload: Obj, kind: str) -> None:
        self.claim(kind, workload)
        self.found.append(found)

    def classify(self) -> None:
        for kind, w in self.workloads():
            labels = _all_labels(w)
            if kind == "StatefulSet" and _has(labels, {"application": "mariadb",
                                                       "component": "server"}):
                self.osh_mariadb(w)
            elif kind == "StatefulSet" and _has(labels, {"application": "rabbitmq",
                                                         "component": "server"}):
                self.osh_rabbitmq(w)
            elif kind == "DaemonSet" and _has(labels, {"application": "libvirt",
                                                       "component": "libvirt"}):
                self.osh_libvirt(w)
            elif kind == "DaemonSet" and _has(labels, {"application": "nova",
                                                       "component": "compute"}):
                self.claim(kind, w)
                self.say("found", _ref(kind, w), "nova-compute (openstack-helm): not in the "
                         "inventory, no fault acts on it; libvirt's pods stand for its hosts")
            elif kind == "StatefulSet" and labels.get("app.kubernetes.io/name") == "mariadb" \
                    and labels.get("app.kubernetes.io/instance") == _name(w):
                self.mariadb_operator(w)
            elif kind == "StatefulSet" and _has(labels, {
                    "app.kubernetes.io/component": "rabbitmq",
                    "app.kubernetes.io/part-of": "rabbitmq"}) \
                    and labels.get("app.kubernetes.io/name"):
                self.rabbitmq_operator(w)
            elif kind in ("Deployment", "DaemonSet") and labels.get("node") and \
                    labels.get("app") in (("galera", "rabbitmq") if kind == "Deployment"
                                          else ("libvirt",)):
                self.seed(kind, w, labels["app"])
            elif kind == "DaemonSet" and labels.get("app") == "nova-compute" \
                    and labels.get("node"):
                self.claim(kind, w)
                self.say("found", _ref(kind, w), "nova-compute (the seed's stand-in): not in "
                         "the inventory, no fault acts on it")
            elif labels.get("application") in ("mariadb", "rabbitmq", "libvirt") \
                    and labels.get("component"):
                self.claim(kind, w)
                self.say("ignored", _ref(kind, w), f"openstack-helm's "
                         f"{labels['application']} chart, component {labels['component']}: "
                         "not a member of the cluster")
        self.unclassified()

    def unclassified(self) -> None:
        """Every workload and bare pod that looks like a database, a broker or libvirt
        and was not classified above, with the reason."""
        covered_pods: set[tuple[str, str]] = set()
        for kind, w in self.workloads():
            for p in _pods_of(w, self.snap.pods):
                covered_pods.add((_ns(p), _name(p)))
            if (kind, _ns(w), _name(w)) in self.claimed:
                continue
            what = _looks_like(w)
            if what is None:
                continue
            if any(f.subject.startswith(_ref(kind, w)) for f in self.findings):
                continue  # already said why
            helper = _helper(w)
            if helper is not None:
                self.say("ignored", _ref(kind, w), f"{helper}: not a member of a cluster")
                continue
            self.say("not classified", _ref(kind, w), f"looks like {what} ({_evidence(w)}) "
                     "but matches no known pattern: " + _patterns_for(what))
        for pod in self.snap.pods:
            if (_ns(pod), _name(pod)) in covered_pods:
                continue
            owners = _meta(pod).get("ownerReferences") or []
            if any(o.get("kind") in ("Job", "CronJob") for o in owners):
                continue
            what = _looks_like(pod)
            if what is None:
                continue
            owner = ", ".join(f"{o.get('kind')} {o.get('name')}" for o in owners) or "no owner"
            self.say("not classified", f"pod {_ns(pod)}/{_name(pod)}",
                     f"looks like {what} ({_evidence(pod)}) but belongs to no workload "
                     f"discover recognises ({owner}): " + _patterns_for(what))


def _looks_like(obj: Obj) -> str | None:
    words = " ".join([_name(obj), *(f"{k}={v}" for k, v in _all_labels(obj).items()),
                      *(str(c.get("image", "")) + " " + str(c.get("name", ""))
                        for c in _containers(_pod_spec(obj)))]).lower()
    for what, needles in LOOKS_LIKE.items():
        if any(n in words for n in needles):
            return what
    return None


def _helper(obj: Obj) -> str | None:
    """An operator or a metrics exporter beside a cluster (by its name or labels)."""
    words = " ".join([_name(obj), *_all_labels(obj).values()]).lower()
    if "operator" in words:
        return "an operator (it manages clusters, it is none)"
    if "exporter" in words:
        return "a metrics exporter"
    return None


def _evidence(obj: Obj) -> str:
    images = [str(c.get("image")) for c in _containers(_pod_spec(obj)) if c.get("image")]
    labels = ",".join(f"{k}={v}" for k, v in sorted(_all_labels(obj).items()))
    return "; ".join(filter(None, [f"image {', '.join(images)}" if images else "",
                                   f"labels {labels}" if labels else "no labels"]))


def _patterns_for(what: str) -> str:
    if what == "a database":
        return ("openstack-helm's is a StatefulSet labelled application=mariadb,"
                "component=server; mariadb-operator's a StatefulSet labelled "
                "app.kubernetes.io/name=mariadb with app.kubernetes.io/instance equal to its "
                "name; the seed's a Deployment labelled app=galera,node=<node>")
    if what == "a message broker":
        return ("openstack-helm's is a StatefulSet labelled application=rabbitmq,"
                "component=server; the RabbitMQ cluster operator's a StatefulSet labelled "
                "app.kubernetes.io/component=rabbitmq,app.kubernetes.io/part-of=rabbitmq; the "
                "seed's a Deployment labelled app=rabbitmq,node=<node>")
    return ("openstack-helm's is a DaemonSet labelled application=libvirt,component=libvirt; "
            "the seed's a DaemonSet labelled app=libvirt,node=<node>")


def _cnf_datadir(text: str | None) -> str | None:
    """``datadir`` of a my.cnf's server groups (the only line read)."""
    if not text:
        return None
    group = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip().lower()
        elif group in ("mysqld", "mariadb", "server", "galera", "mariadbd") and \
                re.match(r"datadir\s*=", line):
            return line.partition("=")[2].strip().strip("\"'") or None
    return None


def _env_file(text: str | None) -> dict[str, str]:
    """RABBITMQ_NODENAME and RABBITMQ_MNESIA_BASE of a sourced env file (nothing else is
    kept: such files hold other things too)."""
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key in ("RABBITMQ_NODENAME", "RABBITMQ_MNESIA_BASE"):
            words = shlex.split(value) if value else []
            if words:
                out[key] = words[0]
    return out


# -- the inventory -----------------------------------------------------------------------


def classify(snap: Snapshot, options: Options) -> Discovery:
    """The inventory (a dict, for ``chaos.inventory.parse``) and the findings."""
    c = _Classifier(snap, options)
    for gap in snap.gaps:
        c.say("note", "listing", gap)
    c.classify()
    by_service: dict[str, Found] = {}
    for found in c.found:
        first = by_service.get(found.service)
        # libvirt is no cluster: every DaemonSet's pods are computes (openstack-helm makes
        # one per group of nodes its overrides name, the lab one per compute)
        mergeable = found.service == "libvirt" or (first is not None and (
            first.pattern == found.pattern == "seed"))
        if first is not None and not mergeable:
            c.say("not classified", found.ref, f"a second {found.service} cluster "
                  f"({found.pattern}) beside {first.ref}: one site holds one "
                  f"{found.service} cluster; rerun with --namespace")
            continue
        if first is None:
            by_service[found.service] = found
        else:  # the seed's: one workload per node
            first.ref += ", " + found.ref.split("/", 1)[1]
            first.members.extend(found.members)
            first.notes.extend(n for n in found.notes if n not in first.notes)
    controllers: dict[str, Obj] = {}
    computes: dict[str, Obj] = {}
    names: dict[str, str] = {}  # inventory host name -> node

    def host(node: str, pod: Obj | None, table: dict[str, Obj], *, compute: bool) -> Obj | None:
        if node in table:
            return table[node]
        address = c.address_of(node, pod)
        if address is None:
            c.say("not classified", f"node {node}", "no address (no InternalIP the API "
                  "shows, no pod hostIP): its services are left out")
            return None
        name = host_name(node)
        if compute and node in controllers:
            name = host_name(f"{node}-compute")
            c.say("note", f"node {node}", f"a controller and a compute at once: its compute "
                  f"is the host {name}")
        if names.get(name, node) != node:
            name = host_name(f"{name}-{len(names)}")
        names[name] = node
        if name != node and name != host_name(f"{node}-compute"):
            c.say("note", f"node {node}", f"written as host {name} (the inventory's names "
                  "are lowercase letters, digits and dashes)")
        entry: Obj = {"name": name, "address": address}
        if options.access == "local":
            entry["access"] = "local"
        table[node] = entry
        return entry

    for service in ("galera", "rabbitmq"):
        cluster = by_service.get(service)
        if cluster is None:
            continue
        kept = []
        for m in cluster.members:
            entry = host(m.node, m.pod, controllers, compute=False)
            if entry is None:
                continue
            if service in entry:
                c.say("not classified", f"{service} on node {m.node} ({cluster.ref})",
                      f"a second {service} member on one node: a controller holds one "
                      "member; left out")
                continue
            entry[service] = m.section
            kept.append(m)
        cluster.members = kept
    libvirt = by_service.get("libvirt")
    if libvirt is not None:
        for m in libvirt.members:
            entry = host(m.node, m.pod, computes, compute=True)
            if entry is None:
                continue
            entry["libvirt"] = m.section
            entry["expect_vms"] = "survive"

    for found in by_service.values():
        hosts = sorted({host_name(m.node) for m in found.members})
        recovered = ("the platform" if found.cluster else
                     "the harness" if found.service != "libvirt" else "")
        c.say("found", found.ref, f"{found.service} ({found.pattern}) on "
              f"{', '.join(hosts) or 'no node'}"
              + (f"; recovered by {recovered}" if recovered else ""))
        for note in found.notes:
            c.say("note", found.ref, note)
        if found.cluster and found.service != "libvirt":
            c.say("note", found.ref, f"no pidfile or start in its pod spec: kill, freeze and "
                  f"power-off of {found.service} are sent from its pod's node (they need the "
                  "host's access), stop, wipe and fill-disk are refused; delete-pod and drain "
                  "act through the API, and the platform restarts what dies")

    if not controllers:
        c.say("note", "inventory", "no Galera or RabbitMQ member found: an inventory needs at "
              "least one controller; nothing written")
        return Discovery(None, c.findings)

    clusters = {f.service: f.cluster for f in by_service.values() if f.cluster}
    credentials = _credentials(c, by_service, options)
    if options.access != "local":
        c.say("note", "hosts", "no host says how to reach it (no --access local; for a real "
              "site add access: ssh and an ssh: section to each host): "
              f"{HOST_NEEDS} are refused")
    computes_out = list(computes.values())
    if computes_out:
        c.say("note", "computes", "no docker section (the node's container runtime is not "
              "described by the API): kill-docker is refused")
    kube: Obj = {"kubeconfig": options.kubeconfig}
    if options.context:
        kube["context"] = options.context
    inventory: Obj = {"name": options.name, "kind": "kubernetes"}
    if options.access == "local":
        inventory["firewall"] = "local"
    inventory.update({"credentials": credentials, "kubernetes": kube,
                      "controllers": sorted(controllers.values(), key=lambda h: h["name"]),
                      "computes": sorted(computes_out, key=lambda h: h["name"])})
    if clusters:
        inventory["clusters"] = clusters
    return Discovery(inventory, c.findings)


def _credentials(c: _Classifier, by_service: dict[str, Found], options: Options) -> Obj:
    galera = by_service.get("galera")
    rabbit = by_service.get("rabbitmq")
    db_user = options.db_user or (galera.user if galera else None)
    if db_user is None:
        db_user = "root"
        c.say("note", "credentials", "the database user is not in the pod spec: root "
              "written (give another with --db-user)")
    rabbit_user = options.rabbitmq_user or (rabbit.user if rabbit else None)
    if rabbit_user is None:
        rabbit_user = "guest"
        c.say("note", "credentials", "the RabbitMQ user is not in the pod spec: guest written "
              "(give another with --rabbitmq-user)")
    hints: dict[str, str] = {}
    for found in by_service.values():
        for var, where in found.secrets.items():
            hints.setdefault(var, where)
    for var, what in ((DB_PASSWORD_VAR, f"the password of the database user {db_user}"),
                      (RABBITMQ_PASSWORD_VAR, f"the password of the RabbitMQ user "
                                              f"{rabbit_user}"),
                      (ERLANG_COOKIE_VAR, "RabbitMQ's Erlang cookie")):
        kept_in = hints.get(var)
        c.say("set", var, what + (f" (kept in {kept_in})" if kept_in else ""))
    return {
        "db": {"user": db_user, "password": {"env": DB_PASSWORD_VAR}},
        "rabbitmq": {"user": rabbit_user, "password": {"env": RABBITMQ_PASSWORD_VAR}},
        "erlang_cookie": {"env": ERLANG_COOKIE_VAR},
    }


# -- the thin part: listing through the API ------------------------------------------------


def _list(what: str, fn: Any, *args: Any, **kwargs: Any) -> list[Obj]:
    """One list call, bounded, its items as the API's JSON."""
    from kubernetes.client.exceptions import ApiException

    try:
        resp = fn(*args, _request_timeout=REQUEST_TIMEOUT, _preload_content=False, **kwargs)
        body = json.loads(resp.data)
    except ApiException as exc:
        if exc.status in (401, 403):
            raise _Denied(f"list {what}: {exc.status} {exc.reason}") from None
        raise EnvironmentProblem(f"the API server answered list {what} with {exc.status} "
                                 f"{exc.reason}") from None
    except ValueError:
        raise EnvironmentProblem(f"list {what}: the API server's answer is not JSON") from None
    except Exception as exc:  # urllib3's connection errors and timeouts
        raise EnvironmentProblem(f"the API server cannot be reached (list {what}): "
                                 f"{type(exc).__name__}: {exc}"[:300]) from None
    items: list[Obj] = list(body.get("items") or [])
    return items


class _Denied(Exception):
    """A list the kubeconfig's user may not do."""


def snapshot(api: Any, namespace: str | None) -> Snapshot:
    """List what discover reads (never Secrets): nodes, and in ``namespace`` (or every
    namespace) pods, StatefulSets, Deployments, DaemonSets, Services, ConfigMaps."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    if namespace is not None:
        try:
            core.read_namespace(namespace, _request_timeout=REQUEST_TIMEOUT,
                                _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                raise ConfigError(f"namespace {namespace!r} does not exist") from None
            if exc.status == 401:
                raise ConfigError(f"the API server refused the kubeconfig's credentials "
                                  f"({exc.status} {exc.reason})") from None
            if exc.status != 403:  # may not read namespaces: the lists will say
                raise EnvironmentProblem(f"the API server answered get namespace with "
                                         f"{exc.status} {exc.reason}") from None
        except Exception as exc:
            raise EnvironmentProblem(f"the API server cannot be reached (get namespace): "
                                     f"{type(exc).__name__}: {exc}"[:300]) from None

    def listed(what: str, namespaced: Any, every: Any) -> list[Obj]:
        if namespace is not None:
            return _list(what, namespaced, namespace)
        return _list(what, every)

    gaps: list[str] = []
    try:
        nodes = _list("nodes", core.list_node)
    except _Denied as exc:
        nodes = []
        gaps.append(f"{exc}: node addresses taken from each pod's hostIP")
    try:
        pods = listed("pods", core.list_namespaced_pod, core.list_pod_for_all_namespaces)
        snap = Snapshot(
            nodes=nodes, pods=pods,
            statefulsets=listed("statefulsets", apps.list_namespaced_stateful_set,
                                apps.list_stateful_set_for_all_namespaces),
            deployments=listed("deployments", apps.list_namespaced_deployment,
                               apps.list_deployment_for_all_namespaces),
            daemonsets=listed("daemonsets", apps.list_namespaced_daemon_set,
                              apps.list_daemon_set_for_all_namespaces),
            services=listed("services", core.list_namespaced_service,
                            core.list_service_for_all_namespaces),
            configmaps=listed("configmaps", core.list_namespaced_config_map,
                              core.list_config_map_for_all_namespaces),
            gaps=gaps)
    except _Denied as exc:
        scope = f"in namespace {namespace}" if namespace else "in every namespace"
        raise ConfigError(f"the kubeconfig's user may not {exc} {scope} (discover needs get "
                          "and list on pods, statefulsets, deployments, daemonsets, services "
                          "and configmaps)") from None
    return snap


def api_client(kubeconfig: Path, context: str | None) -> Any:
    """An API client from a kubeconfig file; a bad file or context is one ConfigError."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    if not kubeconfig.is_file():
        raise ConfigError(f"kubeconfig {kubeconfig}: no such file")
    try:
        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), context=context)
    except ConfigException as exc:
        raise ConfigError(f"kubeconfig {kubeconfig}: {exc}"[:300]) from None
    except Exception as exc:  # YAML errors, a missing key, an unreadable certificate
        raise ConfigError(f"kubeconfig {kubeconfig}: not usable: {type(exc).__name__}: "
                          f"{exc}"[:300]) from None


def read_local_file(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def discover(kubeconfig: Path, *, namespace: str | None = None, context: str | None = None,
             access: Literal["local"] | None = None, name: str = "discovered",
             db_user: str | None = None, rabbitmq_user: str | None = None) -> Discovery:
    """List the cluster and classify what it runs."""
    kubeconfig = kubeconfig.resolve()
    api = api_client(kubeconfig, context)
    try:
        snap = snapshot(api, namespace)
    finally:
        api.close()
    options = Options(kubeconfig=str(kubeconfig), context=context, access=access, name=name,
                      db_user=db_user, rabbitmq_user=rabbitmq_user,
                      read_local=read_local_file if access == "local" else None)
    return classify(snap, options)


def render(discovery: Discovery, source: str) -> str:
    """The inventory as YAML, validated, with a header saying where it came from."""
    import yaml

    from chaos import inventory

    assert discovery.inventory is not None
    inventory.parse(discovery.inventory, "discovered inventory")
    to_set = [f.subject for f in discovery.findings if f.verdict == "set"]
    header = [f"# discovered by `chaos inventory discover` from {source}",
              "# secrets are references; set " + ", ".join(to_set) if to_set else "",
              "# what was found, and what was not classified and why: discover's stderr"]
    body = yaml.safe_dump(discovery.inventory, sort_keys=False, default_flow_style=False)
    return "\n".join(h for h in header if h) + "\n" + body
