"""An openstack-helm-shaped site on the lab's Kubernetes tier (``--platform openstack-helm``).

Written from the public charts (openstack-helm's ``mariadb``, ``rabbitmq``, ``libvirt`` and
``nova``), faithful to them where it matters to failures, not to what suits the harness;
docs/OSH-MARIADB.md lists the MariaDB start script's states and every timing kept or
changed, and :data:`DEPARTURES` says where the lab differs and why.

* MariaDB: StatefulSet ``mariadb-server`` (3 replicas, ``podManagementPolicy:
  Parallel``, labels ``application=mariadb, component=server``, container ``mariadb``),
  headless Service ``mariadb-discovery`` for ``gcomm://``, Service ``mariadb-server``,
  data on a PVC at /var/lib/mysql; the container's process is the start script
  (``chaoslab/pods/osh_mariadb_start.py``) with mariadbd its child, keeping the
  cluster's state in the ConfigMap ``mariadb-mariadb-state``.
* RabbitMQ: StatefulSet ``rabbitmq-rabbitmq`` (labels ``application=rabbitmq,
  component=server``), headless Service ``rabbitmq``, long Erlang names
  ``rabbit@<pod>.rabbitmq.openstack.svc.cluster.local``, Kubernetes peer discovery,
  ``cluster_partition_handling = autoheal``, data on a PVC at /var/lib/rabbitmq.
* libvirt: a DaemonSet with hostPID, host network and host IPC whose libvirtd moves into
  a cgroup of its own; nova-compute: a DaemonSet with hostPID reaching libvirt through
  the host's /run (the lab's stand-in holds the connection nova-compute's driver would).

Galera and RabbitMQ pods run on the lab's pod network (``chaoslab.podnet``); their PVs
are ``local`` volumes the lab creates, one per node, bound to their claims up front.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaoslab.kubetopology import NAMESPACE, daemonset

MARIADB_RELEASE = "mariadb"
MARIADB_STS = "mariadb-server"
MARIADB_DISCOVERY = "mariadb-discovery"
STATE_CONFIGMAP = f"{MARIADB_RELEASE}-mariadb-state"
RABBIT_RELEASE = "rabbitmq"
RABBIT_STS = f"{RABBIT_RELEASE}-rabbitmq"
# the chart's oslo_messaging internal host: the StatefulSet's serviceName
RABBIT_SERVICE = "rabbitmq"
STORAGE_CLASS = "general"  # the charts' volume.class_name
CLUSTER_DOMAIN = "cluster.local"
REPLICAS = 3
API_HOST_NAMES = ["kubernetes.default.svc.cluster.local", "kubernetes.default.svc",
                  "kubernetes.default", "kubernetes"]

# where the lab differs from the charts, and why (docs list these too)
DEPARTURES = {
    "runs as root": "the charts run mysqld and rabbitmq as uid 999; the lab's pods "
                    "mount the host's /usr and run Debian's binaries as root, as the process "
                    "lab does",
    "no cluster DNS": "discovery names resolve through each pod's hostAliases (addresses "
                      "are stable per pod name on the lab's pod network), not kube-dns",
    "API at the pod network's gateway": "KUBERNETES_SERVICE_HOST is the relay at the pod "
                                        "network's gateway, not a ClusterIP (no kube-proxy)",
    "readiness of RabbitMQ": "a connect to the AMQP port every 10 s, not the chart's "
                             "rabbitmqctl calls (1-4 s of CPU each on 2 cores)",
    "replicas": "3 of each (the rabbitmq chart's default is 2), the seed's three "
                "controllers",
}


def pod_fqdn(pod: str, service: str) -> str:
    return f"{pod}.{service}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"


def pod_names(sts: str) -> list[str]:
    return [f"{sts}-{i}" for i in range(REPLICAS)]


def address_plan() -> dict[str, int]:
    """Pod → last octet on the pod network (stable, so hostAliases can name them)."""
    plan = {f"{NAMESPACE}/{p}": 11 + i for i, p in enumerate(pod_names(MARIADB_STS))}
    plan |= {f"{NAMESPACE}/{p}": 21 + i for i, p in enumerate(pod_names(RABBIT_STS))}
    return plan


def host_aliases(address: dict[str, str], gateway: str) -> list[dict[str, Any]]:
    """What cluster DNS would answer for the discovery names and the API's name."""
    aliases = [{"ip": gateway, "hostnames": API_HOST_NAMES}]
    for sts, service in ((MARIADB_STS, MARIADB_DISCOVERY), (RABBIT_STS, RABBIT_SERVICE)):
        for pod in pod_names(sts):
            aliases.append({"ip": address[pod],
                            "hostnames": [pod_fqdn(pod, service),
                                          f"{pod}.{service}.{NAMESPACE}.svc",
                                          f"{pod}.{service}.{NAMESPACE}", f"{pod}.{service}"]})
    return aliases


def labels(application: str, component: str, release: str) -> dict[str, str]:
    """helm-toolkit's kubernetes_metadata_labels."""
    return {"release_group": release, "application": application, "component": component}


def rbac(name: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding, as helm-toolkit's pod RBAC snippet makes them."""
    meta = {"name": name, "namespace": NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": dict(meta),
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": dict(meta),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]},
    ]


def local_volumes(claim: str, sts: str, nodes: list[str], root: Path,
                  size: str) -> list[dict[str, Any]]:
    """One ``local`` PV per replica on its own node, bound to the StatefulSet's claim
    for that replica up front (``claimRef``): replica i's data lives on node i."""
    volumes = []
    for i, node in enumerate(nodes):
        pod = f"{sts}-{i}"
        volumes.append({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"{claim}-{pod}", "labels": {"chaos.lab/volume": claim}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": STORAGE_CLASS,
                "local": {"path": str(root / f"{claim}-{pod}")},
                "claimRef": {"namespace": NAMESPACE, "name": f"{claim}-{pod}"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            },
        })
    return volumes


def storage_class() -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer"}


def _host_mounts() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The lab's pods run the host's binaries: its /usr and /etc, read-only."""
    volumes = [{"name": "host-usr", "hostPath": {"path": "/usr"}},
               {"name": "host-etc", "hostPath": {"path": "/etc"}}]
    mounts = [{"name": "host-usr", "mountPath": "/usr", "readOnly": True},
              {"name": "host-etc", "mountPath": "/etc", "readOnly": True}]
    return volumes, mounts


def _api_env(gateway: str) -> list[dict[str, Any]]:
    return [{"name": "KUBERNETES_SERVICE_HOST", "value": gateway},
            {"name": "KUBERNETES_SERVICE_PORT", "value": "443"}]


def _anti_affinity(pod_labels: dict[str, str]) -> dict[str, Any]:
    """helm-toolkit's pod anti-affinity (preferred, weight 10, per hostname)."""
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 10, "podAffinityTerm": {
            "labelSelector": {"matchExpressions": [
                {"key": k, "operator": "In", "values": [v]} for k, v in pod_labels.items()]},
            "topologyKey": "kubernetes.io/hostname"}}]}}


def statefulset(name: str, service: str, pod_labels: dict[str, str], pod_spec: dict[str, Any],
                claim: str, size: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(pod_labels)},
        "spec": {
            "serviceName": service, "replicas": REPLICAS, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": dict(pod_labels)},
            "template": {"metadata": {"labels": dict(pod_labels)}, "spec": pod_spec},
            "volumeClaimTemplates": [{
                "metadata": {"name": claim},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": STORAGE_CLASS,
                         "resources": {"requests": {"storage": size}}}}],
        },
    }


def service(name: str, selector: dict[str, str], ports: dict[str, int], *,
            publish_not_ready: bool = False) -> dict[str, Any]:
    """Headless, as every lab Service (no virtual IP, no kube-proxy)."""
    spec: dict[str, Any] = {"clusterIP": "None", "selector": dict(selector),
                            "ports": [{"name": k, "port": v} for k, v in ports.items()]}
    if publish_not_ready:
        spec["publishNotReadyAddresses"] = True
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NAMESPACE}, "data": dict(data)}


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": NAMESPACE}, "stringData": dict(data)}


# -- RabbitMQ -----------------------------------------------------------------------------

RABBIT_CONF = """\
# rabbitmq.conf of the lab's openstack-helm shape (chaoslab.osh), after the chart's
# values (conf.rabbitmq)
listeners.tcp.1 = 0.0.0.0:5672
management.listener.port = 15672
management.listener.ip = 0.0.0.0
cluster_formation.peer_discovery_backend = rabbit_peer_discovery_k8s
cluster_formation.k8s.address_type = hostname
cluster_formation.k8s.service_name = {service}
cluster_formation.k8s.hostname_suffix = .{suffix}
cluster_formation.node_cleanup.interval = 10
cluster_formation.node_cleanup.only_log_warning = true
cluster_partition_handling = autoheal
queue_master_locator = min-masters
loopback_users.guest = false
"""
# the admin user: a Secret's, beside the ConfigMap's settings (conf.d)
RABBIT_ADMIN_CONF = """\
default_user = {user}
default_pass = {password}
"""

RABBIT_START = """#!/bin/sh
# The rabbitmq container's start (chaoslab.osh): the chart's image entrypoint sets the
# cookie from RABBITMQ_ERLANG_COOKIE and execs rabbitmq-server; Debian's server is run
# here as the process lab runs it (as root, HOME holding the cookie).
set -e
export HOME=/var/lib/rabbitmq
umask 077
cp /var/run/lib/rabbitmq/.erlang.cookie "$HOME/.erlang.cookie"
chmod 400 "$HOME/.erlang.cookie"
export RABBITMQ_MNESIA_BASE=/var/lib/rabbitmq/mnesia RABBITMQ_LOG_BASE=/var/lib/rabbitmq/log
export RABBITMQ_CONFIG_FILE=/etc/rabbitmq/rabbitmq.conf
export RABBITMQ_CONFIG_FILES=/etc/rabbitmq/conf.d
export RABBITMQ_ENABLED_PLUGINS_FILE=/etc/rabbitmq/enabled_plugins
export RABBITMQ_PID_FILE=/var/lib/rabbitmq/rabbitmq.pid
export RABBITMQ_CONF_ENV_FILE=/dev/null
mkdir -p "$RABBITMQ_LOG_BASE"
exec /usr/lib/rabbitmq/bin/rabbitmq-server
"""

PORT_READY = """#!/usr/bin/python3
# readiness of a pod-network pod (chaoslab.osh): its port answers on the pod's own
# loopback (the kubelet's TCP probes come from the host, which has no route here)
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), 3).close()
"""


def rabbitmq_objects(*, nodes: list[str], volumes: Path, address: dict[str, str],
                     gateway: str, user: str, password: str,
                     cookie: str) -> list[dict[str, Any]]:
    pod_labels = labels("rabbitmq", "server", RABBIT_RELEASE)
    suffix = f"{RABBIT_SERVICE}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"
    host_volumes, host_mounts = _host_mounts()
    pod_spec: dict[str, Any] = {
        "serviceAccountName": RABBIT_STS,
        "affinity": _anti_affinity(pod_labels),
        "nodeSelector": {"openstack-control-plane": "enabled"},
        "hostAliases": host_aliases(address, gateway),
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "containers": [{
            "name": "rabbitmq", "image": "chaos/base:lab", "imagePullPolicy": "Never",
            "command": ["/tmp/rabbitmq-start.sh"],
            "env": [
                {"name": "MY_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "RABBITMQ_USE_LONGNAME", "value": "true"},
                {"name": "RABBITMQ_NODENAME", "value": f"rabbit@$(MY_POD_NAME).{suffix}"},
                {"name": "K8S_SERVICE_NAME", "value": RABBIT_SERVICE},
                {"name": "K8S_HOSTNAME_SUFFIX", "value": f".{suffix}"},
                *_api_env(gateway),
            ],
            "ports": [{"name": "amqp", "containerPort": 5672},
                      {"name": "clustering", "containerPort": 25672},
                      {"name": "http", "containerPort": 15672}],
            "readinessProbe": {"exec": {"command": ["/tmp/port-ready", "5672"]},
                               "initialDelaySeconds": 10, "periodSeconds": 10,
                               "timeoutSeconds": 10, "failureThreshold": 3},
            "volumeMounts": [
                *host_mounts,
                {"name": "pod-tmp", "mountPath": "/tmp"},
                {"name": "rabbitmq-data", "mountPath": "/var/lib/rabbitmq"},
                {"name": "rabbitmq-bin", "mountPath": "/tmp/rabbitmq-start.sh",
                 "subPath": "rabbitmq-start.sh", "readOnly": True},
                {"name": "rabbitmq-bin", "mountPath": "/tmp/port-ready",
                 "subPath": "port-ready", "readOnly": True},
                {"name": "rabbitmq-etc", "mountPath": "/etc/rabbitmq", "readOnly": True},
                {"name": "rabbitmq-erlang-cookie", "mountPath": "/var/run/lib/rabbitmq",
                 "readOnly": True},
            ],
        }],
        "volumes": [
            *host_volumes,
            {"name": "pod-tmp", "emptyDir": {}},
            {"name": "rabbitmq-bin", "configMap": {"name": f"{RABBIT_RELEASE}-rabbitmq-bin",
                                                   "defaultMode": 0o555}},
            {"name": "rabbitmq-etc", "projected": {"defaultMode": 0o444, "sources": [
                {"configMap": {"name": f"{RABBIT_RELEASE}-rabbitmq-etc"}},
                {"secret": {"name": f"{RABBIT_RELEASE}-admin-user", "items": [
                    {"key": "admin.conf", "path": "conf.d/10-admin.conf"}]}}]}},
            {"name": "rabbitmq-erlang-cookie", "secret": {
                "secretName": f"{RABBIT_RELEASE}-erlang-cookie", "defaultMode": 0o444,
                "items": [{"key": "erlang_cookie", "path": ".erlang.cookie"}]}},
        ],
    }
    return [
        *rbac(RABBIT_STS, [{"apiGroups": [""], "resources": ["services", "endpoints"],
                            "verbs": ["get", "list"]}]),
        secret(f"{RABBIT_RELEASE}-erlang-cookie", {"erlang_cookie": cookie}),
        secret(f"{RABBIT_RELEASE}-admin-user", {"admin.conf": RABBIT_ADMIN_CONF.format(
            user=user, password=password)}),
        configmap(f"{RABBIT_RELEASE}-rabbitmq-bin", {"rabbitmq-start.sh": RABBIT_START,
                                                     "port-ready": PORT_READY}),
        configmap(f"{RABBIT_RELEASE}-rabbitmq-etc", {
            "rabbitmq.conf": RABBIT_CONF.format(service=RABBIT_SERVICE, suffix=suffix),
            "enabled_plugins": "[rabbitmq_management,rabbitmq_peer_discovery_k8s].\n"}),
        service(RABBIT_SERVICE, pod_labels, {"amqp": 5672, "clustering": 25672, "http": 15672},
                publish_not_ready=True),
        *local_volumes("rabbitmq-data", RABBIT_STS, nodes, volumes, "768Mi"),
        statefulset(RABBIT_STS, RABBIT_SERVICE, pod_labels, pod_spec, "rabbitmq-data", "768Mi"),
    ]


# -- libvirt and nova-compute -----------------------------------------------------------------

def compute_objects(seed_objects: list[dict[str, Any]], node: str) -> list[dict[str, Any]]:
    """The seed's libvirt and nova-compute DaemonSets (chaoslab.kubetopology: hostPID,
    host network, libvirtd in a cgroup of its own), under the charts' names and labels."""
    renamed = []
    for obj in seed_objects:
        app = obj["metadata"]["labels"]["app"]
        application, component = (("libvirt", "libvirt") if app == "libvirt"
                                  else ("nova", "compute"))
        pod_labels = {**labels(application, component, application), "node": node}
        spec = obj["spec"]["template"]["spec"]
        if application == "libvirt":
            spec["hostIPC"] = True
        renamed.append(daemonset(f"{application}-{component}-{node}", pod_labels, spec))
    return renamed


# kind -> (API class, its create method, namespaced)
_CREATE = {
    "ServiceAccount": ("CoreV1Api", "create_namespaced_service_account", True),
    "Secret": ("CoreV1Api", "create_namespaced_secret", True),
    "ConfigMap": ("CoreV1Api", "create_namespaced_config_map", True),
    "Service": ("CoreV1Api", "create_namespaced_service", True),
    "PersistentVolume": ("CoreV1Api", "create_persistent_volume", False),
    "Role": ("RbacAuthorizationV1Api", "create_namespaced_role", True),
    "RoleBinding": ("RbacAuthorizationV1Api", "create_namespaced_role_binding", True),
    "StorageClass": ("StorageV1Api", "create_storage_class", False),
    "StatefulSet": ("AppsV1Api", "create_namespaced_stateful_set", True),
    "DaemonSet": ("AppsV1Api", "create_namespaced_daemon_set", True),
}


def apply(api: Any, objects: list[dict[str, Any]]) -> None:
    """Create every object (the lab starts from nothing)."""
    from kubernetes import client

    for obj in objects:
        if obj["kind"] not in _CREATE:
            raise ValueError(f"unexpected kind {obj['kind']}")
        cls, method, namespaced = _CREATE[obj["kind"]]
        create = getattr(getattr(client, cls)(api), method)
        args = (NAMESPACE, obj) if namespaced else (obj,)
        create(*args, _request_timeout=10)


# -- MariaDB ------------------------------------------------------------------------------

MARIADB_SA = "mariadb"
MARIADB_PORTS = {"mysql": 3306, "wsrep": 4567, "ist": 4568, "sst": 4444}

# my.cnf after the chart's (templates/etc/_my.cnf.tpl, _00-base.cnf.tpl,
# _20-override.cnf.tpl), with the lab's departures: rsync SST (mariabackup is not
# installed), a small buffer pool, and the process lab's faster failure detector
MARIADB_CNF = """\
# my.cnf of the lab's openstack-helm shape (chaoslab.osh)
[mysqld]
datadir = /var/lib/mysql
basedir = /usr
user = mysql
socket = /var/run/mysqld/mysqld.sock
bind_address = 0.0.0.0
port = 3306
skip_name_resolve = 1
binlog_format = ROW
default_storage_engine = InnoDB
innodb_autoinc_lock_mode = 2
# the chart's value: each commit reaches the OS at once, the disk within a second
innodb_flush_log_at_trx_commit = 2
innodb_buffer_pool_size = 32M
innodb_log_file_size = 16M
performance_schema = OFF
max_connections = 200
wsrep_on = 1
wsrep_provider = /usr/lib/galera/libgalera_smm.so
wsrep_cluster_name = openstack
wsrep_sst_method = rsync
wsrep_slave_threads = 2
wsrep_provider_options = "gmcast.listen_addr=tcp://0.0.0.0:4567; {provider}"

[client]
socket = /var/run/mysqld/mysqld.sock

!includedir /etc/mysql/conf.d/
"""


def mariadb_objects(*, nodes: list[str], volumes: Path, address: dict[str, str],
                    gateway: str, start_script: str, admin_user: str, admin_password: str,
                    provider_options: str, update_period: float | None = None,
                    default_sleep: float | None = None) -> list[dict[str, Any]]:
    """The ``mariadb-server`` StatefulSet and what it needs: its RBAC (the state
    ConfigMap and the endpoints of its Services), its secrets, my.cnf, the start script
    as the chart ships it (a ConfigMap at /tmp/start.py), the discovery and direct
    Services, and local volumes."""
    pod_labels = labels("mariadb", "server", MARIADB_RELEASE)
    host_volumes, host_mounts = _host_mounts()
    secret_env = [
        {"name": "MYSQL_DBADMIN_PASSWORD", "valueFrom": {"secretKeyRef": {
            "name": "mariadb-dbadmin-password", "key": "MYSQL_DBADMIN_PASSWORD"}}},
        {"name": "MYSQL_DBSST_PASSWORD", "valueFrom": {"secretKeyRef": {
            "name": "mariadb-dbsst-password", "key": "MYSQL_DBSST_PASSWORD"}}},
    ]
    timings = []
    if update_period is not None:
        timings.append({"name": "OSH_STATE_UPDATE_PERIOD", "value": str(update_period)})
    if default_sleep is not None:
        timings.append({"name": "OSH_DEFAULT_SLEEP", "value": str(default_sleep)})
    pod_spec: dict[str, Any] = {
        "serviceAccountName": MARIADB_SA,
        # the chart's: the start script and mariadbd see each other, neither is PID 1
        "shareProcessNamespace": True,
        "affinity": _anti_affinity(pod_labels),
        "nodeSelector": {"openstack-control-plane": "enabled"},
        "hostAliases": host_aliases(address, gateway),
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "containers": [{
            "name": "mariadb", "image": "chaos/base:lab", "imagePullPolicy": "Never",
            "command": ["/usr/bin/python3", "/tmp/start.py"],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE",
                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "MARIADB_REPLICAS", "value": str(REPLICAS)},
                {"name": "POD_NAME_PREFIX", "value": MARIADB_STS},
                {"name": "DISCOVERY_DOMAIN",
                 "value": f"{MARIADB_DISCOVERY}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"},
                {"name": "DIRECT_SVC_NAME", "value": MARIADB_STS},
                {"name": "WSREP_PORT", "value": str(MARIADB_PORTS["wsrep"])},
                {"name": "STATE_CONFIGMAP", "value": STATE_CONFIGMAP},
                {"name": "MYSQL_DBADMIN_USERNAME", "value": admin_user},
                {"name": "MYSQL_DBSST_USERNAME", "value": "sst"},
                # the chart mounts admin_user.cnf at /etc/mysql; the lab's /etc is the
                # host's, read-only, where no new file can be mounted
                {"name": "MYSQL_ADMIN_CNF", "value": "/run/mariadb-secrets/admin_user.cnf"},
                *secret_env, *timings, *_api_env(gateway),
            ],
            "ports": [{"name": k, "containerPort": v} for k, v in MARIADB_PORTS.items()],
            "readinessProbe": {"exec": {"command": ["/usr/bin/python3", "/tmp/start.py",
                                                    "readiness"]},
                               # the chart's values (pod.probes.server.mariadb)
                               "initialDelaySeconds": 30, "periodSeconds": 30,
                               "timeoutSeconds": 15, "failureThreshold": 3},
            "volumeMounts": [
                *host_mounts,
                {"name": "pod-tmp", "mountPath": "/tmp"},
                {"name": "var-run", "mountPath": "/var/run/mysqld"},
                {"name": "mycnfd", "mountPath": "/etc/mysql/conf.d"},
                {"name": "mariadb-etc", "mountPath": "/etc/mysql/my.cnf",
                 "subPath": "my.cnf", "readOnly": True},
                {"name": "mariadb-bin", "mountPath": "/tmp/start.py", "subPath": "start.py",
                 "readOnly": True},
                {"name": "mysql-data", "mountPath": "/var/lib/mysql"},
                {"name": "mariadb-secrets", "mountPath": "/run/mariadb-secrets",
                 "readOnly": True},
            ],
        }],
        "volumes": [
            *host_volumes,
            {"name": "pod-tmp", "emptyDir": {}},
            {"name": "var-run", "emptyDir": {}},
            {"name": "mycnfd", "emptyDir": {}},
            {"name": "mariadb-bin", "configMap": {"name": "mariadb-bin", "defaultMode": 0o555}},
            {"name": "mariadb-etc", "configMap": {"name": "mariadb-etc", "defaultMode": 0o444}},
            {"name": "mariadb-secrets", "secret": {"secretName": "mariadb-secrets",
                                                   "defaultMode": 0o400}},
        ],
    }
    return [
        *rbac(MARIADB_SA, [
            {"apiGroups": [""], "resources": ["configmaps"],
             "verbs": ["get", "list", "create", "update", "patch"]},
            {"apiGroups": [""], "resources": ["endpoints", "pods", "services"],
             "verbs": ["get", "list"]}]),
        secret("mariadb-dbadmin-password", {"MYSQL_DBADMIN_PASSWORD": admin_password}),
        secret("mariadb-dbsst-password", {"MYSQL_DBSST_PASSWORD": _sst_password(admin_password)}),
        secret("mariadb-secrets", {"admin_user.cnf": (
            f"[client]\nuser = {admin_user}\npassword = {admin_password}\n")}),
        configmap("mariadb-bin", {"start.py": start_script}),
        configmap("mariadb-etc", {"my.cnf": MARIADB_CNF.format(provider=provider_options)}),
        service(MARIADB_DISCOVERY, pod_labels, MARIADB_PORTS, publish_not_ready=True),
        service(MARIADB_STS, pod_labels, {"mysql": MARIADB_PORTS["mysql"]}),
        *local_volumes("mysql-data", MARIADB_STS, nodes, volumes, "5Gi"),
        statefulset(MARIADB_STS, MARIADB_DISCOVERY, pod_labels, pod_spec, "mysql-data", "5Gi"),
    ]


def _sst_password(admin_password: str) -> str:
    """The SST account's password, derived (it never leaves the pods)."""
    import hashlib

    return hashlib.sha256(f"sst:{admin_password}".encode()).hexdigest()[:24]
