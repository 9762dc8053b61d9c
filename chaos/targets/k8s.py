"""``k8s://NAMESPACE/POD[/CONTAINER]`` or ``k8s://NAMESPACE/?selector=a=b,c=d&container=x``:
a pod (or the first Running pod a label selector finds, so a restarted pod with a new
name is still the target), through the official kubernetes client.

Besides ``run`` (exec), the target can delete its pod, report readiness, and act on the
pod's node: cordon, uncordon, drain (cordon + evict every pod not owned by a DaemonSet).
Every API call carries a request timeout.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from chaos.errors import ConfigError, ProbeTimeout
from chaos.targets.base import (
    Action,
    CommandResult,
    Target,
    TargetError,
    TargetUnreachable,
    quote,
)

REQUEST_TIMEOUT = 10.0
MAX_WATCH_STREAMS = 50


def _is_ready(pod: Any) -> bool:
    """Ready, and not on its way out (a deleted pod stays Ready until it stops)."""
    if pod.metadata.deletion_timestamp is not None:
        return False
    return any(c.type == "Ready" and c.status == "True"
               for c in (pod.status.conditions or []))


def parse(url: str) -> tuple[str, str | None, str | None, str | None]:
    """(namespace, pod, container, selector); a selector may add ``&node=NODE``: the pod
    it finds on that node (a DaemonSet's, whose name changes when it is replaced)."""
    parts = urlsplit(url)
    if parts.scheme != "k8s" or not parts.hostname:
        raise ConfigError(f"{url}: not k8s://NAMESPACE/POD[/CONTAINER] or "
                          "k8s://NAMESPACE/?selector=…")
    path = [p for p in parts.path.split("/") if p]
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    pod = path[0] if path else None
    container = path[1] if len(path) > 1 else query.get("container")
    selector = query.get("selector")
    if (pod is None) == (selector is None):
        raise ConfigError(f"{url}: name a pod or give ?selector=, not both or neither")
    return parts.hostname, pod, container, selector


def api_client(kube: Any) -> client.ApiClient:
    """An API client from the site's ``kubernetes`` section (see chaos.inventory)."""
    if kube is None:
        raise ConfigError("a k8s:// target needs a kubernetes section in the inventory")
    if kube.kubeconfig is not None:
        from kubernetes import config

        loaded: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kube.kubeconfig), context=kube.context)
        return loaded
    configuration = client.Configuration()
    configuration.host = kube.api
    if kube.token is not None:
        configuration.api_key = {"authorization": kube.token.reveal()}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    if kube.ca_file is not None:
        configuration.ssl_ca_cert = str(kube.ca_file)
    configuration.retries = 1
    return client.ApiClient(configuration)


class K8sTarget(Target):
    scheme = "k8s"

    def __init__(self, url: str, *, api: client.ApiClient,
                 node_shell: Callable[[str], Target] | None = None) -> None:
        super().__init__(url)
        # a shell on a node of the cluster, by node name (the site's host of that name,
        # through its access): where a crash is sent from
        self.node_shell = node_shell
        self.namespace, self.pod_name, self.container, self.selector = parse(url)
        self.node = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}.get("node")
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        # the client's websocket calls (exec, port-forward) swap the ApiClient's
        # call_api for the call's duration: on a client shared between threads, another
        # thread's API call would go over a websocket, and interleaved swaps can leave it
        # swapped for good. They get a client of their own, one call at a time.
        self.streams = client.CoreV1Api(client.ApiClient(configuration=api.configuration))
        self.stream_lock = threading.Lock()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            raise TargetError(f"{self.url}: {what}: {exc.status} {exc.reason}") from None
        except Exception as exc:  # urllib3 connection errors and timeouts
            raise TargetUnreachable(f"{self.url}: {what}: {type(exc).__name__}: {exc}") from None

    # -- the pod ---------------------------------------------------------------------

    def pod(self) -> Any:
        """The named pod, or the first Running pod the selector finds (oldest first)."""
        if self.pod_name is not None:
            return self._call("read pod", self.core.read_namespaced_pod, self.pod_name,
                              self.namespace)
        listed = self._call("list pods", self.core.list_namespaced_pod, self.namespace,
                            label_selector=self.selector, **self._on_node())
        running = [p for p in listed.items if p.status and p.status.phase == "Running"
                   and not p.metadata.deletion_timestamp]
        if not running:
            raise TargetError(f"{self.url}: no Running pod matches {self.selector}")
        return sorted(running, key=lambda p: p.metadata.creation_timestamp or 0)[0]

    def _on_node(self) -> dict[str, str]:
        return {"field_selector": f"spec.nodeName={self.node}"} if self.node else {}

    def ready(self) -> bool:
        return _is_ready(self.pod())

    def await_ready(self, *, timeout: float) -> str:
        """Watch this target's pods until one is Ready (a watch, not polling: the
        apiserver sends each change as it happens); the pod's name. Bounded by
        ``timeout`` in time and by a number of watch streams."""
        from kubernetes import watch

        scope = ({"label_selector": self.selector, **self._on_node()}
                 if self.selector is not None
                 else {"field_selector": f"metadata.name={self.pod_name}"})
        deadline = time.monotonic() + timeout
        last = "no pod seen"
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        try:
            # a stream ends at its server-side timeout or on a dropped connection;
            # a fresh one starts with the current state of every pod (ADDED events)
            for _ in range(MAX_WATCH_STREAMS):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    events = stream.stream(  # type: ignore[no-untyped-call]
                        self.core.list_namespaced_pod, self.namespace,
                        timeout_seconds=max(1, int(remaining)),
                        _request_timeout=remaining + 5, **scope)
                    for event in events:
                        pod = event["object"]
                        if event["type"] != "DELETED" and _is_ready(pod):
                            return str(pod.metadata.name)
                        last = f"{pod.metadata.name} {event['type']} {pod.status.phase}"
                except Exception as exc:  # a dropped stream is an observation
                    last = f"{type(exc).__name__}: {exc}"[:200]
                    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        finally:
            stream.stop()  # type: ignore[no-untyped-call]
        raise ProbeTimeout(f"gave up waiting for a Ready pod for {self.url} after "
                           f"{timeout:.0f}s; last observed: {last}")

    def delete_pod(self, *, grace_seconds: int = 0) -> str:
        name = self.pod().metadata.name
        self._call("delete pod", self.core.delete_namespaced_pod, name, self.namespace,
                   grace_period_seconds=grace_seconds)
        return str(name)

    def _run(self, command: str, timeout: float) -> CommandResult:
        pod = self.pod()
        if pod.status is None or pod.status.phase != "Running":
            phase = pod.status.phase if pod.status is not None else "unknown"
            why = next((c.message for c in (pod.status.conditions or [])
                        if c.status == "False" and c.message), "") if pod.status else ""
            raise TargetUnreachable(f"{self.url}: pod {pod.metadata.name} is {phase}"
                                    + (f" ({why[:160]})" if why else ""))
        kwargs: dict[str, Any] = {"command": ["sh", "-c", command], "stderr": True,
                                  "stdin": False, "stdout": True, "tty": False,
                                  "_preload_content": False}
        if self.container:
            kwargs["container"] = self.container
        try:
            with self.stream_lock:
                resp = stream(self.streams.connect_get_namespaced_pod_exec, pod.metadata.name,
                              self.namespace, **kwargs)
        except Exception as exc:
            raise TargetUnreachable(f"{self.url}: exec: {exc}") from None
        out, err = [], []
        deadline = time.monotonic() + timeout
        try:
            while resp.is_open():
                if time.monotonic() > deadline:
                    raise TargetUnreachable(
                        f"{self.url}: `{command}` did not finish within {timeout:.0f}s")
                resp.update(timeout=1)
                if resp.peek_stdout():
                    out.append(resp.read_stdout())
                if resp.peek_stderr():
                    err.append(resp.read_stderr())
            code = resp.returncode
        finally:
            with contextlib.suppress(Exception):
                resp.close()
        return CommandResult(self.url, command, int(code or 0), "".join(out), "".join(err))

    def _container_id(self, pod: Any) -> str:
        statuses = pod.status.container_statuses or []
        wanted = [s for s in statuses if self.container in (None, s.name)]
        if not wanted or not wanted[0].container_id:
            raise TargetError(f"{self.url}: pod {pod.metadata.name} has no running container "
                              f"{self.container or ''}".rstrip())
        container_id = str(wanted[0].container_id).split("://", 1)[-1]
        if not re.fullmatch(r"[0-9a-f]{12,64}", container_id):
            raise TargetError(f"{self.url}: unexpected container ID {container_id!r}")
        return container_id

    def _node_shell(self, pod: Any, what: str) -> Target:
        if self.node_shell is None:
            raise ConfigError(f"{self.url}: {what} is sent from the pod's node: the site "
                              "gives no way to its nodes")
        return self.node_shell(str(pod.spec.node_name))

    def _in_pod_netns(self, pod: Any, script: str) -> str:
        """Shell, for the pod's node: ``script`` run in the pod's network namespace
        (entered through a process of its container, found by the container's ID)."""
        return quote("pid=; for d in /proc/[0-9]*; do grep -qs %s \"$d/cgroup\" && "
                     "{ pid=${d#/proc/}; break; }; done; [ -n \"$pid\" ] || "
                     "{ echo 'no process of the container on this node' >&2; exit 3; }; "
                     "nsenter -t \"$pid\" -n sh -c %s", self._container_id(pod), script)

    def partition(self, fault_id: str, ports: str | None, *,
                  timeout: float = 30.0) -> CommandResult:
        """Cut this pod from the pods of its namespace on other nodes, inside its own
        network namespace (a pod network carries no host's address, so rules on the
        hosts cut nothing): iptables DROP both ways, tagged ``chaos:<fault_id>``, on
        ``ports`` only when given. A pod on the host's network is left to the host's
        rules."""
        pod = self.pod()
        if pod.spec.host_network:
            return CommandResult(self.url, f"partition {fault_id}", 0,
                                 f"{pod.metadata.name}: host network; the host's rules cut it",
                                 "")
        listed = self._call("list pods", self.core.list_namespaced_pod, self.namespace)
        peers = sorted({p.status.pod_ip for p in listed.items
                        if p.status and p.status.pod_ip and not p.spec.host_network
                        and p.spec.node_name != pod.spec.node_name})
        if not peers:
            raise TargetError(f"{self.url}: no pod on another node to cut "
                              f"{pod.metadata.name} from")
        match = quote("-p tcp -m multiport --ports %s ", ports) if ports else ""
        tag = quote("-m comment --comment %s", f"chaos:{fault_id}")
        rules = " && ".join(
            quote("iptables -w 5 -I INPUT -s %s ", peer) + match + tag + " -j DROP && "
            + quote("iptables -w 5 -I OUTPUT -d %s ", peer) + match + tag + " -j DROP"
            for peer in peers)
        shell = self._node_shell(pod, "a pod's partition")
        shell.run(self._in_pod_netns(pod, rules), timeout=timeout).check()
        return CommandResult(self.url, f"partition {fault_id}", 0,
                             f"{pod.metadata.name} cut from {', '.join(peers)}", "")

    def unpartition(self, fault_id: str, *, timeout: float = 30.0) -> CommandResult:
        """Delete this pod's rules tagged ``chaos:<fault_id>``; a pod made anew since has
        a new network namespace, without them."""
        from chaos.faults import unpartition_command

        pod = self.pod()
        if pod.spec.host_network:
            return CommandResult(self.url, f"unpartition {fault_id}", 0, "host network", "")
        shell = self._node_shell(pod, "a pod's partition")
        shell.run(self._in_pod_netns(pod, unpartition_command(fault_id)),
                  timeout=timeout).check()
        return CommandResult(self.url, f"unpartition {fault_id}", 0,
                             f"{pod.metadata.name} reachable again", "")

    def data_path(self, pod: Any, mount: str) -> tuple[str, str]:
        """(where the data mounted at ``mount`` lives on the pod's node, what it is):
        a PersistentVolumeClaim's volume (local or hostPath), or a hostPath."""
        containers = [c for c in pod.spec.containers if self.container in (None, c.name)]
        mounts = [m for c in containers[:1] for m in (c.volume_mounts or [])
                  if m.mount_path.rstrip("/") == mount.rstrip("/")]
        if not mounts:
            raise TargetError(f"{self.url}: nothing is mounted at {mount}")
        volume = next((v for v in pod.spec.volumes or [] if v.name == mounts[0].name), None)
        if volume is not None and volume.host_path is not None:
            return str(volume.host_path.path), "hostPath"
        if volume is None or volume.persistent_volume_claim is None:
            raise TargetError(f"{self.url}: {mount} is neither a claim nor a hostPath")
        claim = self._call("read claim", self.core.read_namespaced_persistent_volume_claim,
                           volume.persistent_volume_claim.claim_name, self.namespace)
        pv = self._call("read volume", self.core.read_persistent_volume,
                        claim.spec.volume_name)
        source = pv.spec.local or pv.spec.host_path
        if source is None:
            raise TargetError(f"{self.url}: volume {pv.metadata.name} is not local or "
                              "hostPath: its data is not on the node")
        return str(source.path), f"PVC {claim.metadata.name} (PV {pv.metadata.name})"

    def wipe(self, mount: str, *, timeout: float = 60.0) -> CommandResult:
        """A lost disk: the data of the volume at ``mount`` deleted on the pod's node,
        then the pod deleted (its controller makes a new one, on empty data)."""
        pod = self.pod()
        path, what = self.data_path(pod, mount)
        if path.rstrip("/") in ("", "/", "/var", "/var/lib", "/etc", "/usr"):
            raise TargetError(f"{self.url}: refusing to wipe {path!r}")
        shell = self._node_shell(pod, "a wipe")
        shell.run(quote("find %s -mindepth 1 -delete", path), timeout=timeout).check()
        self._call("delete pod", self.core.delete_namespaced_pod, pod.metadata.name,
                   self.namespace, grace_period_seconds=0)
        return CommandResult(self.url, f"wipe {mount}", 0,
                             f"{pod.metadata.name}: {what} at {path} on "
                             f"{pod.spec.node_name} emptied; pod deleted", "")

    def crash(self, process: str, *, timeout: float = 30.0, signal: str = "KILL") -> CommandResult:
        """SIGKILL every ``process`` (its name in the process table) of this target's
        container, from the PID namespace of the node the pod runs on: the container's
        ID (from the pod's status) is in each of its processes' cgroup paths, whatever
        the runtime. A container's PID 1 ignores a SIGKILL sent from inside its pod;
        from the node it dies like any process."""
        pod = self.pod()
        container_id = self._container_id(pod)
        shell = self._node_shell(pod, "a crash")
        command = quote(
            "found=; for d in /proc/[0-9]*; do grep -qs %s \"$d/cgroup\" || continue; "
            "[ \"$(cat \"$d/comm\" 2>/dev/null)\" = %s ] || continue; "
            "kill -s %s \"${d#/proc/}\" && found=\"$found ${d#/proc/}\"; done; "
            "[ -n \"$found\" ] && echo \"signalled$found\"", container_id, process, signal)
        result = shell.run(command, timeout=timeout)
        if not result.ok:
            raise TargetError(f"{self.url}: no {process} process of container "
                              f"{container_id[:12]} on node {pod.spec.node_name}")
        where = f"{pod.metadata.name} on {pod.spec.node_name}"
        return CommandResult(self.url, f"SIG{signal} {process}", 0,
                             f"{where}: {result.stdout.strip()}", "")

    def reboot_cluster(self, configmap: str) -> CommandResult:
        """openstack-helm: the state ConfigMap says the cluster reboots from this pod."""
        pod = str(self.pod().metadata.name)
        self._call("patch the state ConfigMap", self.core.patch_namespaced_config_map,
                   configmap, self.namespace, {"metadata": {"annotations": {
                       "openstackhelm.openstack.org/cluster.state": "reboot",
                       "openstackhelm.openstack.org/reboot.node": pod}}})
        return CommandResult(self.url, f"reboot-cluster {configmap}", 0,
                             f"{configmap}: cluster.state=reboot, reboot.node={pod}", "")

    def act(self, action: Action, *, timeout: float = 60.0,
            subject: str | None = None) -> CommandResult:
        """The API actions a Step can name: delete the pod, await a pod of this target
        Running and Ready again (as its controller recreates it), drain or uncordon the
        node of this target's pod."""
        if action is Action.DELETE_POD:
            name = self.delete_pod()
            return CommandResult(self.url, str(action), 0, name, "")
        if action is Action.AWAIT_READY:
            name = self.await_ready(timeout=timeout)
            return CommandResult(self.url, str(action), 0, name, "")
        if action is Action.DRAIN_NODE:
            node = self.node_name(subject)
            evicted = self.drain(node)
            return CommandResult(self.url, str(action), 0,
                                 f"{node}: evicted {', '.join(evicted)}", "")
        if action is Action.CRASH:
            if subject is None:
                raise ConfigError(f"{self.url}: a crash names the process to kill")
            return self.crash(subject, timeout=timeout)
        if action is Action.SIGNAL:
            sig, _, name = (subject or "").partition(" ")
            if not re.fullmatch(r"[A-Z]+", sig) or not name:
                raise ConfigError(f"{self.url}: a signal action names 'SIGNAL process'")
            return self.crash(name, timeout=timeout, signal=sig)
        if action is Action.WIPE_POD:
            if subject is None:
                raise ConfigError(f"{self.url}: a wipe names the data's mount path")
            return self.wipe(subject, timeout=timeout)
        if action is Action.REBOOT_CLUSTER:
            if subject is None:
                raise ConfigError(f"{self.url}: a cluster reboot names the state ConfigMap")
            return self.reboot_cluster(subject)
        if action in (Action.PARTITION_POD, Action.UNPARTITION_POD):
            if subject is None:
                raise ConfigError(f"{self.url}: a pod's partition names its fault")
            fault_id, _, ports = subject.partition(" ")
            if action is Action.PARTITION_POD:
                return self.partition(fault_id, ports or None, timeout=timeout)
            return self.unpartition(fault_id, timeout=timeout)
        if action is Action.UNCORDON_NODE:
            node = self.node_name(subject)
            self.cordon(node, on=False)
            return CommandResult(self.url, str(action), 0, f"{node} schedulable", "")
        raise AssertionError(action)  # every Action is handled above

    # -- the node --------------------------------------------------------------------

    def node_name(self, hint: str | None = None) -> str:
        """The node this target's pod runs on; for a drained node, where its pods are
        gone and their replacements Pending, the node they are pinned to, or ``hint``
        (the host the fault named: a site's hosts are its nodes) when that is a node."""
        if self.node is not None:
            return self.node
        if self.pod_name is not None:
            node = self.pod().spec.node_name
            if node:
                return str(node)
            if hint and self._is_node(hint):
                return hint
            raise TargetError(f"{self.url}: pod {self.pod_name} is on no node (Pending)")
        listed = self._call("list pods", self.core.list_namespaced_pod, self.namespace,
                            label_selector=self.selector)
        for pod in listed.items:
            if pod.spec.node_name:
                return str(pod.spec.node_name)
        for pod in listed.items:
            pinned = (pod.spec.node_selector or {}).get("kubernetes.io/hostname")
            if pinned:
                return str(pinned)
        if hint and self._is_node(hint):
            return hint
        raise TargetError(f"{self.url}: no pod of {self.selector} is on (or pinned to) a node")

    def _is_node(self, name: str) -> bool:
        try:
            self.core.read_node(name, _request_timeout=REQUEST_TIMEOUT)
        except ApiException:
            return False
        return True

    def cordon(self, node: str | None = None, *, on: bool = True) -> None:
        self._call("cordon" if on else "uncordon", self.core.patch_node,
                   node or self.node_name(), {"spec": {"unschedulable": on}})

    def drain(self, node: str | None = None) -> list[str]:
        """Cordon the node and evict every pod on it not owned by a DaemonSet."""
        node = node or self.node_name()
        self.cordon(node)
        pods = self._call("list pods on node", self.core.list_pod_for_all_namespaces,
                          field_selector=f"spec.nodeName={node}")
        evicted = []
        for pod in pods.items:
            owners = pod.metadata.owner_references or []
            if any(o.kind == "DaemonSet" for o in owners):
                continue
            body = client.V1Eviction(metadata=client.V1ObjectMeta(
                name=pod.metadata.name, namespace=pod.metadata.namespace))
            self._call("evict", self.core.create_namespaced_pod_eviction,
                       pod.metadata.name, pod.metadata.namespace, body)
            evicted.append(f"{pod.metadata.namespace}/{pod.metadata.name}")
        return evicted

    def deployment_available(self, name: str) -> tuple[int, int]:
        """(available replicas, desired replicas) of a Deployment in this namespace."""
        dep = self._call("read deployment", self.apps.read_namespaced_deployment, name,
                         self.namespace)
        return int(dep.status.available_replicas or 0), int(dep.spec.replicas or 0)
