"""``chaos inventory discover``: classification of each known pattern from object dicts
(no network), the written inventory validated, secrets never in it; and the command
against a FAKE API server (plain HTTP on 127.0.0.1, canned JSON: no API server runs in
unit tests; the lab test runs it against the Kubernetes tier's real one)."""

from __future__ import annotations

import copy
import json
import shlex
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
import yaml

from chaos import discover, inventory
from chaos.cli import main
from chaos.discover import Options, Snapshot, classify

Obj = dict[str, Any]
COOKIE = "PLAIN-COOKIE-IN-POD-SPEC"  # openstack-helm puts the Erlang cookie in env as is


# -- objects as the API returns them ---------------------------------------------------


def node(name: str, address: str) -> Obj:
    return {"kind": "Node", "metadata": {"name": name, "labels": {
        "kubernetes.io/hostname": name}},
        "status": {"addresses": [{"type": "InternalIP", "address": address},
                                 {"type": "Hostname", "address": name}]}}


def pod_of(workload: Obj, name: str, on: str, host_ip: str, *, phase: str = "Running",
           owner: str | None = None) -> Obj:
    template = workload["spec"]["template"]
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": workload["metadata"]["namespace"],
                     "labels": dict(template["metadata"]["labels"]),
                     "ownerReferences": [{"kind": owner or workload["kind"],
                                          "name": workload["metadata"]["name"]}]},
        "spec": {**copy.deepcopy(template["spec"]), "nodeName": on},
        "status": {"phase": phase, "hostIP": host_ip, "podIP": "10.244.0.9"},
    }


def workload(kind: str, name: str, labels: dict[str, str], spec: Obj, *,
             ns: str = "openstack", selector: dict[str, str] | None = None,
             **extra: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
            "spec": {"selector": {"matchLabels": dict(selector or labels)},
                     "template": {"metadata": {"labels": dict(labels)}, "spec": spec},
                     **extra}}


CONTROLLERS = [("ctl1", "192.0.2.11"), ("ctl2", "192.0.2.12"), ("ctl3", "192.0.2.13")]
COMPUTES = [("cmp1", "192.0.2.21"), ("cmp2", "192.0.2.22")]
NODES = [node(n, a) for n, a in CONTROLLERS + COMPUTES]


def osh_objects() -> Snapshot:
    """openstack-helm's mariadb, rabbitmq, libvirt and nova charts, as listed."""
    mariadb = workload("StatefulSet", "mariadb-server", {
        "release_group": "mariadb", "application": "mariadb", "component": "server"}, {
        "shareProcessNamespace": True,
        "containers": [{
            "name": "mariadb", "image": "docker.io/openstackhelm/mariadb:latest",
            "command": ["/tmp/start.py"],
            "env": [
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.namespace"}}},
                {"name": "STATE_CONFIGMAP", "value": "mariadb-mariadb-state"},
                {"name": "MYSQL_DBADMIN_USERNAME", "value": "root"},
                {"name": "MYSQL_DBADMIN_PASSWORD", "valueFrom": {"secretKeyRef": {
                    "name": "mariadb-dbadmin-password", "key": "MYSQL_DBADMIN_PASSWORD"}}},
            ],
            "ports": [{"name": "mysql", "containerPort": 3306},
                      {"name": "wsrep", "containerPort": 4567}],
            "volumeMounts": [{"name": "mysql-data", "mountPath": "/var/lib/mysql"},
                             {"name": "mariadb-etc", "mountPath": "/etc/mysql/my.cnf",
                              "subPath": "my.cnf"}],
        }]}, serviceName="mariadb-discovery", podManagementPolicy="Parallel", replicas=3,
        volumeClaimTemplates=[{"metadata": {"name": "mysql-data"}}])
    rabbit = workload("StatefulSet", "rabbitmq-rabbitmq", {
        "release_group": "rabbitmq", "application": "rabbitmq", "component": "server"}, {
        "initContainers": [{
            "name": "rabbitmq-password", "image": "rabbitmq-init",
            "env": [{"name": "RABBITMQ_ADMIN_USERNAME", "valueFrom": {"secretKeyRef": {
                "name": "rabbitmq-admin-user", "key": "RABBITMQ_ADMIN_USERNAME"}}},
                {"name": "RABBITMQ_ADMIN_PASSWORD", "valueFrom": {"secretKeyRef": {
                    "name": "rabbitmq-admin-user", "key": "RABBITMQ_ADMIN_PASSWORD"}}}]}],
        "containers": [{
            "name": "rabbitmq", "image": "docker.io/library/rabbitmq:3.13",
            "command": ["/tmp/rabbitmq-start.sh"],
            "env": [
                {"name": "MY_POD_NAME", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.name"}}},
                {"name": "RABBITMQ_USE_LONGNAME", "value": "true"},
                {"name": "RABBITMQ_NODENAME",
                 "value": "rabbit@$(MY_POD_NAME).rabbitmq.openstack.svc.cluster.local"},
                {"name": "RABBITMQ_ERLANG_COOKIE", "value": COOKIE},
            ],
            "ports": [{"name": "http", "containerPort": 15672},
                      {"name": "amqp", "containerPort": 5672}],
            "volumeMounts": [{"name": "rabbitmq-data", "mountPath": "/var/lib/rabbitmq"}],
        }]}, serviceName="rabbitmq", volumeClaimTemplates=[
        {"metadata": {"name": "rabbitmq-data"}}])
    libvirt = workload("DaemonSet", "libvirt-libvirt-default", {
        "release_group": "libvirt", "application": "libvirt", "component": "libvirt"}, {
        "hostNetwork": True, "hostPID": True, "hostIPC": True,
        "containers": [{"name": "libvirt", "image": "openstackhelm/libvirt",
                        "command": ["/tmp/libvirt.sh"]}]})
    nova = workload("DaemonSet", "nova-compute-default", {
        "release_group": "nova", "application": "nova", "component": "compute"}, {
        "hostNetwork": True, "hostPID": True,
        "containers": [{"name": "nova-compute", "image": "openstackhelm/nova"}]})
    ingress = workload("Deployment", "mariadb-ingress", {
        "application": "mariadb", "component": "ingress"}, {
        "containers": [{"name": "ingress", "image": "ingress-nginx/controller"}]})
    state = {"kind": "ConfigMap", "metadata": {
        "name": "mariadb-mariadb-state", "namespace": "openstack",
        "annotations": {discover.STATE_ANNOTATION: "live",
                        "openstackhelm.openstack.org/leader.node": "mariadb-server-0"}},
        "data": {"seqno.mariadb-server-0": "1234"}}
    pods = [pod_of(mariadb, f"mariadb-server-{i}", n, a) for i, (n, a) in
            enumerate(CONTROLLERS)]
    pods += [pod_of(rabbit, f"rabbitmq-rabbitmq-{i}", n, a) for i, (n, a) in
             enumerate(CONTROLLERS)]
    pods += [pod_of(libvirt, f"libvirt-libvirt-default-{n}", n, a) for n, a in COMPUTES]
    pods += [pod_of(nova, f"nova-compute-default-{n}", n, a) for n, a in COMPUTES]
    return Snapshot(nodes=NODES, pods=pods, statefulsets=[mariadb, rabbit],
                    deployments=[ingress], daemonsets=[libvirt, nova], configmaps=[state])


def parsed(found: discover.Discovery) -> inventory.Site:
    assert found.inventory is not None, found.lines()
    return inventory.parse(found.inventory, "discovered")


def says(found: discover.Discovery, verdict: str, *words: str) -> list[str]:
    return [line for line in found.lines() if line.startswith(verdict + ":")
            and all(w in line for w in words)]


# -- openstack-helm -------------------------------------------------------------------


def test_openstack_helm_statefulsets_are_platform_clusters_on_their_nodes() -> None:
    found = classify(osh_objects(), Options(kubeconfig="/etc/kube/admin.conf"))
    site = parsed(found)
    assert site.kind == "kubernetes" and site.kubernetes is not None
    assert str(site.kubernetes.kubeconfig) == "/etc/kube/admin.conf"
    assert [(c.name, c.address) for c in site.controllers] == CONTROLLERS
    ctl1 = site.controllers[0]
    assert ctl1.galera is not None and ctl1.rabbitmq is not None
    assert ctl1.galera.target == "k8s://openstack/mariadb-server-0?container=mariadb"
    assert ctl1.galera.reach == "port-forward"  # a pod network
    assert (ctl1.galera.datadir, ctl1.galera.config) == ("/var/lib/mysql", "/etc/mysql/my.cnf")
    assert ctl1.galera.pidfile is None and ctl1.galera.start is None
    assert ctl1.rabbitmq.node == "rabbit@rabbitmq-rabbitmq-0.rabbitmq.openstack.svc.cluster.local"
    assert ctl1.rabbitmq.target == "k8s://openstack/rabbitmq-rabbitmq-0?container=rabbitmq"
    assert ctl1.rabbitmq.reach == "port-forward"
    assert ctl1.rabbitmq.management_port == 15672 and ctl1.rabbitmq.cli == ""
    galera, rabbit = site.cluster("galera"), site.cluster("rabbitmq")
    assert (galera.recovered_by, galera.platform, galera.namespace, galera.statefulset,
            galera.state_configmap) == ("platform", "openstack-helm", "openstack",
                                        "mariadb-server", "mariadb-mariadb-state")
    assert (rabbit.recovered_by, rabbit.platform, rabbit.statefulset) == (
        "platform", "openstack-helm", "rabbitmq-rabbitmq")
    assert [(c.name, c.address) for c in site.computes] == COMPUTES
    cmp1 = site.computes[0]
    assert cmp1.libvirt is not None
    assert cmp1.libvirt.uri == "qemu+tcp://192.0.2.21/system"
    # by its DaemonSet's selector and its node: a replaced pod (a new name) is still it
    assert cmp1.libvirt.container == ("k8s://openstack/?selector=application=libvirt,"
                                      "component=libvirt,release_group=libvirt&node=cmp1"
                                      "&container=libvirt")
    assert all(h.access is None for h in [*site.controllers, *site.computes])
    assert site.firewall == "host"
    assert says(found, "found", "StatefulSet openstack/mariadb-server", "openstack-helm",
                "recovered by the platform")
    assert says(found, "found", "nova-compute")
    assert says(found, "ignored", "Deployment openstack/mariadb-ingress", "component ingress")
    assert says(found, "note", "mariadb-server", "kill, freeze and power-off",
                "sent from its pod's node", "stop, wipe and fill-disk are refused")
    assert says(found, "note", "hosts", "partition", "refused")
    # where each secret is kept, named; the values never read
    assert says(found, "set", "CHAOS_DB_PASSWORD", "root",
                "Secret mariadb-dbadmin-password key MYSQL_DBADMIN_PASSWORD")
    assert says(found, "set", "CHAOS_RABBITMQ_PASSWORD", "Secret rabbitmq-admin-user")
    assert says(found, "set", "CHAOS_ERLANG_COOKIE", "plain value", "not copied")


def test_secrets_are_references_and_no_value_is_copied() -> None:
    found = classify(osh_objects(), Options(kubeconfig="/k"))
    text = yaml.safe_dump(found.inventory) + "\n".join(found.lines())
    assert COOKIE not in text
    assert found.inventory is not None
    assert found.inventory["credentials"] == {
        "db": {"user": "root", "password": {"env": "CHAOS_DB_PASSWORD"}},
        "rabbitmq": {"user": "guest", "password": {"env": "CHAOS_RABBITMQ_PASSWORD"}},
        "erlang_cookie": {"env": "CHAOS_ERLANG_COOKIE"}}
    # a variable named like a secret is never read, even as a plain value
    assert discover._env_value({"env": [{"name": "X_PASSWORD", "value": "v"}]},
                               "X_PASSWORD") is None


def test_access_local_marks_every_host_and_the_firewall() -> None:
    site = parsed(classify(osh_objects(), Options(kubeconfig="/k", access="local")))
    assert site.firewall == "local"
    assert {h.access for h in [*site.controllers, *site.computes]} == {"local"}


def test_openstack_helm_without_its_state_configmap_is_not_classified() -> None:
    snap = osh_objects()
    mariadb = copy.deepcopy(snap.statefulsets[0])
    mariadb["spec"]["template"]["spec"]["containers"][0]["env"] = [
        e for e in mariadb["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] != "STATE_CONFIGMAP"]
    snap = Snapshot(nodes=snap.nodes, pods=snap.pods, statefulsets=[mariadb,
                                                                    snap.statefulsets[1]],
                    daemonsets=snap.daemonsets)
    found = classify(snap, Options(kubeconfig="/k"))
    assert says(found, "not classified", "mariadb-server", discover.STATE_ANNOTATION)
    site = parsed(found)
    assert all(c.galera is None for c in site.controllers)
    assert "galera" not in site.clusters


def test_pending_pods_and_nodes_without_an_address_are_said() -> None:
    snap = osh_objects()
    pods = copy.deepcopy(snap.pods)
    pods[2]["spec"].pop("nodeName")  # mariadb-server-2 Pending
    found = classify(Snapshot(nodes=[], pods=pods, statefulsets=snap.statefulsets,
                              configmaps=snap.configmaps), Options(kubeconfig="/k"))
    assert says(found, "not classified", "mariadb-server-2", "Pending")
    site = parsed(found)
    # no node list (a namespaced user): the pods' hostIP gives the addresses
    assert [c.address for c in site.controllers] == [a for _, a in CONTROLLERS]
    assert site.controllers[2].galera is None and site.controllers[2].rabbitmq is not None


# -- the seed's topology ----------------------------------------------------------------


class _Lab:
    """What chaoslab.inventory.kube_inventory reads of a lab."""

    def __init__(self, root: Path) -> None:
        from chaoslab.kube import KubeLab
        from chaoslab.model import LabSecrets

        self.root = root
        self.inventory_file = root / "inventory.yaml"
        self.kube_inventory_file = root / "inventory-kube.yaml"
        self._secrets = LabSecrets("chaos", "db-secret-value", "chaos", "rabbit-secret-value",
                                   "cookie-secret-value")
        self._kube = KubeLab(root, self._secrets)

    def secrets(self) -> Any:
        return self._secrets

    def kube(self) -> Any:
        return self._kube


def seed_snapshot(lab: _Lab) -> tuple[Snapshot, dict[str, str]]:
    """The seed's objects, built by chaoslab.kubetopology as kube.py does (in this test
    only: the harness never imports the lab), their pods, and the files of the nodes
    (this machine's, in the lab) that discover may read with --access local."""
    from chaoslab import kubetopology

    kube = lab.kube()
    galera, rabbit, compute = kube.galera(), kube.rabbit(), kube.compute()
    names = [n.name for n in kube.controllers]
    scripts = lab.root / "scripts"
    objects = kubetopology.galera_objects(
        names, image="chaos-lab-base", scripts=scripts,
        node_dir={n: galera.node_dir(n) for n in names},
        config={n: galera.config_file(n) for n in names},
        pidfile={n: galera.pid_file(n) for n in names},
        log={n: galera.log_file(n) for n in names},
        socket={n: galera.socket_path(n) for n in names})
    objects += kubetopology.rabbitmq_objects(
        names, image="chaos-lab-base", scripts=scripts, root=rabbit.root,
        start={n: rabbit.start_command(n) for n in names},
        pidfile={n: rabbit.pidfile(n) for n in names},
        log={n: rabbit.log_file(n).parent / "server.out" for n in names},
        amqp_port=rabbit.amqp_port)
    for h in compute.hosts:
        objects += kubetopology.compute_objects(
            h.name, image="chaos-lab-base", scripts=scripts, home=compute.node_home(h.name),
            cgroup=compute.cgroup_name(h.name), uri=compute.libvirt_uri(h.name))
    nodes = [node(n.name, n.address) for n in kube.nodes]
    address = {n.name: n.address for n in kube.nodes}
    pods = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "DaemonSet"):
            on = obj["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/hostname"]
            owner = "ReplicaSet" if obj["kind"] == "Deployment" else "DaemonSet"
            pods.append(pod_of(obj, f"{obj['metadata']['name']}-7f9c-x2x", on, address[on],
                               owner=owner))
    files = {str(galera.config_file(n)): galera.config_text(n) for n in names}
    for n in names:
        files[str(rabbit.root / "nodes" / n / "node.env")] = "".join(
            f"{k}={shlex.quote(v)}\n" for k, v in rabbit.node_env(n).items())
    return Snapshot(
        nodes=nodes, pods=pods,
        deployments=[o for o in objects if o["kind"] == "Deployment"],
        daemonsets=[o for o in objects if o["kind"] == "DaemonSet"],
        services=[o for o in objects if o["kind"] == "Service"]), files


def test_seed_topology_gives_the_lab_kube_inventory(tmp_path: Path) -> None:
    """What discover writes for the seed's objects is what the lab writes for its kube
    tier (docker sections and credentials aside), so the same scenarios run on it."""
    from chaoslab.inventory import kube_inventory

    lab = _Lab(tmp_path)
    snap, files = seed_snapshot(lab)
    expected = inventory.parse(kube_inventory(lab))  # type: ignore[arg-type]
    found = classify(snap, Options(kubeconfig=str(lab.kube().kubeconfig), access="local",
                                   name="lab-kube", read_local=files.get))
    site = parsed(found)
    assert site.controllers == expected.controllers
    assert [c.model_copy(update={"docker": None}) for c in expected.computes] == site.computes
    assert (site.kind, site.firewall, site.kubernetes) == (
        expected.kind, expected.firewall, expected.kubernetes)
    assert site.clusters == {}  # the harness recovers the seed's
    assert site.cluster("galera").recovered_by == "harness"
    assert says(found, "found", "Deployment openstack/galera-ctl1", "seed",
                "recovered by the harness")
    assert says(found, "note", "computes", "kill-docker is refused")
    assert says(found, "note", "galera-ctl1", "/usr/sbin/mariadbd --defaults-file=")
    assert not says(found, "not classified")
    text = yaml.safe_dump(found.inventory) + "\n".join(found.lines())
    for secret in ("db-secret-value", "rabbit-secret-value", "cookie-secret-value"):
        assert secret not in text


def test_seed_without_local_files_leaves_galera_out_and_says_why(tmp_path: Path) -> None:
    lab = _Lab(tmp_path)
    snap, _ = seed_snapshot(lab)
    found = classify(snap, Options(kubeconfig="/k"))
    site = parsed(found)
    assert all(c.galera is None for c in site.controllers)
    assert says(found, "not classified", "galera-ctl1", "data directory",
                "--access local")
    ctl1 = site.controllers[0]
    assert ctl1.rabbitmq is not None
    assert ctl1.rabbitmq.pidfile and ctl1.rabbitmq.start  # the supervisor's arguments
    assert ctl1.rabbitmq.node == "rabbit@ctl1" and ctl1.rabbitmq.data_dir is None
    assert says(found, "note", "rabbitmq-ctl1", "data_dir not shown", "wipe and fill-disk")


def test_seed_without_the_supervisor_says_which_faults_are_refused(tmp_path: Path) -> None:
    lab = _Lab(tmp_path)
    snap, files = seed_snapshot(lab)
    deployments = copy.deepcopy(snap.deployments)
    for d in deployments:
        if d["metadata"]["name"] == "rabbitmq-ctl2":
            d["spec"]["template"]["spec"]["containers"][0]["command"] = ["rabbitmq-server"]
    found = classify(Snapshot(nodes=snap.nodes, pods=snap.pods, deployments=deployments,
                              daemonsets=snap.daemonsets, services=snap.services),
                     Options(kubeconfig="/k", access="local", read_local=files.get))
    site = parsed(found)
    ctl2 = site.controllers[1]
    assert ctl2.rabbitmq is not None and ctl2.rabbitmq.pidfile is None
    assert ctl2.rabbitmq.target == ("k8s://openstack/?selector=app=rabbitmq,node=ctl2"
                                    "&container=rabbitmq")
    assert says(found, "note", "rabbitmq-ctl2", "pidfile, start", "kill, stop, freeze")


def test_the_labs_openstack_helm_shape_is_recognised(tmp_path: Path) -> None:
    """The lab's openstack-helm objects (chaoslab.osh, built in this test only): the
    RabbitMQ StatefulSet on the pod network, a libvirt and a nova-compute DaemonSet per
    compute under the charts' labels."""
    from chaoslab import kubetopology, osh

    lab = _Lab(tmp_path)
    kube = lab.kube()
    compute = kube.compute()
    controllers = [(n.name, n.address) for n in kube.controllers]
    objects = osh.rabbitmq_objects(
        nodes=[n for n, _ in controllers], volumes=tmp_path / "volumes",
        address={f"{sts}-{i}": f"10.96.0.{10 + 3 * j + i}" for i in range(3)
                 for j, sts in enumerate((osh.MARIADB_STS, osh.RABBIT_STS))},
        gateway="10.96.0.1", user="chaos", password="rabbit-secret-value",
        cookie="cookie-secret-value")
    for h in compute.hosts:
        objects += osh.compute_objects(kubetopology.compute_objects(
            h.name, image="chaos-lab-base", scripts=tmp_path / "scripts",
            home=compute.node_home(h.name), cgroup=compute.cgroup_name(h.name),
            uri=compute.libvirt_uri(h.name)), h.name)
    sts = next(o for o in objects if o["kind"] == "StatefulSet")
    daemonsets = [o for o in objects if o["kind"] == "DaemonSet"]
    pods = [pod_of(sts, f"rabbitmq-rabbitmq-{i}", n, a) for i, (n, a) in
            enumerate(controllers)]
    for ds in daemonsets:
        on = ds["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/hostname"]
        pods.append(pod_of(ds, f"{ds['metadata']['name']}-x7k2p", on, "127.0.1.21"))
    found = classify(Snapshot(nodes=[node(n.name, n.address) for n in kube.nodes],
                              pods=pods, statefulsets=[sts], daemonsets=daemonsets,
                              services=[o for o in objects if o["kind"] == "Service"]),
                     Options(kubeconfig="/k", access="local"))
    site = parsed(found)
    ctl1 = site.controllers[0]
    assert ctl1.rabbitmq is not None and ctl1.galera is None
    assert ctl1.rabbitmq.node == "rabbit@rabbitmq-rabbitmq-0.rabbitmq.openstack.svc.cluster.local"
    assert ctl1.rabbitmq.reach == "port-forward"
    assert site.cluster("rabbitmq").platform == "openstack-helm"
    assert [c.name for c in site.computes] == [h.name for h in compute.hosts]
    cmp1 = site.computes[0]
    assert cmp1.libvirt is not None and cmp1.libvirt.uri == compute.libvirt_uri("cmp1")
    assert cmp1.libvirt.container == ("k8s://openstack/?selector=application=libvirt,"
                                      "component=libvirt,node=cmp1,release_group=libvirt"
                                      "&node=cmp1&container=libvirt")
    assert says(found, "found", "nova-compute")
    assert says(found, "set", "CHAOS_ERLANG_COOKIE",
                "Secret rabbitmq-erlang-cookie key erlang_cookie")
    text = yaml.safe_dump(found.inventory) + "\n".join(found.lines())
    assert "cookie-secret-value" not in text and "rabbit-secret-value" not in text


# -- operators -------------------------------------------------------------------------


def operator_objects() -> Snapshot:
    mariadb = workload("StatefulSet", "mariadb-galera", {
        "app.kubernetes.io/name": "mariadb", "app.kubernetes.io/instance": "mariadb-galera"}, {
        "containers": [
            {"name": "mariadb", "image": "docker-registry1.mariadb.com/library/mariadb:11.4",
             "env": [{"name": "MARIADB_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {
                 "name": "mariadb-root", "key": "password"}}}],
             "ports": [{"name": "mariadb", "containerPort": 3306},
                       {"name": "cluster", "containerPort": 4567}],
             "volumeMounts": [{"name": "storage", "mountPath": "/var/lib/mysql"}]},
            {"name": "agent", "image": "mariadb-operator", "args": ["agent"]}]},
        ns="db", volumeClaimTemplates=[{"metadata": {"name": "storage"}}])
    rabbit = workload("StatefulSet", "hello-server", {
        "app.kubernetes.io/name": "hello", "app.kubernetes.io/component": "rabbitmq",
        "app.kubernetes.io/part-of": "rabbitmq"}, {
        "containers": [{
            "name": "rabbitmq", "image": "rabbitmq:3.13-management",
            "env": [{"name": "MY_POD_NAME", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.name"}}},
                {"name": "MY_POD_NAMESPACE", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.namespace"}}},
                {"name": "K8S_SERVICE_NAME", "value": "hello-nodes"},
                {"name": "RABBITMQ_NODENAME",
                 "value": "rabbit@$(MY_POD_NAME).$(K8S_SERVICE_NAME).$(MY_POD_NAMESPACE)"}],
            "ports": [{"name": "amqp", "containerPort": 5672},
                      {"name": "management", "containerPort": 15672}]}]},
        ns="mq", selector={"app.kubernetes.io/name": "hello"}, serviceName="hello-nodes")
    pods = [pod_of(mariadb, f"mariadb-galera-{i}", n, a) for i, (n, a) in
            enumerate(CONTROLLERS)]
    pods += [pod_of(rabbit, f"hello-server-{i}", n, a) for i, (n, a) in enumerate(CONTROLLERS)]
    return Snapshot(nodes=NODES, pods=pods, statefulsets=[mariadb, rabbit])


def test_operators_are_platform_clusters() -> None:
    found = classify(operator_objects(), Options(kubeconfig="/k"))
    site = parsed(found)
    ctl2 = site.controllers[1]
    assert ctl2.galera is not None and ctl2.rabbitmq is not None
    assert ctl2.galera.target == "k8s://db/mariadb-galera-1?container=mariadb"
    assert ctl2.galera.datadir == "/var/lib/mysql" and ctl2.galera.reach == "port-forward"
    assert ctl2.rabbitmq.node == "rabbit@hello-server-1.hello-nodes.mq"
    assert ctl2.rabbitmq.target == "k8s://mq/hello-server-1?container=rabbitmq"
    assert site.cluster("galera").model_dump(exclude_defaults=True) == {
        "recovered_by": "platform", "platform": "mariadb-operator", "namespace": "db",
        "statefulset": "mariadb-galera"}
    assert site.cluster("rabbitmq").model_dump(exclude_defaults=True) == {
        "recovered_by": "platform", "platform": "rabbitmq-operator", "namespace": "mq",
        "statefulset": "hello-server"}
    assert says(found, "set", "CHAOS_DB_PASSWORD", "db: Secret mariadb-root key password")
    assert says(found, "set", "CHAOS_ERLANG_COOKIE", "mq: Secret hello-erlang-cookie")
    assert says(found, "set", "CHAOS_RABBITMQ_PASSWORD", "hello-default-user")


def test_mariadb_operator_without_galera_is_not_classified() -> None:
    snap = operator_objects()
    mariadb = copy.deepcopy(snap.statefulsets[0])
    spec = mariadb["spec"]["template"]["spec"]
    spec["containers"] = spec["containers"][:1]
    spec["containers"][0]["ports"] = spec["containers"][0]["ports"][:1]
    found = classify(Snapshot(nodes=snap.nodes, pods=snap.pods,
                              statefulsets=[mariadb, snap.statefulsets[1]]),
                     Options(kubeconfig="/k"))
    assert says(found, "not classified", "StatefulSet db/mariadb-galera", "without Galera")
    assert all(c.galera is None for c in parsed(found).controllers)


# -- what is not classified --------------------------------------------------------------


def test_lookalikes_are_reported_with_reasons() -> None:
    snap = osh_objects()
    legacy = workload("Deployment", "legacy-db", {"app": "legacy"}, {
        "containers": [{"name": "db", "image": "mysql:8.0"}]}, ns="apps")
    pxc = workload("StatefulSet", "cluster1-pxc", {
        "app.kubernetes.io/name": "percona-xtradb-cluster"}, {
        "containers": [{"name": "pxc", "image": "percona/percona-xtradb-cluster:8.0"}]},
        ns="apps")
    unpinned = workload("Deployment", "galera-ctl9", {"app": "galera", "node": "ctl9"}, {
        "containers": [{"name": "mariadb", "image": "chaos-lab-base"}]})
    bare = {"kind": "Pod", "metadata": {"name": "debug-rabbit", "namespace": "apps"},
            "spec": {"nodeName": "ctl1", "containers": [{"name": "r",
                                                         "image": "rabbitmq:3"}]},
            "status": {"phase": "Running"}}
    operator = workload("Deployment", "rabbitmq-cluster-operator", {
        "app.kubernetes.io/name": "rabbitmq-cluster-operator"}, {
        "containers": [{"name": "operator", "image": "rabbitmqoperator/cluster-operator"}]},
        ns="apps")
    exporter = workload("Deployment", "prometheus-mysql-exporter", {
        "application": "prometheus-mysql-exporter", "component": "exporter"}, {
        "containers": [{"name": "exporter", "image": "prom/mysqld-exporter"}]})
    web = workload("Deployment", "web", {"app": "web"}, {
        "containers": [{"name": "nginx", "image": "nginx"}]}, ns="apps")
    found = classify(Snapshot(
        nodes=snap.nodes, pods=[*snap.pods, bare], statefulsets=[*snap.statefulsets, pxc],
        deployments=[legacy, unpinned, web, operator, exporter], daemonsets=snap.daemonsets,
        configmaps=snap.configmaps), Options(kubeconfig="/k"))
    assert says(found, "not classified", "Deployment apps/legacy-db", "a database",
                "image mysql:8.0", "application=mariadb,component=server")
    assert says(found, "not classified", "StatefulSet apps/cluster1-pxc", "a database")
    assert says(found, "not classified", "Deployment openstack/galera-ctl9",
                "not pinned to a node")
    assert says(found, "not classified", "pod apps/debug-rabbit", "a message broker",
                "no owner")
    assert not [line for line in found.lines() if "apps/web" in line]
    assert says(found, "ignored", "apps/rabbitmq-cluster-operator", "an operator")
    assert says(found, "ignored", "openstack/prometheus-mysql-exporter", "exporter")
    parsed(found)  # the rest still makes a valid inventory


def test_a_second_cluster_of_one_service_is_left_out() -> None:
    osh, ops = osh_objects(), operator_objects()
    found = classify(Snapshot(nodes=NODES, pods=[*osh.pods, *ops.pods],
                              statefulsets=[*osh.statefulsets, *ops.statefulsets],
                              configmaps=osh.configmaps), Options(kubeconfig="/k"))
    assert says(found, "not classified", "db/mariadb-galera", "a second galera cluster",
                "--namespace")
    assert parsed(found).cluster("galera").platform == "openstack-helm"


def test_nothing_found_writes_nothing() -> None:
    found = classify(Snapshot(nodes=NODES), Options(kubeconfig="/k"))
    assert found.inventory is None
    assert says(found, "note", "nothing written")


def test_node_names_become_inventory_names() -> None:
    assert discover.host_name("ip-10-0-0-1.ec2.internal") == "ip-10-0-0-1-ec2-internal"
    assert discover.host_name("1node") == "n1node"


# -- the command, against a fake API server ------------------------------------------------


class FakeApi(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, str]]] = []
    objects: ClassVar[Snapshot] = Snapshot()

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.calls.append(("GET", self.path))
        snap = FakeApi.objects
        lists = {
            "/api/v1/nodes": snap.nodes,
            "/api/v1/namespaces/openstack/pods": snap.pods,
            "/apis/apps/v1/namespaces/openstack/statefulsets": snap.statefulsets,
            "/apis/apps/v1/namespaces/openstack/deployments": snap.deployments,
            "/apis/apps/v1/namespaces/openstack/daemonsets": snap.daemonsets,
            "/api/v1/namespaces/openstack/services": snap.services,
            "/api/v1/namespaces/openstack/configmaps": snap.configmaps,
        }
        if path == "/api/v1/namespaces/openstack":
            self._reply(200, {"kind": "Namespace", "metadata": {"name": "openstack"}})
        elif path in lists:
            self._reply(200, {"kind": "List", "metadata": {}, "items": lists[path]})
        else:
            self._reply(404, {"kind": "Status", "status": "Failure", "reason": "NotFound",
                              "code": 404})

    def _refuse(self) -> None:
        self.calls.append((self.command, self.path))
        self._reply(405, {"kind": "Status", "status": "Failure", "code": 405})

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse


@pytest.fixture
def api() -> Iterator[str]:
    FakeApi.calls = []
    FakeApi.objects = osh_objects()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "kube-token-value"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}]}))
    return path


def test_fake_apiserver_discover_writes_a_valid_inventory_and_only_reads(
        api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "site.yaml"
    code = main(["inventory", "discover", "--kubeconfig", str(kubeconfig(tmp_path, api)),
                 "--namespace", "openstack", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    site = inventory.load(out)
    assert site.cluster("galera").platform == "openstack-helm"
    assert [c.name for c in site.controllers] == ["ctl1", "ctl2", "ctl3"]
    assert "found: StatefulSet openstack/mariadb-server" in err
    assert "set: CHAOS_DB_PASSWORD" in err
    text = out.read_text()
    assert COOKIE not in text and "kube-token-value" not in text
    assert text.startswith("# discovered by `chaos inventory discover`")
    assert {m for m, _ in FakeApi.calls} == {"GET"}
    assert not [p for _, p in FakeApi.calls if "secret" in p]
    assert main(["inventory", "check", str(out)]) == 0


def test_fake_apiserver_discover_to_stdout(api: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inventory", "discover", "--kubeconfig", str(kubeconfig(tmp_path, api)),
                 "--namespace", "openstack", "--access", "local"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert inventory.parse(data).firewall == "local"


def test_fake_apiserver_unknown_namespace_is_bad_input(
        api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["inventory", "discover", "--kubeconfig", str(kubeconfig(tmp_path, api)),
                 "--namespace", "ghost"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "namespace 'ghost' does not exist" in err


def test_unreachable_api_server_is_exit_3(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["inventory", "discover", "--kubeconfig",
                 str(kubeconfig(tmp_path, "http://127.0.0.1:9"))])
    err = capsys.readouterr().err
    assert code == 3
    assert err.strip().count("\n") == 0 and "cannot be reached" in err


def test_missing_or_bad_kubeconfig_is_exit_2(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inventory", "discover", "--kubeconfig", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = kubeconfig(tmp_path, "http://127.0.0.1:9")
    assert main(["inventory", "discover", "--kubeconfig", str(bad), "--context", "other"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "other" in err


def test_discover_needs_a_kubeconfig(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["inventory", "discover"])
    assert info.value.code == 2
