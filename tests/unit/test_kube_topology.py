"""The Kubernetes tier's objects and build cache, without a cluster: the shapes the seed
relies on (pinned, host networking, hostPath data, headless Services, local images)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.targets.k8s import parse
from chaoslab import kubebuild, kubetopology
from chaoslab.kube import RUNC_CLAMP, SERVICE_RANGE


def galera(tmp_path: Path) -> list[dict]:  # type: ignore[type-arg]
    nodes = ["ctl1", "ctl2", "ctl3"]
    return kubetopology.galera_objects(
        nodes, image="chaos/base:lab", scripts=tmp_path / "scripts",
        node_dir={n: tmp_path / n for n in nodes},
        config={n: tmp_path / n / "my.cnf" for n in nodes},
        pidfile={n: tmp_path / n / "mysqld.pid" for n in nodes},
        log={n: tmp_path / n / "mysqld.log" for n in nodes},
        socket={n: tmp_path / n / "mysqld.sock" for n in nodes})


def test_one_galera_deployment_per_controller_pinned_with_hostpath_data(tmp_path: Path) -> None:
    objects = galera(tmp_path)
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    assert sorted(deployments) == ["galera-ctl1", "galera-ctl2", "galera-ctl3"]
    for node in ("ctl1", "ctl2", "ctl3"):
        dep = deployments[f"galera-{node}"]
        assert dep["spec"]["replicas"] == 1
        # never two mariadbds on one data directory, not even during a rollout
        assert dep["spec"]["strategy"] == {"type": "Recreate"}
        pod = dep["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"kubernetes.io/hostname": node}
        assert pod["hostNetwork"] is True
        container = pod["containers"][0]
        assert container["imagePullPolicy"] == "Never"
        paths = {v["hostPath"]["path"] for v in pod["volumes"]}
        assert str(tmp_path / node) in paths
        mounts = {m["mountPath"]: m["readOnly"] for m in container["volumeMounts"]}
        # the data at the same path inside as outside: the inventory means one thing
        assert mounts[str(tmp_path / node)] is False
        assert mounts["/usr"] is True and mounts["/etc"] is True
        assert container["readinessProbe"]["exec"]["command"][0] == "/chaos/galera-ready"
        assert dep["spec"]["selector"]["matchLabels"] == {"app": "galera", "node": node}


def test_every_service_is_headless(tmp_path: Path) -> None:
    services = [o for o in galera(tmp_path) if o["kind"] == "Service"]
    assert len(services) == 4
    assert all(s["spec"]["clusterIP"] == "None" for s in services)


def test_service_range_and_selector_targets_stay_parseable() -> None:
    assert SERVICE_RANGE.startswith("127.")
    namespace, pod, container, selector = parse(
        kubetopology.selector_target("galera", "ctl2", "mariadb"))
    assert (namespace, pod, container, selector) == (
        "openstack", None, "mariadb", "app=galera,node=ctl2")


def test_runc_wrapper_clamps_only_negative_oom_scores(tmp_path: Path) -> None:
    import subprocess

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text('{"process":{"oomScoreAdj":-998},"x":"-1"}')
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "runc").write_text("#!/bin/sh\necho runc \"$@\"\n")
    (fake_bin / "runc").chmod(0o755)
    wrapper = tmp_path / "runc-clamp"
    wrapper.write_text(RUNC_CLAMP)
    wrapper.chmod(0o755)
    out = subprocess.run([str(wrapper), "create", "--bundle", str(bundle), "id1"],
                         capture_output=True, text=True, timeout=10, check=True,
                         env={"PATH": f"{fake_bin}:/usr/bin:/bin"}).stdout
    assert out.strip() == f"runc create --bundle {bundle} id1"
    assert (bundle / "config.json").read_text() == '{"process":{"oomScoreAdj":0},"x":"-1"}'
    (bundle / "config.json").write_text('{"process":{"oomScoreAdj":500}}')
    subprocess.run([str(wrapper), "create", "--bundle", str(bundle), "id2"], timeout=10,
                   check=True, capture_output=True, env={"PATH": f"{fake_bin}:/usr/bin:/bin"})
    assert (bundle / "config.json").read_text() == '{"process":{"oomScoreAdj":500}}'


def test_build_cache_counts_as_built_only_when_complete_and_same_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOS_KUBE_CACHE", str(tmp_path))
    assert not kubebuild.built()
    out = kubebuild.bin_dir()
    out.mkdir(parents=True)
    for name in [*kubebuild.BINARIES, "pause"]:
        (out / name).write_text("")
    assert not kubebuild.built(), "no stamp: a build that died half-way"
    (out / ".built-from").write_text(kubebuild.SOURCE_VERSION + "\n")
    assert not kubebuild.built(), "built without the lab's patches"
    (out / ".built-from").write_text(kubebuild.BUILD_ID + "\n")
    assert kubebuild.built()
    (out / "kubelet").unlink()
    assert not kubebuild.built()


def test_pod_supervisor_restarts_a_failed_start_but_never_a_killed_service(
    tmp_path: Path
) -> None:
    """A start that fails in the pod's first minute is retried (the pod it replaces may
    still hold the ports); a service killed by a signal is the harness's to restart."""
    import signal
    import subprocess
    import time

    from chaoslab import procs

    script = tmp_path / "supervise"
    script.write_text(kubetopology.SUPERVISE)
    script.chmod(0o755)
    failing = subprocess.Popen([str(script), str(tmp_path / "a.pid"), str(tmp_path / "a.log"),
                                "sh", "-c", "echo started; exit 1"])
    killed = subprocess.Popen([str(script), str(tmp_path / "b.pid"), str(tmp_path / "b.log"),
                               "sh", "-c", f"echo $$ > {tmp_path / 'b.pid'}; exec sleep 60"])
    try:
        pid = None
        for _ in range(50):  # bounded: the service writes its pidfile at once
            pid = procs.read_pidfile(tmp_path / "b.pid")
            if pid:
                break
            time.sleep(0.1)
        assert pid is not None
        procs.signal_pids([pid], signal.SIGKILL)
        time.sleep(7)  # two of the supervisor's 3 s looks
        assert (tmp_path / "a.log").read_text().count("started") >= 2
        assert "starting it again" not in (tmp_path / "b.log").read_text()
        assert procs.read_pidfile(tmp_path / "b.pid") == pid  # nobody started it again
    finally:
        for sup in (failing, killed):
            sup.terminate()
            sup.wait(timeout=10)


def test_libvirt_is_a_pinned_hostpid_daemonset_and_nova_holds_its_uri(tmp_path: Path) -> None:
    uri = "qemu+tcp://127.0.1.21:16509/system"
    libvirt, nova = kubetopology.compute_objects(
        "cmp1", image="chaos/base:lab", scripts=tmp_path / "s", home=tmp_path / "cmp1",
        cgroup="chaos-lab-kube-libvirt-cmp1", uri=uri)
    assert libvirt["kind"] == nova["kind"] == "DaemonSet"
    pod = libvirt["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["hostNetwork"] is True
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "cmp1"}
    container = pod["containers"][0]
    # no CAP_SYS_RESOURCE on these machines: never privileged, everything else granted
    assert "privileged" not in container["securityContext"]
    assert container["securityContext"]["capabilities"] == {"add": ["ALL"],
                                                            "drop": ["SYS_RESOURCE"]}
    assert {"name": "CHAOS_CGROUP", "value": "chaos-lab-kube-libvirt-cmp1"} in container["env"]
    assert container["readinessProbe"]["tcpSocket"] == {"port": 16509}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/sys/fs/cgroup", "/run", "/var/lib/libvirt", "/etc/libvirt"} <= mounts
    standin = nova["spec"]["template"]["spec"]["containers"][0]
    assert standin["command"] == ["/chaos/nova-standin", uri]


def test_rabbitmq_nodes_are_pinned_deployments_with_their_own_start(tmp_path: Path) -> None:
    nodes = ["ctl1", "ctl2", "ctl3"]
    objects = kubetopology.rabbitmq_objects(
        nodes, image="chaos/base:lab", scripts=tmp_path / "s", root=tmp_path / "rabbitmq",
        start={n: f"exec start-{n}" for n in nodes},
        pidfile={n: tmp_path / n / "rabbit.pid" for n in nodes},
        log={n: tmp_path / n / "server.out" for n in nodes}, amqp_port=5672)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert [d["metadata"]["name"] for d in deployments] == [f"rabbitmq-{n}" for n in nodes]
    for dep, node in zip(deployments, nodes, strict=True):
        pod = dep["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"kubernetes.io/hostname": node}
        assert pod["containers"][0]["command"][-1] == f"exec start-{node}"
        assert pod["containers"][0]["readinessProbe"]["tcpSocket"] == {"port": 5672}
    assert all(o["spec"]["clusterIP"] == "None" for o in objects if o["kind"] == "Service")
