"""libvirt recovery: restart the libvirt container (or pod) where it is down, reconnect,
and verify that every domain recorded before the fault still runs in the same qemu
process (same pid, same start time).

Restarting VMs that died is not part of it: that is nova's decision, and a VM that had
to be restarted is exactly what the harness exists to report. ``start_stopped_domains``
is there for scenarios that must leave a deliberately wrong lab host as they found it.
In a dry run the procedure is shown in words instead (``PROCEDURE``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chaos import dryrun, probes
from chaos.errors import ConfigError, HarnessError
from chaos.fanout import gather
from chaos.inventory import Compute, Site
from chaos.journal import Journal
from chaos.services.libvirt import SERVICE as LIBVIRT
from chaos.services.libvirt import libvirtd_pid
from chaos.steps import ALIVE, OWNS, PROC_INFO, Await, Step, restart_log, start_unless_running
from chaos.targets import Where, host_target
from chaos.targets.base import Action, quote
from chaos.targets.docker import parse as parse_docker
from recovery.plan import (
    SILENT_GRACE,
    Plan,
    Procedure,
    Silent,
    await_or_kill,
    process_state,
    rounds,
)
from recovery.plan import execute as run_plan

PROCEDURE = Procedure(
    "libvirt",
    observes="on each compute: the libvirt container's state (or its pod's readiness), and "
             "whether libvirt answers",
    decides="start the libvirt container where it is not running or libvirt does not answer "
            "(after waiting for its docker daemon; in a pod, a fresh pod: no crash-loop "
            "back-off), "
            "and wait until libvirt answers; VMs that died are not restarted: that is nova's "
            "decision, and what the oracle reports",
    done="libvirt answers on every compute and lists its domains",
    final=Await("all"), final_timeout=60)


# libvirtd's first start probes QEMU's capabilities (~9 s of CPU here); younger than
# this, running or sleeping, and not answering yet, it is starting (awaited)
STARTING_GRACE = 60


@dataclass(frozen=True)
class HostState:
    host: str
    container: str  # running, exited, absent, or unknown: why
    answers: bool  # libvirt answers at its URI
    domains: list[probes.DomainIdentity]
    # where libvirtd runs but does not answer: its pid, /proc state letter, age (seconds)
    pid: int | None = None
    pstate: str = ""
    age: int | None = None
    error: str = ""  # what the call to libvirt said

    @property
    def silent(self) -> bool:
        """libvirtd alive but not answering, and not merely starting."""
        if self.answers or self.pid is None:
            return False
        return not (self.pstate in ("R", "S") and self.age is not None
                    and self.age < STARTING_GRACE)


def _computes(site: Site, only: str | None) -> list[Compute]:
    hosts = [c for c in site.computes if c.libvirt]
    if only is not None:
        hosts = [c for c in hosts if c.name == only]
        if not hosts:
            raise ConfigError(f"--node: {only!r} is not a compute host with libvirt")
    return hosts


def _docker_prefix(host: Compute) -> tuple[str, str]:
    assert host.libvirt is not None
    if LIBVIRT.placement(host).where is not Where.CONTAINER or host.docker is None:
        raise ConfigError(f"{host.name}: only docker-run libvirt can be restarted so far "
                          f"({host.libvirt.container})")
    assert host.libvirt.container is not None  # a CONTAINER placement has one
    _, name = parse_docker(host.libvirt.container)
    return quote("docker -H %s ", host.docker.socket), name


def _wait_docker(host: Compute) -> str:
    """Shell: wait (bounded: 60 x 0.5 s) until the host's docker daemon answers."""
    assert host.docker is not None
    prefix = quote("docker -H %s ", host.docker.socket)
    return f"for i in $(seq 1 60); do {prefix}info >/dev/null 2>&1 && break; sleep 0.5; done"


def _in_pod(host: Compute) -> bool:
    return host.libvirt is not None and LIBVIRT.placement(host).in_pod


def _as_process(host: Compute) -> bool:
    return host.libvirt is not None and LIBVIRT.placement(host).where is Where.HOST


def _process_state(site: Site, host: Compute) -> str:
    """running or stopped: whether the process in libvirtd's pidfile is alive and wrote
    it (a PID come round to another process is not libvirtd)."""
    assert host.libvirt is not None and host.libvirt.pidfile is not None
    out = host_target(site, host.name, need="read its libvirtd's state").run(
        OWNS + quote("pid=$(cat %s 2>/dev/null) && owns \"$pid\" %s && echo running || "
                     "echo stopped", host.libvirt.pidfile, host.libvirt.pidfile), timeout=15)
    return out.stdout.strip() or "unknown: no answer"


def _container_state(site: Site, host: Compute) -> str:
    """running, exited, absent: of the docker container, or of the pod's readiness; for
    libvirtd run as a process of the host, running or stopped."""
    assert host.libvirt is not None
    if _as_process(host):
        return _process_state(site, host)
    if _in_pod(host):
        from chaos.targets import for_url
        from chaos.targets.k8s import K8sTarget

        if host.docker is not None:
            # a docker daemon just restarted stops the containers it finds before it
            # answers; until then libvirt may still answer, about to be stopped
            host_target(site, host.name, need="wait for its docker daemon").run(
                _wait_docker(host), timeout=40)
        assert host.libvirt.container is not None  # a POD placement has one
        pod = for_url(host.libvirt.container, site)
        assert isinstance(pod, K8sTarget)
        return "running" if pod.ready() else "not ready"
    prefix, name = _docker_prefix(host)
    out = host_target(site, host.name, need="read its libvirt container's state").run(
        prefix + quote("inspect -f '{{.State.Status}}' %s", name), timeout=15)
    return out.stdout.strip() if out.ok else "absent"


def observe(site: Site, *, only: str | None = None,
            read_only: bool = False) -> dict[str, HostState]:
    """Every compute's libvirt container and domains. It only ever reads, so
    ``read_only`` (a dry run's request) changes nothing."""
    if PROCEDURE.rehearse("observe", on=only):
        return {}
    hosts = {h.name: h for h in _computes(site, only)}

    def look(name: str) -> HostState:
        host = hosts[name]
        try:
            container = _container_state(site, host)
        except HarnessError as exc:
            container = f"unknown: {exc}"
        error = ""
        try:
            found = probes.domains(site, host.name, timeout=3)
            answers = True
        except Exception as exc:  # libvirt not answering is what we are here to fix
            found, answers, error = [], False, str(exc)
        pid, pstate, age = (None, "", None)
        if container == "running" and not answers:
            pid, pstate, age = _libvirtd_process(site, host)
        return HostState(host.name, container, answers, found, pid, pstate, age, error)

    # every compute at once: a fleet of 50 is observed in about one host's time
    gathered = gather(hosts, look, deadline=60)
    return {name: gathered.results.get(name) or HostState(
                name, f"unknown: {gathered.errors[name]}", False, [],
                error=gathered.errors[name]) for name in hosts}


def _libvirtd_process(site: Site, host: Compute) -> tuple[int | None, str, int | None]:
    """libvirtd's pid, /proc state letter and age, read on the host (read only)."""
    assert host.libvirt is not None
    if _as_process(host):
        pid = quote("pid=$(cat %s 2>/dev/null)", host.libvirt.pidfile or "")
    elif host.docker is None:
        return None, "", None
    else:
        pid = libvirtd_pid(host.docker.socket, LIBVIRT.placement(host))
    script = ALIVE + PROC_INFO + pid + ' && alive "$pid" && echo PID "$pid" $(procinfo "$pid")'
    try:
        out = host_target(site, host.name, need="read libvirtd's process state").run(
            script, timeout=15).stdout
    except HarnessError:
        return None, "", None
    found = re.search(r"^PID (\d+) (\S+) (-?\d+)", out, re.M)
    return (int(found[1]), found[2], int(found[3])) if found else (None, "", None)


def plan(site: Site, observed: dict[str, HostState], *, force_node: str | None = None) -> Plan:
    if PROCEDURE.rehearse("plan", on=force_node):
        return PROCEDURE.rehearsed(Plan)
    result = Plan("libvirt", "healthy")
    silent = [h for h in _computes(site, force_node) if observed[h.name].silent]
    if silent:
        # a frozen or hung libvirtd holds its socket and answers nobody: "start" does
        # nothing to a running container. Given time, then killed (only libvirtd: VMs
        # that left its cgroups live on), the next round restarts it as crashed.
        result.situation = "libvirtd alive but silent"
        for host in silent:
            state = observed[host.name]
            assert host.libvirt is not None and state.pid is not None
            result.silent.append(Silent(host.name, state.pid, process_state(state.pstate)
                                        + (f", {state.age}s old" if state.age is not None
                                           else ""), state.error[:120]))
            answers = quote("timeout 3 virsh -c %s version >/dev/null 2>&1", host.libvirt.uri)
            where = host_target(site, host.name, need="kill its silent libvirtd").url
            result.steps.append(Step(where, await_or_kill(state.pid, answers,
                                                          f"libvirtd on {host.name}"),
                                     f"libvirt on {host.name} answers again, or libvirtd "
                                     f"(pid {state.pid}) is killed so it restarts",
                                     timeout=SILENT_GRACE + 45))
        return result
    for host in _computes(site, force_node):
        state = observed[host.name]
        if state.container == "running" and state.answers:
            continue
        result.situation = "libvirt down"
        assert host.libvirt is not None
        if _as_process(host):
            assert host.libvirt.pidfile is not None and host.libvirt.start is not None
            where = host_target(site, host.name, need="start its libvirtd").url
            result.steps.append(Step(where, start_unless_running(
                host.libvirt.pidfile, host.libvirt.start, restart_log(host.libvirt.pidfile)),
                f"libvirtd on {host.name} runs and answers again",
                wait=Await("answers", host.name), wait_timeout=60, timeout=60))
            continue
        if _in_pod(host):
            # The kubelet restarts a dead container by itself, but with a back-off that
            # doubles on each crash (10 s ... 5 min; measured: 160 s after the suite's
            # third kill) and resets only after 10 min of running. A fresh pod has no
            # back-off, and deleting the pod stops no VM where libvirtd left the
            # container's cgroups: the operator's move, and the procedure's.
            url = host.libvirt.container
            assert url is not None  # a POD placement has one
            result.steps.append(Step(url, f"delete the pod behind {url}", "a fresh libvirt "
                                     f"pod on {host.name}, without crash-loop back-off",
                                     action=Action.DELETE_POD))
            result.steps.append(Step(url, f"wait for a Ready pod behind {url}",
                                     f"libvirt on {host.name} runs and answers again",
                                     action=Action.AWAIT_READY, wait=Await("answers", host.name),
                                     wait_timeout=90, timeout=120))
            continue
        prefix, name = _docker_prefix(host)
        # a docker daemon just restarted takes a moment to answer: wait for it, bounded
        where = host_target(site, host.name, need="start its libvirt container").url
        result.steps.append(Step(where,
                                 _wait_docker(host) + "; " + prefix + quote("start %s", name),
                                 f"the libvirt container on {host.name} runs and libvirt "
                                 "answers again", wait=Await("answers", host.name), wait_timeout=60,
                                 timeout=60))
    return result


def _condition(site: Site, condition: Await) -> tuple[bool, object]:
    kind, host = condition.kind, condition.node
    if kind == "answers":
        try:
            return True, probes.domains(site, host, timeout=3)
        except Exception as exc:  # not yet
            return False, str(exc)
    if kind == "all":
        hosts = [c.name for c in site.computes if c.libvirt] if not host else [host]
        gathered = probes.fleet(site, hosts, timeout=3)
        if gathered.errors:  # not yet
            return False, gathered.describe_errors()
        return True, gathered.results
    raise AssertionError(condition)


def execute(site: Site, plan_: Plan, *, journal: Journal | None = None,
            confirm: Callable[[Step], None] | None = None) -> None:
    run_plan(site, plan_, _condition, PROCEDURE, journal=journal, confirm=confirm)


def recover(site: Site, *, only: str | None = None,
            journal: Journal | None = None) -> Plan:
    if PROCEDURE.rehearse("recover", on=only):
        return PROCEDURE.rehearsed(Plan)
    return rounds(lambda: plan(site, observe(site, only=only), force_node=only),
                  lambda p: execute(site, p, journal=journal))


def start_stopped_domains(site: Site, host_name: str) -> list[str]:
    """Start every defined domain that is not running (what nova would decide to do)."""
    host = site.host(host_name)
    if not isinstance(host, Compute) or host.libvirt is None:
        raise ConfigError(f"host {host_name} has no libvirt in the inventory")
    rehearsal = dryrun.active()
    if rehearsal is not None:
        rehearsal.step(f"start every defined VM on {host_name} that is not running (what "
                       "nova would decide), to leave the host as it was found")
        return []

    def start(conn: Any) -> list[str]:
        started = []
        for dom in conn.listAllDomains(0):
            if not dom.isActive():
                dom.create()
                started.append(str(dom.name()))
        return started

    result: list[str] = probes.with_libvirt(host.libvirt.uri, start, timeout=30,
                                            what=f"start domains on {host_name}")
    return result
