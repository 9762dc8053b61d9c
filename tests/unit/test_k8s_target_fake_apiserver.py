"""The k8s:// target against a FAKE API server (plain HTTP on 127.0.0.1, canned JSON):
only the HTTP level is faked; the official client does the rest. Exec (a websocket
upgrade) is not covered here: it is proven against a real API server in the
Kubernetes tier (issue 7)."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from chaos import inventory
from chaos.targets import for_url
from chaos.targets import k8s as k8s_module
from chaos.targets.base import TargetError, TargetUnreachable
from chaos.targets.k8s import K8sTarget
from tests.unit.test_inventory import VALID


def pod(name: str, phase: str, created: str, node: str = "ctl1",
        owner: str | None = "ReplicaSet", ready: bool = True) -> dict[str, Any]:
    return {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "openstack", "creationTimestamp": created,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner, "name": "o",
                                          "uid": "u"}] if owner else []},
        "spec": {"nodeName": node, "containers": [{"name": "mariadb"}]},
        "status": {"phase": phase, "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}]},
    }


PODS = [
    pod("mariadb-ctl1-new", "Pending", "2026-11-25T10:05:00Z"),
    pod("mariadb-ctl1-b", "Running", "2026-11-25T10:03:00Z", ready=False),
    pod("mariadb-ctl1-a", "Running", "2026-11-25T10:01:00Z"),
]
ON_NODE = [pod("mariadb-ctl1-a", "Running", "2026-11-25T10:01:00Z"),
           pod("libvirt-x", "Running", "2026-11-25T09:00:00Z", owner="DaemonSet")]


class FakeApi(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, str, Any]]] = []
    slow = False

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> tuple[str, dict[str, list[str]]]:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        url = urlsplit(self.path)
        self.calls.append((self.command, url.path + ("?" + url.query if url.query else ""),
                           body))
        return url.path, parse_qs(url.query)

    def do_GET(self) -> None:
        path, query = self._record()
        if FakeApi.slow:
            time.sleep(2)
        if path == "/api/v1/namespaces/openstack/pods" and query.get("watch") == ["true"]:
            # a watch: one event a line, the current pods first (as the apiserver does)
            lines = b"".join(json.dumps({"type": "ADDED", "object": p}).encode() + b"\n"
                             for p in PODS)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(lines)))
            self.end_headers()
            self.wfile.write(lines)
        elif path == "/api/v1/namespaces/openstack/pods":
            self._reply(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                              "items": [] if "nova" in str(query.get("labelSelector"))
                              else PODS})
        elif path == "/api/v1/namespaces/openstack/pods/mariadb-ctl1-a":
            self._reply(200, PODS[2])
        elif path == "/api/v1/pods":
            self._reply(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                              "items": ON_NODE})
        elif path == "/apis/apps/v1/namespaces/openstack/deployments/mariadb-ctl1":
            self._reply(200, {"kind": "Deployment", "apiVersion": "apps/v1",
                              "metadata": {"name": "mariadb-ctl1"},
                              "spec": {"replicas": 1, "selector": {}, "template": {}},
                              "status": {"availableReplicas": 0}})
        else:
            self._reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "reason": "NotFound", "code": 404})

    def do_DELETE(self) -> None:
        self._record()
        self._reply(200, PODS[2])

    def do_PATCH(self) -> None:
        self._record()
        self._reply(200, {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "ctl1"}})

    def do_POST(self) -> None:
        self._record()
        self._reply(201, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


@pytest.fixture
def api() -> Iterator[str]:
    FakeApi.calls = []
    FakeApi.slow = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def site(api: str, tmp_path: Any) -> inventory.Site:
    token = tmp_path / "token"
    token.write_text("s3cret-token")
    data = {**VALID, "kind": "kubernetes",
            "kubernetes": {"api": api, "token": {"file": str(token)}}}
    return inventory.parse(data)


def target(api: str, tmp_path: Any, url: str) -> K8sTarget:
    found = for_url(url, site(api, tmp_path))
    assert isinstance(found, K8sTarget)
    return found


def test_fake_apiserver_selector_picks_the_oldest_running_pod(api: str, tmp_path: Any) -> None:
    t = target(api, tmp_path, "k8s://openstack/?selector=app=mariadb,node=ctl1&container=mariadb")
    assert t.container == "mariadb"
    assert t.pod().metadata.name == "mariadb-ctl1-a"
    method, path, _ = FakeApi.calls[0]
    assert method == "GET" and "labelSelector=app%3Dmariadb%2Cnode%3Dctl1" in path


def test_fake_apiserver_readiness_and_delete(api: str, tmp_path: Any) -> None:
    t = target(api, tmp_path, "k8s://openstack/mariadb-ctl1-a/mariadb")
    assert t.ready()
    assert t.delete_pod(grace_seconds=0) == "mariadb-ctl1-a"
    method, path, body = FakeApi.calls[-1]
    assert method == "DELETE"
    assert path.startswith("/api/v1/namespaces/openstack/pods/mariadb-ctl1-a")
    assert "gracePeriodSeconds=0" in path or (body or {}).get("gracePeriodSeconds") == 0


def test_fake_apiserver_drain_cordons_and_evicts_all_but_daemonsets(api: str,
                                                                      tmp_path: Any) -> None:
    t = target(api, tmp_path, "k8s://openstack/mariadb-ctl1-a")
    assert t.drain() == ["openstack/mariadb-ctl1-a"]
    patches = [c for c in FakeApi.calls if c[0] == "PATCH"]
    assert patches == [("PATCH", "/api/v1/nodes/ctl1", {"spec": {"unschedulable": True}})]
    evictions = [c for c in FakeApi.calls if c[0] == "POST"]
    assert [c[1] for c in evictions] == [
        "/api/v1/namespaces/openstack/pods/mariadb-ctl1-a/eviction"]
    t.cordon("ctl1", on=False)
    assert FakeApi.calls[-1][2] == {"spec": {"unschedulable": False}}


def test_fake_apiserver_deployment_availability(api: str, tmp_path: Any) -> None:
    t = target(api, tmp_path, "k8s://openstack/mariadb-ctl1-a")
    assert t.deployment_available("mariadb-ctl1") == (0, 1)


def test_fake_apiserver_errors_are_named(api: str, tmp_path: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TargetError, match="no Running pod matches app=nova"):
        target(api, tmp_path, "k8s://openstack/?selector=app=nova").pod()
    with pytest.raises(TargetError, match="read pod: 404"):
        target(api, tmp_path, "k8s://openstack/ghost").pod()
    monkeypatch.setattr(k8s_module, "REQUEST_TIMEOUT", 0.5)
    FakeApi.slow = True
    with pytest.raises(TargetUnreachable, match="list pods"):
        target(api, tmp_path, "k8s://openstack/?selector=a=b").pod()


def test_fake_apiserver_token_is_sent_but_never_in_errors(api: str, tmp_path: Any) -> None:
    t = target(api, tmp_path, "k8s://openstack/ghost")
    with pytest.raises(TargetError) as info:
        t.pod()
    assert "s3cret-token" not in str(info.value)


def test_unreachable_apiserver_is_target_unreachable(tmp_path: Any) -> None:
    t = target("http://127.0.0.1:9", tmp_path, "k8s://openstack/x")
    with pytest.raises(TargetUnreachable):
        t.pod()


@pytest.mark.parametrize("url", ["k8s://openstack/", "k8s://openstack/x?selector=a=b"])
def test_url_names_a_pod_or_a_selector(url: str) -> None:
    from chaos.errors import ConfigError

    with pytest.raises(ConfigError, match="name a pod or give"):
        k8s_module.parse(url)


def test_fake_apiserver_delete_pod_fault_is_ledgered_and_reverted(
    api: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaos.faults import Faults, plan
    from chaos.ledger import Ledger

    data = copy.deepcopy(VALID)
    data.update(kind="kubernetes", kubernetes={"api": api})
    data["controllers"][0]["galera"]["target"] = (
        "k8s://openstack/?selector=application=mariadb,node=ctl1&container=mariadb")
    site_ = inventory.parse(data)
    ledger = Ledger(tmp_path / "ledger")
    fault = plan(site_, "delete-pod", "ctl1", "galera")
    assert fault.down == {"galera": ["ctl1"]}
    assert "delete the pod" in fault.describe()
    with Faults(site_, ledger=ledger) as faults:
        faults.inject(fault)
        assert [e["id"] for e in ledger.open_faults()] == [fault.id]
        deletes = [c for c in FakeApi.calls if c[0] == "DELETE"]
        assert [c[1].split("?")[0] for c in deletes] == [
            "/api/v1/namespaces/openstack/pods/mariadb-ctl1-a"]
    # the revert watched for a Ready pod (the fake streams one) and cleared the ledger
    watches = [c[1] for c in FakeApi.calls if c[0] == "GET" and "watch=true" in c[1]]
    assert watches and "labelSelector=application%3Dmariadb%2Cnode%3Dctl1" in watches[0]
    assert list(ledger.open_faults()) == []


def test_delete_pod_needs_a_k8s_service() -> None:
    from chaos.errors import ConfigError
    from chaos.faults import plan

    with pytest.raises(ConfigError, match="runs in a k8s:// pod"):
        plan(inventory.parse(copy.deepcopy(VALID)), "delete-pod", "ctl1", "galera")
