"""The seed's topology as Kubernetes objects, on the lab's Kubernetes tier.

Galera: one Deployment per node (replicas 1, ``Recreate``), pinned to its controller by
``nodeSelector``, data on a hostPath, host networking, a headless Service per node and
one for the cluster — the shape openstack-helm and the seed use.

A service pod's PID 1 is a small supervisor (as openstack-helm's ``start.py`` is for
MariaDB): it starts the service once and stays up, so a killed service leaves a Running
pod whose readiness turns false, and the harness can exec into it to restart it — the
same inventory verbs (pidfile, start command, data dir) as on hosts. Deleting the pod
is the Kubernetes way to restart it whole; the Galera start script then recovers the
node's position (``--wsrep-recover``) and joins by IST, as a real start script does.

Images are the lab's local base image (empty directories); pods mount the host's /usr
and /etc read-only, the lab's scripts under /chaos, and their data at the same path as
on the host, so paths in the inventory mean the same inside and outside the pod.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

NAMESPACE = "openstack"

SUPERVISE = """#!/bin/sh
# PID 1 of a lab service pod (written by chaoslab.kubetopology). Starts the service
# and stays up; a TERM is handed on to the service (bounded), then it exits.
# A service that fails to start in the pod's first minute -- it exits by itself, not by
# a signal -- is started again (10 tries, 3 s apart): a replacement pod can start while
# the pod it replaces still shuts down (a drained Deployment's ReplicaSet does not wait)
# and the old process still holds the node's ports or name; a kubelet's restarts would
# ride that out. A service killed by a signal is left to the harness: it kills and
# restarts services by exec, and recovery decides.
# usage: supervise PIDFILE LOG COMMAND [ARG...]
pidfile=$1; log=$2; shift 2
status=/tmp/supervise.$$.exit
stop() {
  p=$(cat "$pidfile" 2>/dev/null)
  if [ -n "$p" ]; then
    kill -TERM "$p" 2>/dev/null
    i=0
    while [ $i -lt 80 ] && kill -0 "$p" 2>/dev/null; do sleep 0.25; i=$((i+1)); done
  fi
  exit 0
}
start() {
  rm -f "$status"
  ( "$@" >>"$log" 2>&1 </dev/null; echo $? > "$status" ) &
  child=$!
}
trap stop TERM INT
start "$@"
tries=1
ticks=0
while :; do
  sleep 3 & wait $!
  ticks=$((ticks+1))
  [ $ticks -le 20 ] && [ $tries -lt 10 ] || continue
  kill -0 "$child" 2>/dev/null && continue
  code=$(cat "$status" 2>/dev/null)
  if [ -n "$code" ] && [ "$code" -lt 128 ]; then
    echo "supervise: $1 exited with $code in the pod's first minute; starting it again" >>"$log"
    start "$@"
    tries=$((tries+1))
  fi
done
"""

GALERA_START = """#!/bin/sh
# The Galera pod's start (written by chaoslab.kubetopology), as a site's start script
# does it: recover the position this node's data holds and start from it, so a
# restarted pod joins by IST. The lab's very first start bootstraps the first node from
# a marker left for it once.
# usage: galera-start MY.CNF
cnf=$1; dir=$(dirname "$cnf")
if [ -e "$dir/bootstrap-once" ]; then
  rm -f "$dir/bootstrap-once"
  exec /usr/sbin/mariadbd --defaults-file="$cnf" --wsrep-new-cluster
fi
/usr/sbin/mariadbd --defaults-file="$cnf" --wsrep-recover \\
  --log-error="$dir/wsrep-recover.log" >/dev/null 2>&1
pos=$(sed -n 's/.*WSREP: Recovered position: *//p' "$dir/wsrep-recover.log" | tail -n 1)
rm -f "$dir/wsrep-recover.log"
exec /usr/sbin/mariadbd --defaults-file="$cnf" ${pos:+--wsrep-start-position=$pos}
"""

GALERA_READY = """#!/bin/sh
# Ready = this node is Synced in a Primary component (over its unix socket, as root)
out=$(/usr/bin/mariadb --socket="$1" -N -B -e \\
  "SHOW STATUS WHERE Variable_name IN ('wsrep_local_state_comment','wsrep_cluster_status')")
echo "$out" | grep -q 'Synced' && echo "$out" | grep -q 'Primary'
"""

NOVA_STANDIN = """#!/bin/sh
# nova-compute stand-in (written by chaoslab.kubetopology): holds one libvirt
# connection open as nova-compute's libvirt driver does (every domain's events), and
# reconnects when libvirtd goes away. A daemon: it runs as long as its pod.
# usage: nova-standin URI
while :; do
  echo "$(date +%T) connected to $1; waiting for domain events"
  virsh -c "$1" event --all --loop --timestamp
  echo "$(date +%T) connection to $1 lost; reconnecting"
  sleep 1
done
"""


def _scripts() -> dict[str, str]:
    from chaoslab.compute import ENTRYPOINT as LIBVIRT_ENTRYPOINT

    return {"supervise": SUPERVISE, "galera-start": GALERA_START, "galera-ready": GALERA_READY,
            "libvirt-entrypoint": LIBVIRT_ENTRYPOINT, "nova-standin": NOVA_STANDIN}


def write_scripts(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in _scripts().items():
        path = folder / name
        path.write_text(text)
        path.chmod(0o755)


def _host_path(name: str, path: str, mount: str | None = None, *,
               read_only: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    volume = {"name": name, "hostPath": {"path": path}}
    mounted = {"name": name, "mountPath": mount or path, "readOnly": read_only}
    return volume, mounted


def _base_mounts(scripts: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every lab pod's: the host's /usr and /etc read-only, the lab's scripts at /chaos."""
    return [_host_path("usr", "/usr", read_only=True), _host_path("etc", "/etc", read_only=True),
            _host_path("chaos", str(scripts), "/chaos", read_only=True)]


def service_pod_spec(*, node: str, container: str, image: str, command: list[str],
                     data_paths: list[str], scripts: Path,
                     readiness: list[str] | None = None, ready_port: int | None = None,
                     grace_seconds: int = 25) -> dict[str, Any]:
    """A pod pinned to ``node`` with host networking, the host's /usr and /etc, the
    lab's scripts at /chaos and each of ``data_paths`` at its own path."""
    mounts = [*_base_mounts(scripts),
              *(_host_path(f"data{i}", p) for i, p in enumerate(data_paths))]
    spec: dict[str, Any] = {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "hostNetwork": True,
        # no cluster DNS in the lab: the host's resolver, as the pod has the host's network
        "dnsPolicy": "Default",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace_seconds,
        "containers": [{
            "name": container,
            "image": image,
            "imagePullPolicy": "Never",
            "command": command,
            "volumeMounts": [m for _, m in mounts],
        }],
        "volumes": [v for v, _ in mounts],
    }
    probe: dict[str, Any] = {"periodSeconds": 3, "timeoutSeconds": 5, "failureThreshold": 1}
    if readiness:
        spec["containers"][0]["readinessProbe"] = {"exec": {"command": readiness}, **probe}
    elif ready_port:
        # the kubelet connects from the host: with host networking, the node's address
        spec["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": ready_port}, **probe}
    return spec


def deployment(name: str, labels: dict[str, str], pod_spec: dict[str, Any]) -> dict[str, Any]:
    """replicas 1, Recreate: never two pods of one node at once (two mariadbds on one
    data directory would destroy it)."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(labels)},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


def headless_service(name: str, selector: dict[str, str],
                     ports: dict[str, int]) -> dict[str, Any]:
    """clusterIP None: names for the pods, and no virtual IP anywhere."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"clusterIP": "None", "selector": dict(selector),
                 "publishNotReadyAddresses": True,
                 "ports": [{"name": k, "port": v} for k, v in ports.items()]},
    }


def galera_objects(nodes: list[str], *, image: str, scripts: Path,
                   node_dir: dict[str, Path], config: dict[str, Path],
                   pidfile: dict[str, Path], log: dict[str, Path],
                   socket: dict[str, Path]) -> list[dict[str, Any]]:
    objects = []
    for node in nodes:
        labels = {"app": "galera", "node": node}
        spec = service_pod_spec(
            node=node, container="mariadb", image=image, scripts=scripts,
            command=["/chaos/supervise", str(pidfile[node]), str(log[node]),
                     "/chaos/galera-start", str(config[node])],
            data_paths=[str(node_dir[node])],
            readiness=["/chaos/galera-ready", str(socket[node])])
        objects.append(deployment(f"galera-{node}", labels, spec))
        objects.append(headless_service(f"galera-{node}", labels,
                                        {"mysql": 3306, "gcomm": 4567, "ist": 4568}))
    objects.append(headless_service("galera", {"app": "galera"}, {"mysql": 3306}))
    return objects


def rabbitmq_objects(nodes: list[str], *, image: str, scripts: Path, root: Path,
                     start: dict[str, str], pidfile: dict[str, Path], log: dict[str, Path],
                     amqp_port: int) -> list[dict[str, Any]]:
    """One Deployment per node, pinned, each node with its fixed Erlang name
    (rabbit-ctlN@ctlN, resolved by the nodes' inetrc file): what StatefulSet hostnames
    give a real site, a Deployment per node gives the seed."""
    objects = []
    for node in nodes:
        labels = {"app": "rabbitmq", "node": node}
        spec = service_pod_spec(
            node=node, container="rabbitmq", image=image, scripts=scripts,
            command=["/chaos/supervise", str(pidfile[node]), str(log[node]),
                     "/bin/sh", "-c", start[node]],
            data_paths=[str(root)], ready_port=amqp_port, grace_seconds=30)
        objects.append(deployment(f"rabbitmq-{node}", labels, spec))
        objects.append(headless_service(f"rabbitmq-{node}", labels,
                                        {"amqp": amqp_port, "dist": 25672}))
    objects.append(headless_service("rabbitmq", {"app": "rabbitmq"}, {"amqp": amqp_port}))
    return objects


def daemonset(name: str, labels: dict[str, str], pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(labels)},
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


def compute_objects(node: str, *, image: str, scripts: Path, home: Path, cgroup: str,
                    uri: str) -> list[dict[str, Any]]:
    """libvirt as openstack-helm runs it: a DaemonSet pod with hostPID and host
    networking whose libvirtd leaves the container's cgroups before it starts any VM
    (so a dead container does not take its VMs along); and a nova-compute stand-in
    holding a ``qemu+tcp://`` connection to it. One DaemonSet per compute node, pinned:
    the lab's nodes share one disk, and each libvirt keeps its own state directories."""
    libvirt_mounts = [
        *_base_mounts(scripts),
        _host_path("libvirt-etc", str(home / "etc"), "/etc/libvirt"),
        _host_path("run", str(home / "run"), "/run"),
        _host_path("lib", str(home / "lib"), "/var/lib/libvirt"),
        _host_path("log", str(home / "log" / "libvirt"), "/var/log/libvirt"),
        _host_path("cache", str(home / "cache"), "/var/cache/libvirt"),
        _host_path("tmp", str(home / "tmp"), "/tmp"),
        _host_path("cgroup", "/sys/fs/cgroup"),
    ]
    libvirt_pod: dict[str, Any] = {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "hostNetwork": True, "hostPID": True, "dnsPolicy": "Default",
        "automountServiceAccountToken": False, "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 10,
        "containers": [{
            "name": "libvirt", "image": image, "imagePullPolicy": "Never",
            "command": ["/chaos/libvirt-entrypoint"],
            "env": [{"name": "CHAOS_CGROUP", "value": cgroup}],
            # privileged needs CAP_SYS_RESOURCE, which these machines do not grant
            "securityContext": {"capabilities": {"add": ["ALL"], "drop": ["SYS_RESOURCE"]},
                                "seccompProfile": {"type": "Unconfined"}},
            "readinessProbe": {"tcpSocket": {"port": int(uri.rsplit(":", 1)[1].split("/")[0])},
                               "periodSeconds": 3, "timeoutSeconds": 5, "failureThreshold": 1},
            "volumeMounts": [m for _, m in libvirt_mounts],
        }],
        "volumes": [v for v, _ in libvirt_mounts],
    }
    nova_pod = service_pod_spec(node=node, container="nova-compute", image=image,
                                scripts=scripts, command=["/chaos/nova-standin", uri],
                                data_paths=[], readiness=["virsh", "-c", uri, "uri"],
                                grace_seconds=5)
    return [daemonset(f"libvirt-{node}", {"app": "libvirt", "node": node}, libvirt_pod),
            daemonset(f"nova-compute-{node}", {"app": "nova-compute", "node": node}, nova_pod)]


def selector_target(app: str, node: str, container: str) -> str:
    """The inventory's target for a service pod: found by labels, so a pod recreated
    under a new name is still the target."""
    return f"k8s://{NAMESPACE}/?selector=app={app},node={node}&container={container}"


def create_namespace(api: Any) -> None:
    from kubernetes import client

    core: Any = client.CoreV1Api(api)
    core.create_namespace(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        _request_timeout=10)


def apply(api: Any, objects: list[dict[str, Any]]) -> None:
    """Create every object (the lab starts from nothing)."""
    from kubernetes import client

    # the client takes plain dicts as bodies; its annotations say model classes
    core: Any = client.CoreV1Api(api)
    apps: Any = client.AppsV1Api(api)
    for obj in objects:
        if obj["kind"] == "Deployment":
            apps.create_namespaced_deployment(NAMESPACE, obj, _request_timeout=10)
        elif obj["kind"] == "DaemonSet":
            apps.create_namespaced_daemon_set(NAMESPACE, obj, _request_timeout=10)
        elif obj["kind"] == "Service":
            core.create_namespaced_service(NAMESPACE, obj, _request_timeout=10)
        else:
            raise ValueError(f"unexpected kind {obj['kind']}")
