"""Watching a platform recover a cluster it owns (``clusters.<service>.recovered_by:
platform``): the harness injects the fault, then only looks.

It never bootstraps, forgets a node or restarts a service of its own accord: on the
openstack-helm shape it watches the state ConfigMap come back to ``live``, the
StatefulSet's pods Ready, and every Galera node Synced in one Primary component of full
size; for RabbitMQ, the pods Ready and every node seeing every other, with no partition.
What it measures is the platform's MTTR (from the watch's start, or from the fault the
caller names). A platform that has not recovered by the cluster's deadline fails the
verdict with the evidence: the cluster state, the last samples, the pods' events.
``chaos recover … --take-over`` is the operator's way to act instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chaos.errors import HarnessError
from chaos.inventory import Cluster, Site
from chaos.journal import Event, Journal
from recovery.plan import Plan

INTERVAL = 2.0
KEEP_SAMPLES = 8
EVENTS = 12
STATE_ANNOTATION = "openstackhelm.openstack.org/cluster.state"


class PlatformStalled(HarnessError):
    """The platform did not bring its cluster back by the deadline (a failed verdict)."""

    exit_code = 1


@dataclass
class Watched:
    """What watching a platform's recovery saw."""

    service: str
    platform: str
    recovered: bool
    seconds: float
    deadline: float
    samples: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    def describe(self) -> str:
        head = (f"{self.service}: recovered by {self.platform} in {self.seconds:.1f}s"
                if self.recovered else
                f"{self.service}: {self.platform} has not recovered it within "
                f"{self.deadline:.0f}s")
        lines = [head, *(f"  sample: {s}" for s in self.samples[-KEEP_SAMPLES:])]
        lines += [f"  {e}" for e in self.evidence]
        return "\n".join(lines)


def _api(site: Site) -> Any:
    from chaos.targets.k8s import api_client

    return api_client(site.kubernetes)


def _namespace(site: Site, service: str, cluster: Cluster) -> str:
    if cluster.namespace:
        return cluster.namespace
    for c in site.controllers:
        section = getattr(c, service, None)
        if section is not None and section.target.startswith("k8s://"):
            return str(section.target.partition("://")[2].split("/", 1)[0])
    raise HarnessError(f"clusters.{service}: no namespace (name it, or give k8s:// targets)")


def _pods_ready(api: Any, namespace: str, statefulset: str | None) -> tuple[bool, str]:
    from kubernetes import client

    if statefulset is None:
        return True, "pods: not watched (no statefulset named)"
    apps: Any = client.AppsV1Api(api)
    sts = apps.read_namespaced_stateful_set(statefulset, namespace, _request_timeout=5)
    ready, want = int(sts.status.ready_replicas or 0), int(sts.spec.replicas or 0)
    return ready >= want > 0, f"pods {ready}/{want} Ready"


def _state(api: Any, namespace: str, configmap: str) -> str:
    from kubernetes import client

    core: Any = client.CoreV1Api(api)
    cm = core.read_namespaced_config_map(configmap, namespace, _request_timeout=5)
    return str((cm.metadata.annotations or {}).get(STATE_ANNOTATION, "(no state)"))


def galera_seen(v: Any, size: int) -> tuple[bool, str]:
    """Recovered: every member Synced in one Primary component of ``size``. Two
    Primary components (a platform that bootstrapped twice) are named split brain."""
    from recovery.galera import Situation, classify, primary_components

    states = [s for s in v.states.values() if s is not None]
    done = len(states) == size and all(s.healthy and s.size == size for s in states)
    if classify(v, size) is Situation.SPLIT_BRAIN:
        return done, (f"galera SPLIT BRAIN, {len(primary_components(v))} Primary "
                      f"components: {v.describe()}")
    return done, f"galera {v.describe()}"


def _galera_done(site: Site) -> tuple[bool, str]:
    from chaos.services.galera import view

    return galera_seen(view(site, timeout=3.0), len([c for c in site.controllers if c.galera]))


def _rabbit_done(site: Site) -> tuple[bool, str]:
    from chaos.services.rabbitmq import view

    v = view(site, timeout=3.0, queues=False)
    members = [c for c in site.controllers if c.rabbitmq]
    states = [s for s in v.states.values() if s is not None]
    done = (len(states) == len(members)
            and all(len(s.running_nodes) == len(members) and not s.partitioned
                    for s in states))
    return done, f"rabbitmq {v.describe()}"


def sample(site: Site, service: str, api: Any) -> tuple[bool, str]:
    """One look: recovered?, and what was seen, in one line."""
    cluster = site.cluster(service)
    namespace = _namespace(site, service, cluster)
    parts, done = [], True
    if cluster.state_configmap:
        state = _state(api, namespace, cluster.state_configmap)
        parts.append(f"state {state}")
        done = done and state == "live"
    ready, said = _pods_ready(api, namespace, cluster.statefulset)
    parts.append(said)
    done = done and ready
    members_ok, seen = (_galera_done(site) if service == "galera" else _rabbit_done(site))
    parts.append(seen)
    return done and members_ok, "; ".join(parts)


def evidence(site: Site, service: str, api: Any) -> list[str]:
    """What an operator looks at when a platform stalls: the cluster's state ConfigMap
    (each member's published position) and the newest events of its pods."""
    from kubernetes import client

    cluster = site.cluster(service)
    namespace = _namespace(site, service, cluster)
    core: Any = client.CoreV1Api(api)
    lines = []
    if cluster.state_configmap:
        try:
            cm = core.read_namespaced_config_map(cluster.state_configmap, namespace,
                                                 _request_timeout=5)
            notes = {k.rsplit("/", 1)[-1]: v for k, v in (cm.metadata.annotations or {}).items()
                     if k.startswith("openstackhelm.openstack.org/")}
            lines.append(f"state ConfigMap {cluster.state_configmap}: {notes}")
            lines += [f"  {k} = {v}" for k, v in sorted((cm.data or {}).items())
                      if k.split(".", 1)[0] in ("seqno", "sample_time", "safe_to_bootstrap")]
        except Exception as exc:  # evidence is best effort: say what could not be read
            lines.append(f"state ConfigMap {cluster.state_configmap}: unreadable ({exc})"[:200])
    prefix = f"{cluster.statefulset}-" if cluster.statefulset else ""
    try:
        events = core.list_namespaced_event(namespace, _request_timeout=5).items
        mine = [e for e in events if e.involved_object.name.startswith(prefix)]
        mine.sort(key=lambda e: str(e.last_timestamp or e.event_time or ""))
        lines += [f"event {e.involved_object.name}: {e.reason}: {(e.message or '')[:160]}"
                  for e in mine[-EVENTS:]]
    except Exception as exc:
        lines.append(f"events: unreadable ({exc})"[:200])
    return lines


def watch(site: Site, service: str, *, journal: Journal | None = None,
          deadline: float | None = None, since: float | None = None,
          interval: float = INTERVAL) -> Watched:
    """Watch the platform bring ``service``'s cluster back, bounded by the cluster's
    deadline (or ``deadline``); ``since`` (a ``time.monotonic()``) is when the fault
    was injected, for the MTTR."""
    cluster = site.cluster(service)
    if cluster.recovered_by != "platform" or cluster.platform is None:
        raise HarnessError(f"{service}: the harness recovers this cluster, not a platform")
    limit = deadline if deadline is not None else cluster.deadline_seconds
    start = since if since is not None else time.monotonic()
    end = time.monotonic() + limit
    api = _api(site)
    samples: list[str] = []
    if journal is not None:
        journal.event(Event.RECOVERY_START, procedure=f"{service} (platform)",
                      platform=cluster.platform, deadline=limit)
    # bounded in count as well as in time
    for _ in range(int(limit / max(interval, 0.1)) + 2):
        try:
            done, seen = sample(site, service, api)
        except Exception as exc:  # a look that fails is an observation, not the end
            done, seen = False, f"{type(exc).__name__}: {exc}"[:300]
        samples = [*samples, f"{time.strftime('%H:%M:%S')} {seen}"][-KEEP_SAMPLES:]
        if done:
            seconds = round(time.monotonic() - start, 2)
            if journal is not None:
                journal.event(Event.RECOVERY_DONE, procedure=f"{service} (platform)",
                              seconds=seconds, sample=seen)
                journal.event(Event.RECOVERY_SECONDS, procedure=f"{service} (platform)",
                              seconds=seconds)
            return Watched(service, cluster.platform, True, seconds, limit, samples)
        if time.monotonic() >= end:
            break
        time.sleep(min(interval, max(0.0, end - time.monotonic())))
    found = evidence(site, service, api)
    watched = Watched(service, cluster.platform, False, round(time.monotonic() - start, 2),
                      limit, samples, found)
    if journal is not None:
        journal.event(Event.RECOVERY_FAILED, procedure=f"{service} (platform)",
                      why=watched.describe())
    return watched


P = TypeVar("P", bound=Plan)


def recovered_by_platform(site: Site, service: str, cls: type[P], *,
                          journal: Journal | None = None) -> P:
    """A procedure's answer where the platform owns the cluster: watch it recover, and
    say so as a Plan with no step (its MTTR and last sample in the notes); a platform
    that stalls is a failed verdict, with the evidence."""
    watched = watch(site, service, journal=journal)
    if not watched.recovered:
        raise PlatformStalled(watched.describe() + f"\nthe harness acts only when asked: "
                              f"chaos recover {service} --take-over")
    return cls(procedure=service, situation=f"recovered by {watched.platform}",
               by_platform=True,
               notes=[f"the platform brought it back in {watched.seconds:.1f}s; the harness "
                      "only watched", *watched.samples[-1:]])
