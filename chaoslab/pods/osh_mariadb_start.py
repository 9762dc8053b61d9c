#!/usr/bin/python3
"""The process of the ``mariadb`` container of an openstack-helm-shaped ``mariadb-server``
StatefulSet: the lab's own start script, written from the facts of openstack-helm's
``mariadb`` chart (``templates/bin/_start.py.tpl``), not copied from it.

What it does, as the chart's script does (docs/OSH-MARIADB.md lists every state and
transition with the place in the chart it follows):

* the cluster's state lives in the ConfigMap ``$STATE_CONFIGMAP``: the annotation
  ``openstackhelm.openstack.org/cluster.state`` (new, init, live, reboot), a leader lease
  (``leader.node`` + ``leader.expiry``), ``reboot.node``, and per pod the keys
  ``version|uuid|seqno|safe_to_bootstrap|sample_time.<pod>`` copied from its
  ``grastate.dat`` every ``state_configmap_update_period`` (10 s);
* on a start it reads the state once and follows one plan (:func:`plan_start`);
* after a full outage every pod recovers its position (``--wsrep-recover`` where its
  ``grastate.dat`` says seqno -1), publishes it, and waits until every sample in the
  ConfigMap has been fresh (younger than 2 periods) for ``ttl / period + 1`` checks in a
  row; then, among the pods with the highest seqno, the lowest ordinal bootstraps
  (``--wsrep-new-cluster``) and the others wait for a ready endpoint and join;
* ``mariadbd`` is a child of this script; when it exits, the script exits (the container
  ends and the kubelet restarts it).

Standard library only (Debian's /usr/bin/python3 runs it inside the pod). The decisions
are pure functions, imported by ``tests/unit/test_osh_start_decisions.py``.

Usage::

    osh_mariadb_start.py              # the container's command (start)
    osh_mariadb_start.py readiness [--socket PATH] [--defaults-file PATH]
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import enum
import json
import logging
import os
import random
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

LOG = logging.getLogger("osh-mariadb")

# ---- the chart's names --------------------------------------------------------------
ANN_PREFIX = "openstackhelm.openstack.org/"
ANN_STATE = ANN_PREFIX + "cluster.state"
ANN_LEADER = ANN_PREFIX + "leader.node"
ANN_LEADER_EXPIRY = ANN_PREFIX + "leader.expiry"
ANN_REBOOT_NODE = ANN_PREFIX + "reboot.node"

STATES = ("new", "init", "live", "reboot")
GRASTATE_KEYS = ("version", "uuid", "seqno", "safe_to_bootstrap")
SAMPLE_KEY = "sample_time"

# ---- the chart's timings (seconds) --------------------------------------------------
CLUSTER_LEADER_TTL = 120  # values.yaml conf.galera.cluster_leader_ttl
STATE_CONFIGMAP_UPDATE_PERIOD = 10  # _start.py.tpl state_configmap_update_period
DEFAULT_SLEEP = 20  # _start.py.tpl default_sleep
# check_if_cluster_data_is_fresh: a sample older than 20 s (two update periods) is stale
FRESHNESS_PERIODS = 2
# safe_update_configmap: 8 tries on a 409, 0.8-1.2 s apart
PATCH_TRIES = 8

API_TIMEOUT = 10.0  # every request to the Kubernetes API
SUBPROCESS_TIMEOUT = 300.0  # install-db, the init-file runs, --wsrep-recover
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


# =====================================================================================
# Pure decisions (unit-tested)
# =====================================================================================


class Plan(enum.Enum):
    """What a starting pod does, from the state it reads (the chart's main logic)."""

    BOOTSTRAP_NEW = "bootstrap-new"  # new, I am the leader: init, install, live, run new
    WAIT_LIVE_THEN_JOIN = "wait-live-then-join"  # new (not leader) or init
    JOIN = "join"  # live, a ready endpoint exists
    SINGLE_NODE_REBOOT = "single-node-reboot"  # live, one replica
    ELECT_AFTER_OUTAGE = "elect-after-outage"  # live, no ready endpoint: full outage
    RETRY_REBOOT = "retry-reboot"  # reboot, I was the reboot node
    WAIT_REBOOT_THEN_JOIN = "wait-reboot-then-join"  # reboot, someone else reboots
    UNKNOWN_STATE = "unknown-state"  # exit 1


def plan_start(state: str, *, me: str, leader_node: str | None, reboot_node: str | None,
               replicas: int, active: bool) -> Plan:
    """The chart's main ``if get_cluster_state() == …`` chain, as one decision."""
    if state == "new":
        return Plan.BOOTSTRAP_NEW if leader_node == me else Plan.WAIT_LIVE_THEN_JOIN
    if state == "init":
        return Plan.WAIT_LIVE_THEN_JOIN
    if state == "live":
        if replicas <= 1:
            return Plan.SINGLE_NODE_REBOOT
        return Plan.JOIN if active else Plan.ELECT_AFTER_OUTAGE
    if state == "reboot":
        return Plan.RETRY_REBOOT if reboot_node == me else Plan.WAIT_REBOOT_THEN_JOIN
    return Plan.UNKNOWN_STATE


def initial_state(*, active: bool, me: str) -> tuple[str, str]:
    """(state, leader) for a ConfigMap this pod creates: ``live`` led by ordinal 0 when
    the cluster already runs unmanaged, else ``new`` led by this pod."""
    if active:
        return "live", me.rsplit("-", 1)[0] + "-0"
    return "new", me


def format_time(when: datetime) -> str:
    """The chart's timestamps: naive UTC ISO 8601 with a ``Z``."""
    return when.astimezone(UTC).replace(tzinfo=None).isoformat("T") + "Z"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def per_node(data: Mapping[str, str] | None, key: str) -> dict[str, str]:
    """``{pod: value}`` of the ConfigMap keys ``<key>.<pod>``."""
    found: dict[str, str] = {}
    for name, value in (data or {}).items():
        field_name, _, node = name.partition(".")
        if field_name == key and node:
            found[node] = value
    return found


def stale_nodes(data: Mapping[str, str] | None, now: datetime, window: float) -> list[str]:
    """Pods whose last sample is older than ``window`` seconds (or unreadable).

    As the chart's ``check_if_cluster_data_is_fresh``: only pods that have a
    ``sample_time`` key are judged; a pod that never reported does not block."""
    cutoff = now - timedelta(seconds=window)
    stale = []
    for node, text in sorted(per_node(data, SAMPLE_KEY).items()):
        sampled = parse_time(text)
        if sampled is None or sampled < cutoff:
            stale.append(node)
    return stale


def cluster_data_is_fresh(data: Mapping[str, str] | None, now: datetime,
                          window: float) -> bool:
    return not stale_nodes(data, now, window)


def fresh_checks_needed(ttl: float, period: float) -> float:
    """``check_if_i_lead`` loops while ``counter <= ttl / period``: the data must be
    found fresh this many times plus one, in a row, ``period`` apart."""
    return ttl / period


def next_fresh_count(counter: int, fresh: bool) -> int:
    """A stale look resets the streak (``counter = 0``)."""
    return counter + 1 if fresh else 0


def seqnos(data: Mapping[str, str] | None) -> dict[str, int] | None:
    """Every published seqno as an integer, or None when one is not an integer (the
    chart's ``int(value)`` would raise: no decision can be made from such data)."""
    found: dict[str, int] = {}
    for node, text in per_node(data, "seqno").items():
        try:
            found[node] = int(text)
        except ValueError:
            return None
    return found


def nodes_with_highest_seqno(data: Mapping[str, str] | None) -> list[str] | None:
    """The pods sharing the highest seqno, sorted (``get_nodes_with_highest_seqno``).
    A seqno of -1 is just a number here, lower than any recovered position."""
    numbers = seqnos(data)
    if not numbers:
        return None
    top = max(numbers.values())
    return sorted(node for node, seqno in numbers.items() if seqno == top)


def ordinal(pod: str) -> int:
    return int(pod[pod.rindex("-") + 1:])


def resolve_leader_node(names: Sequence[str]) -> str:
    """The lowest ordinal (``resolve_leader_node``); on a tie, the first given."""
    best = names[0]
    for name in names:
        if ordinal(name) < ordinal(best):
            best = name
    return best


def reboot_leader(data: Mapping[str, str] | None) -> str | None:
    """Who bootstraps after a full outage: the lowest ordinal among the highest seqnos.
    ``safe_to_bootstrap`` and ``uuid`` play no part (the chart publishes them only)."""
    top = nodes_with_highest_seqno(data)
    return resolve_leader_node(top) if top else None


def i_lead_reboot(*, me: str, leader: str, active: bool, state: str | None) -> bool:
    """The last test of ``check_if_i_lead``: the chosen pod sets ``reboot`` only while
    no endpoint is ready and the state still reads ``live``."""
    return me == leader and not active and state == "live"


class Lease(enum.Enum):
    TAKE = "take"  # the lease expired: declare myself leader
    RENEW = "renew"  # I hold it: extend it
    KEEP = "keep"  # someone else holds a valid lease


def leader_lease_action(*, me: str, leader_node: str | None, expiry: str | None,
                        now: datetime) -> Lease:
    """``deadmans_leader_election``: an expired (or unreadable) lease is taken."""
    until = parse_time(expiry)
    if until is None or until < now:
        return Lease.TAKE
    return Lease.RENEW if leader_node == me else Lease.KEEP


def cluster_config(*, me: str, prefix: str, replicas: int, domain: str, port: str,
                   mode: str) -> dict[str, str]:
    """``10-cluster-config.cnf``'s [mysqld] settings (``mysqld_write_cluster_conf``):
    the peers by their discovery names; ``gcomm://`` alone to bootstrap or alone."""
    settings: dict[str, str] = {}
    peers = []
    for number in range(replicas):
        pod = f"{prefix}-{number}"
        if pod == me:
            settings["wsrep_node_address"] = f"{pod}.{domain}:{port}"
            settings["wsrep_node_name"] = f"{pod}.{domain}"
        else:
            peers.append(f"{pod}.{domain}:{port}")
    if peers and mode == "run":
        settings["wsrep_cluster_address"] = "gcomm://" + ",".join(peers)
    else:
        settings["wsrep_cluster_address"] = "gcomm://"
    return settings


def parse_grastate(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key in GRASTATE_KEYS:
            values[key] = value.strip()
    return values


def set_grastate_text(text: str, key: str, value: str) -> str:
    """``set_grastate_val``: rewrite the line ``key:`` in place (no line is added)."""
    lines = text.splitlines(keepends=True)
    return "".join(f"{key}: {value}\n" if line.startswith(f"{key}:") else line
                   for line in lines)


def recovered_seqno(stderr: str) -> str | None:
    """The seqno of ``WSREP: Recovered position: UUID:SEQNO`` (the last such line)."""
    found = None
    for line in stderr.splitlines():
        if "WSREP: Recovered position:" in line:
            found = line.strip().split()[-1].split(":")[-1]
    return found


def grastate_sample(grastate: Mapping[str, str], me: str, now: datetime) -> dict[str, str]:
    """The ConfigMap keys one monitor round publishes (``update_grastate_configmap``);
    a key missing from grastate.dat is published as ``None``."""
    sample = {f"{key}.{me}": grastate.get(key, "None") for key in GRASTATE_KEYS}
    sample[f"{SAMPLE_KEY}.{me}"] = format_time(now)
    return sample


READINESS_WANT = {
    "wsrep_ready": "ON",
    "wsrep_connected": "ON",
    "wsrep_cluster_status": "Primary",
    "wsrep_local_state_comment": "Synced",
}


def readiness_verdict(status: Mapping[str, str], replicas: int) -> tuple[bool, str]:
    """The chart's readiness.sh: the server answers and, in a cluster of more than one,
    wsrep is ready, connected, Primary and Synced."""
    if replicas <= 1:
        return True, "answers"
    for name, want in READINESS_WANT.items():
        have = status.get(name)
        if have != want:
            return False, f"{name}={have} (want {want})"
    return True, "ready, connected, Primary, Synced"


# =====================================================================================
# The Kubernetes API, in-cluster, with urllib
# =====================================================================================


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Kube:
    """The few calls the chart's Role allows: configmaps create/get/patch, endpoints
    get. In-cluster: KUBERNETES_SERVICE_HOST/PORT, the service account's token and CA
    (its directory overridable by ``KUBE_SERVICEACCOUNT_DIR`` for the lab)."""

    def __init__(self, environ: Mapping[str, str], timeout: float = API_TIMEOUT) -> None:
        host = environ["KUBERNETES_SERVICE_HOST"]
        port = environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = f"[{host}]"
        self.base = f"https://{host}:{port}"
        folder = Path(environ.get("KUBE_SERVICEACCOUNT_DIR", SERVICEACCOUNT_DIR))
        self.token_file = folder / "token"
        self.context = ssl.create_default_context(cafile=str(folder / "ca.crt"))
        self.timeout = timeout

    def request(self, method: str, path: str, body: object | None = None, *,
                content_type: str = "application/json") -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        # read at every call: projected tokens are rotated by the kubelet
        request.add_header("Authorization", "Bearer " + self.token_file.read_text().strip())
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,
                                        context=self.context) as answer:
                payload = answer.read()
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            with contextlib.suppress(ValueError):
                text = json.loads(text).get("message", text)
            raise ApiError(error.code, text) from None
        result = json.loads(payload) if payload else {}
        return result if isinstance(result, dict) else {}

    # -- ConfigMaps --
    def get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", body)

    def patch_configmap(self, namespace: str, name: str,
                        patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", f"/api/v1/namespaces/{namespace}/configmaps/{name}",
                            patch, content_type="application/merge-patch+json")

    # -- Endpoints --
    def ready_addresses(self, namespace: str, name: str) -> list[dict[str, Any]]:
        endpoints = self.request("GET", f"/api/v1/namespaces/{namespace}/endpoints/{name}")
        ready: list[dict[str, Any]] = []
        for subset in endpoints.get("subsets") or []:
            ready.extend(subset.get("addresses") or [])
        return ready


# =====================================================================================
# The start script
# =====================================================================================


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name)
    return int(text) if text else default


@dataclass
class Settings:
    """The chart's environment (statefulset.yaml), plus the lab's overrides."""

    pod: str
    namespace: str
    state_configmap: str
    direct_svc: str
    replicas: int
    prefix: str
    domain: str
    wsrep_port: str
    admin_user: str
    admin_password: str
    sst_user: str
    sst_password: str
    audit_user: str = ""
    audit_password: str = ""
    leader_ttl: int = CLUSTER_LEADER_TTL
    update_period: float = STATE_CONFIGMAP_UPDATE_PERIOD
    default_sleep: float = DEFAULT_SLEEP
    mysqld: str = "/usr/sbin/mariadbd"
    install_db: str = "/usr/bin/mariadb-install-db"
    defaults_file: str = ""
    datadir: Path = Path("/var/lib/mysql")
    conf_d: Path = Path("/etc/mysql/conf.d")
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def freshness_window(self) -> float:
        return FRESHNESS_PERIODS * self.update_period

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        required = ("STATE_CONFIGMAP", "POD_NAMESPACE", "DIRECT_SVC_NAME", "MARIADB_REPLICAS",
                    "POD_NAME_PREFIX", "DISCOVERY_DOMAIN", "WSREP_PORT",
                    "MYSQL_DBADMIN_USERNAME", "MYSQL_DBADMIN_PASSWORD",
                    "MYSQL_DBSST_USERNAME", "MYSQL_DBSST_PASSWORD")
        missing = [name for name in required if name not in environ]
        if missing:
            raise SystemExit(f"environment variable(s) not set: {', '.join(missing)}")
        if environ["MYSQL_DBADMIN_USERNAME"] == environ["MYSQL_DBSST_USERNAME"]:
            raise SystemExit("The dbadmin username should not match the sst user username")
        import socket

        return cls(
            # the chart takes the pod's name from its hostname; POD_NAME (downward API)
            # wins where it is given
            pod=environ.get("POD_NAME") or socket.gethostname(),
            namespace=environ["POD_NAMESPACE"],
            state_configmap=environ["STATE_CONFIGMAP"],
            direct_svc=environ["DIRECT_SVC_NAME"],
            replicas=int(environ["MARIADB_REPLICAS"]),
            prefix=environ["POD_NAME_PREFIX"],
            domain=environ["DISCOVERY_DOMAIN"],
            wsrep_port=environ["WSREP_PORT"],
            admin_user=environ["MYSQL_DBADMIN_USERNAME"],
            admin_password=environ["MYSQL_DBADMIN_PASSWORD"],
            sst_user=environ["MYSQL_DBSST_USERNAME"],
            sst_password=environ["MYSQL_DBSST_PASSWORD"],
            audit_user=environ.get("MYSQL_DBAUDIT_USERNAME", ""),
            audit_password=environ.get("MYSQL_DBAUDIT_PASSWORD", ""),
            leader_ttl=_env_int(environ, "CLUSTER_LEADER_TTL", CLUSTER_LEADER_TTL),
            # the lab's overrides (the chart hard-codes 10 s and 20 s)
            update_period=float(environ.get("OSH_STATE_UPDATE_PERIOD")
                                or STATE_CONFIGMAP_UPDATE_PERIOD),
            default_sleep=float(environ.get("OSH_DEFAULT_SLEEP") or DEFAULT_SLEEP),
            mysqld=environ.get("MYSQLD_BIN", "/usr/sbin/mariadbd"),
            install_db=environ.get("MYSQL_INSTALL_DB_BIN", "/usr/bin/mariadb-install-db"),
            defaults_file=environ.get("MYSQL_DEFAULTS_FILE", ""),
            datadir=Path(environ.get("MYSQL_DATADIR", "/var/lib/mysql")),
            conf_d=Path(environ.get("MYSQL_CONF_D", "/etc/mysql/conf.d")),
        )


class StartScript:
    """One pod's start script: the chart's functions, over :class:`Kube`."""

    def __init__(self, settings: Settings, kube: Kube) -> None:
        self.s = settings
        self.kube = kube
        self.me = settings.pod
        self._threads: dict[str, threading.Thread] = {}
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = False

    # ---- ConfigMap ---------------------------------------------------------------
    def read_state_configmap(self) -> dict[str, Any]:
        return self.kube.get_configmap(self.s.namespace, self.s.state_configmap)

    def safe_patch(self, patch: dict[str, Any]) -> bool:
        """A merge patch guarded by the resourceVersion just read (409 = someone wrote
        in between: read again and retry, 8 tries, 0.8-1.2 s apart)."""
        for attempt in range(1, PATCH_TRIES + 1):
            current = self.read_state_configmap()
            guarded = json.loads(json.dumps(patch))
            guarded.setdefault("metadata", {})["resourceVersion"] = (
                current.get("metadata", {}).get("resourceVersion"))
            try:
                self.kube.patch_configmap(self.s.namespace, self.s.state_configmap, guarded)
                return True
            except ApiError as error:
                if error.status != 409:
                    raise
                nap = random.uniform(0.8, 1.2)  # jitter, not a secret
                LOG.warning("Collision writing configmap (try %d): %s; retry in %.1f s",
                            attempt, error, nap)
                time.sleep(nap)
        LOG.error("Gave up writing the configmap after %d collisions", PATCH_TRIES)
        return False

    def set_annotations(self, values: Mapping[str, str]) -> bool:
        LOG.info("Setting configmap annotations %s", dict(values))
        return self.safe_patch({"metadata": {"annotations": dict(values)}})

    def annotation(self, key: str) -> str | None:
        annotations = self.read_state_configmap().get("metadata", {}).get("annotations") or {}
        value = annotations.get(key)
        return value if isinstance(value, str) else None

    def get_cluster_state(self) -> str:
        """The state annotation; the first pod to find no ConfigMap creates it (after
        one ``default_sleep``), ``new`` and led by itself unless endpoints are ready."""
        LOG.info("Getting cluster state")
        while True:
            try:
                state = self.annotation(ANN_STATE)
            except ApiError as error:
                if error.status != 404:
                    raise
            else:
                if state is not None:
                    LOG.info('The cluster is currently in "%s" state.', state)
                    return state
            LOG.info('The cluster configmap "%s" does not exist.', self.s.state_configmap)
            time.sleep(self.s.default_sleep)
            state, leader = initial_state(active=self.check_for_active_nodes(), me=self.me)
            expiry = datetime.now(UTC) + timedelta(seconds=self.s.leader_ttl)
            body = {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": self.s.state_configmap, "annotations": {
                    ANN_STATE: state, ANN_LEADER: leader,
                    ANN_LEADER_EXPIRY: format_time(expiry), ANN_REBOOT_NODE: "",
                }},
                "data": {},
            }  # fmt: skip
            try:
                self.kube.create_configmap(self.s.namespace, body)
                LOG.info('Created the state configmap: "%s" leads in "%s" state',
                         leader, state)
                return state
            except ApiError as error:
                if error.status != 409:
                    raise
                LOG.info("Another pod created the state configmap first")

    def declare_myself_cluster_leader(self) -> None:
        LOG.info("Declaring myself current cluster leader")
        expiry = datetime.now(UTC) + timedelta(seconds=self.s.leader_ttl)
        self.set_annotations({ANN_LEADER: self.me, ANN_LEADER_EXPIRY: format_time(expiry)})

    def deadmans_leader_election(self) -> None:
        annotations = self.read_state_configmap().get("metadata", {}).get("annotations") or {}
        action = leader_lease_action(me=self.me, leader_node=annotations.get(ANN_LEADER),
                                     expiry=annotations.get(ANN_LEADER_EXPIRY),
                                     now=datetime.now(UTC))
        if action is Lease.TAKE:
            LOG.info("Current cluster leader has expired")
            self.declare_myself_cluster_leader()
        elif action is Lease.RENEW:
            LOG.info("Renewing cluster leader lease")
            self.declare_myself_cluster_leader()

    # ---- grastate.dat ------------------------------------------------------------
    @property
    def grastate_path(self) -> Path:
        return self.s.datadir / "grastate.dat"

    def read_grastate(self) -> dict[str, str]:
        return parse_grastate(self.grastate_path.read_text())

    def set_grastate_val(self, key: str, value: str) -> None:
        LOG.info("Updating grastate.dat %s=%s", key, value)
        path = self.grastate_path
        path.write_text(set_grastate_text(path.read_text(), key, value))

    def update_grastate_configmap(self) -> None:
        """Publish grastate.dat's values and the sample time (one patch of the keys
        that changed; the sample time always changes)."""
        while not self.grastate_path.exists():
            time.sleep(1)
        sample = grastate_sample(self.read_grastate(), self.me, datetime.now(UTC))
        data = self.read_state_configmap().get("data") or {}
        changed = {key: value for key, value in sample.items() if data.get(key) != value}
        if changed:
            self.safe_patch({"data": changed})

    def recover_wsrep_position(self) -> str:
        LOG.info("Node shutdown was not clean, getting position via wsrep-recover")
        result = subprocess.run(
            [*self.mysqld_argv(), "--skip-networking", "--wsrep_cluster_address=gcomm://",
             "--wsrep-recover"],
            capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, check=False)
        for line in result.stderr.splitlines():
            LOG.info("Recovering wsrep position: %s", line)
        position = recovered_seqno(result.stderr)
        if position is None:
            raise RuntimeError("WSREP_REC_POS position could not be found.")
        return position

    def update_grastate_on_restart(self) -> None:
        LOG.info("Updating grastate info for node")
        if not self.grastate_path.exists():
            LOG.info("No grastate.dat exists I am a new node")
            return
        if self.read_grastate().get("seqno") == "-1":
            self.set_grastate_val("seqno", self.recover_wsrep_position())
        else:
            LOG.info("Node shutdown was clean, using grastate.dat")
        self.update_grastate_configmap()

    # ---- endpoints ---------------------------------------------------------------
    def check_for_active_nodes(self) -> bool:
        """A ready address behind the direct Service (the kubelet's readiness)."""
        try:
            ready = self.kube.ready_addresses(self.s.namespace, self.s.direct_svc)
        except ApiError as error:
            if error.status != 404:
                raise
            ready = []
        LOG.info("Checking for active nodes: %d ready", len(ready))
        return bool(ready)

    # ---- the full-outage election ------------------------------------------------
    def check_if_i_lead(self) -> bool:
        LOG.info("Checking to see if I lead the cluster for reboot")
        needed = fresh_checks_needed(self.s.leader_ttl, self.s.update_period)
        counter = 0
        while True:
            while counter <= needed:
                data = self.read_state_configmap().get("data") or {}
                stale = stale_nodes(data, datetime.now(UTC), self.s.freshness_window)
                if stale:
                    LOG.info("The data we have from the cluster is too old to make a "
                             "decision for node(s) %s", ", ".join(stale))
                counter = next_fresh_count(counter, not stale)
                time.sleep(self.s.update_period)
                LOG.info("Cluster info has been uptodate %d times out of the required %s",
                         counter, needed)
            data = self.read_state_configmap().get("data") or {}
            leader = reboot_leader(data)
            if leader is not None:
                break
            LOG.error("A published seqno is not a number (%s): no decision", seqnos(data))
            counter = 0
        LOG.info("Decision: highest seqno on %s (seqnos %s): %s bootstraps",
                 nodes_with_highest_seqno(data), per_node(data, "seqno"), leader)
        active = self.check_for_active_nodes()
        state = self.get_cluster_state()
        if i_lead_reboot(me=self.me, leader=leader, active=active, state=state):
            LOG.info("I lead the cluster. Setting cluster state to reboot.")
            self.set_annotations({ANN_STATE: "reboot"})
            self.set_annotations({ANN_REBOOT_NODE: self.me})
            return True
        if leader == self.me:
            LOG.info("The cluster is already rebooting")
        else:
            LOG.info("%s leads the cluster", leader)
        return False

    # ---- threads -----------------------------------------------------------------
    def _loop(self, name: str, body: Any, period: float) -> None:
        def run() -> None:
            while True:
                try:
                    body()
                except Exception as error:  # a round failed; the next one retries
                    LOG.error("%s: %s", name, error)
                time.sleep(period)

        if name not in self._threads:
            thread = threading.Thread(target=run, name=name, daemon=True)
            self._threads[name] = thread
            thread.start()

    def launch_cluster_monitor(self) -> None:
        self._loop("cluster-monitor", self.update_grastate_configmap, self.s.update_period)

    def launch_leader_election(self) -> None:
        self._loop("leader-election", self.deadmans_leader_election, self.s.leader_ttl / 2)

    # ---- mariadbd ----------------------------------------------------------------
    def mysqld_argv(self) -> list[str]:
        argv = [self.s.mysqld]
        if self.s.defaults_file:
            argv.append(f"--defaults-file={self.s.defaults_file}")  # must come first
        return argv

    def run_logged(self, argv: list[str]) -> int:
        LOG.info("Running %s", " ".join(argv))
        result = subprocess.run(argv, timeout=SUBPROCESS_TIMEOUT, check=False)
        LOG.info("%s exited with %s", argv[0], result.returncode)
        return result.returncode

    def stop_mysqld(self) -> None:
        """A mysqld left from before (pid file in the data dir): stop it; a stale pid
        file is removed; a pid file naming another program is a panic."""
        pidfile = self.s.datadir / f"{os.uname().nodename}.pid"
        try:
            text = pidfile.read_text().strip()
        except OSError:
            return
        if not text.isdigit():
            pidfile.unlink(missing_ok=True)
            return
        pid = int(text)
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            LOG.info("Mysqld was not running with pid %d, removing stale file", pid)
            pidfile.unlink(missing_ok=True)
            return
        if not comm.startswith(("mysqld", "mariadbd")):
            LOG.error("pidfile process is not mysqld (%s), removing pidfile and panic", comm)
            pidfile.unlink(missing_ok=True)
            raise SystemExit(1)
        LOG.info("pid %d from pidfile is mysqld: stopping it", pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)

    def write_cluster_conf(self, mode: str) -> None:
        config = configparser.ConfigParser()
        config["mysqld"] = cluster_config(me=self.me, prefix=self.s.prefix,
                                          replicas=self.s.replicas, domain=self.s.domain,
                                          port=self.s.wsrep_port, mode=mode)
        path = self.s.conf_d / "10-cluster-config.cnf"
        LOG.info("Writing out cluster config to: %s (%s)", path, dict(config["mysqld"]))
        with open(path, "w") as out:
            config.write(out)

    def _accounts_sql(self, *, fresh: bool) -> str:
        s = self.s
        lines = []
        if fresh:
            # the definer of the mysql.user view stays (mariadb.sys, locked)
            lines.append("DELETE FROM mysql.user WHERE user != 'mariadb.sys' ;")
        lines += [
            f"CREATE OR REPLACE USER '{s.admin_user}'@'%' IDENTIFIED BY '{s.admin_password}' ;",
            f"GRANT ALL ON *.* TO '{s.admin_user}'@'%' WITH GRANT OPTION ;",
        ]
        if fresh:
            lines.append("DROP DATABASE IF EXISTS test ;")
        lines += [
            f"CREATE OR REPLACE USER '{s.sst_user}'@'127.0.0.1' "
            f"IDENTIFIED BY '{s.sst_password}' ;",
            f"GRANT PROCESS, RELOAD, LOCK TABLES, REPLICATION CLIENT ON *.* "
            f"TO '{s.sst_user}'@'127.0.0.1' ;",
        ]
        if s.audit_user:
            lines += [
                f"CREATE OR REPLACE USER '{s.audit_user}'@'%' "
                f"IDENTIFIED BY '{s.audit_password}' ;",
                f"GRANT SELECT ON *.* TO '{s.audit_user}'@'%' ;",
            ]
        lines += ["FLUSH PRIVILEGES ;", "SHUTDOWN ;"]
        return "\n".join(lines) + "\n"

    def _run_init_file(self, sql: str, *extra: str) -> None:
        """mysqld once, private (no network), running ``sql`` which ends in SHUTDOWN.
        The file is readable by the data directory's owner (mysqld drops to it)."""
        fd, name = tempfile.mkstemp(suffix=".sql")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(sql)
            owner = self.s.datadir.stat()
            with contextlib.suppress(PermissionError):
                os.chown(name, owner.st_uid, owner.st_gid)
            self.run_logged([*self.mysqld_argv(), "--skip-networking", *extra,
                             f"--init-file={name}"])
        finally:
            os.unlink(name)

    def mysqld_bootstrap(self) -> None:
        """A data directory without ``mysql/``: install it and set the accounts."""
        LOG.info("Bootstrapping Mariadb")
        if (self.s.datadir / "mysql").is_dir():
            LOG.info("Skipping bootstrap as %s/mysql is present", self.s.datadir)
            return
        self.stop_mysqld()
        self.write_cluster_conf("bootstrap")
        install = [self.s.install_db]
        if self.s.defaults_file:
            install.append(f"--defaults-file={self.s.defaults_file}")
        self.run_logged([*install, "--user=mysql", f"--datadir={self.s.datadir}"])
        self._run_init_file(self._accounts_sql(fresh=True), "--wsrep_cluster_address=gcomm://")

    def run_mysqld(self, cluster: str = "existing") -> int:
        """Start mariadbd as this script's child and wait for it: its end is ours."""
        self.stop_mysqld()
        self.write_cluster_conf("run")
        self.launch_leader_election()
        self.launch_cluster_monitor()
        argv = self.mysqld_argv()
        if cluster == "new":
            argv.append("--wsrep-new-cluster")
        if (self.s.datadir / "mysql").is_dir():
            LOG.info("Setting the admin passwords to the current value")
            self._run_init_file(self._accounts_sql(fresh=False), "--wsrep-on=false")
        else:
            LOG.info("This is a fresh node joining the cluster for the 1st time, "
                     "not attempting to set admin passwords")
        if cluster == "new":
            self.set_annotations({ANN_STATE: "live"})
            self.set_annotations({ANN_REBOOT_NODE: ""})
        LOG.info("Launching MariaDB: %s", " ".join(argv))
        if self._stopping:
            return 0
        self._child = subprocess.Popen(argv)
        code = self._child.wait()
        LOG.info("mariadbd exited with %s: the container ends", code)
        return code

    def mysqld_reboot(self) -> int:
        self.declare_myself_cluster_leader()
        self.set_grastate_val("safe_to_bootstrap", "1")
        return self.run_mysqld(cluster="new")

    def on_sigterm(self, signum: int, frame: object) -> None:
        LOG.info("Got a sigterm from the container runtime, time to go.")
        self._stopping = True
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()  # run_mysqld's wait() returns when it has stopped
        else:
            raise SystemExit(0)

    # ---- the main logic ------------------------------------------------------------
    def wait_for(self, what: str, check: Any) -> None:
        while not check():
            LOG.info("Waiting for %s", what)
            time.sleep(self.s.default_sleep)

    def main(self) -> int:
        state = self.get_cluster_state()
        annotations = self.read_state_configmap().get("metadata", {}).get("annotations") or {}
        plan = plan_start(state, me=self.me, leader_node=annotations.get(ANN_LEADER),
                          reboot_node=annotations.get(ANN_REBOOT_NODE),
                          replicas=self.s.replicas,
                          active=(state == "live" and self.s.replicas > 1
                                  and self.check_for_active_nodes()))
        LOG.info("State %s: plan %s", state, plan.value)
        if plan is Plan.BOOTSTRAP_NEW:
            self.set_annotations({ANN_STATE: "init"})
            self.declare_myself_cluster_leader()
            self.launch_leader_election()
            self.mysqld_bootstrap()
            self.update_grastate_configmap()
            self.set_annotations({ANN_STATE: "live"})
            return self.run_mysqld(cluster="new")
        if plan is Plan.WAIT_LIVE_THEN_JOIN:
            self.wait_for("the cluster to be live", lambda: self.get_cluster_state() == "live")
            self.wait_for("a ready endpoint", self.check_for_active_nodes)
            self.launch_leader_election()
            return self.run_mysqld()
        if plan is Plan.JOIN:
            LOG.info("There are currently running nodes in the cluster, we can join them")
            return self.run_mysqld()
        if plan is Plan.SINGLE_NODE_REBOOT:
            self.update_grastate_on_restart()
            return self.mysqld_reboot()
        if plan is Plan.ELECT_AFTER_OUTAGE:
            LOG.info("This cluster has lost all running nodes, we need to determine the "
                     "new lead node")
            self.update_grastate_on_restart()
            self.launch_leader_election()
            self.launch_cluster_monitor()
            if self.check_if_i_lead():
                LOG.info("I won the ability to reboot the cluster")
                return self.mysqld_reboot()
            self.wait_for("the lead node to come online", self.check_for_active_nodes)
            return self.run_mysqld()
        if plan is Plan.RETRY_REBOOT:
            LOG.info("Cluster reboot procedure wasn't finished. Trying again.")
            self.update_grastate_on_restart()
            self.launch_leader_election()
            self.launch_cluster_monitor()
            return self.mysqld_reboot()
        if plan is Plan.WAIT_REBOOT_THEN_JOIN:
            self.update_grastate_on_restart()
            self.launch_leader_election()
            self.launch_cluster_monitor()
            self.wait_for("the lead node to come online", self.check_for_active_nodes)
            self.set_annotations({ANN_STATE: "live"})
            return self.run_mysqld()
        LOG.critical("Don't understand cluster state %r, exiting with error status", state)
        return 1


# =====================================================================================
# Readiness (the chart's readiness.sh)
# =====================================================================================

STATUS_QUERY = ("SHOW GLOBAL STATUS WHERE Variable_name IN "
                "('wsrep_ready','wsrep_connected','wsrep_cluster_status',"
                "'wsrep_local_state_comment')")


def readiness(socket_path: str, defaults_file: str, replicas: int,
              client: str = "/usr/bin/mariadb", timeout: float = 10.0) -> tuple[bool, str]:
    """Ask the local server over its socket, as the admin user of ``defaults_file``."""
    argv = [client, f"--defaults-file={defaults_file}", f"--socket={socket_path}",
            "--protocol=socket", "--connect-timeout=2", "-N", "-B", "-e", STATUS_QUERY]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                check=False)
    except subprocess.TimeoutExpired:
        return False, f"no answer in {timeout:.0f} s"
    if result.returncode != 0:
        return False, result.stderr.strip() or f"exit {result.returncode}"
    status = dict(line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line)
    return readiness_verdict(status, replicas)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="command")
    ready = sub.add_parser("readiness", help="exit 0 when wsrep is ready, Primary, Synced")
    ready.add_argument("--socket", default=os.environ.get(
        "MYSQL_SOCKET", "/var/run/mysqld/mysqld.sock"))
    ready.add_argument("--defaults-file", default=os.environ.get(
        "MYSQL_ADMIN_CNF", "/etc/mysql/admin_user.cnf"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s - OpenStack-Helm Mariadb - %(levelname)s - "
                               "%(message)s")
    if args.command == "readiness":
        replicas = _env_int(os.environ, "MARIADB_REPLICAS", 3)
        ok, why = readiness(args.socket, args.defaults_file, replicas)
        print(why)
        return 0 if ok else 1
    settings = Settings.from_env(os.environ)
    LOG.info("This instance: %s (ordinal %s)", settings.pod, settings.pod.rsplit("-", 1)[-1])
    script = StartScript(settings, Kube(os.environ))
    signal.signal(signal.SIGTERM, script.on_sigterm)
    return script.main()


if __name__ == "__main__":
    sys.exit(main())
