"""OpenStack as its users see it: a connection (openstacksdk) to the site's cloud, a
bounded boot-and-delete workload in the shape of Rally's
``NovaServers.boot_and_delete_server`` with token and list reads beside it, and its
verdict: the operations' success rate, the longest window of API errors, the servers
left behind (removed by the verdict, bounded), and placement's allocations held against
nova's instances after the heal (nothing orphaned, nothing doubled).

Which cloud: the site's ``openstack:`` section (clouds.yaml style, an existing cloud),
or else the lab's words for it, the first controller's ``keystone`` section and
``credentials.openstack``. ``cloud_config(site)`` resolves either into a ``CloudConfig``.

Why ``BootDelete`` is not returned by a ``Service.oracle()`` hook: that hook runs for
every scenario on every site where its service is present, and the services are read
per host from the inventory. This workload is a site-level thing (an ``openstack:``
section names no host), and it creates servers: it spends the cloud's capacity, and on
a production cloud it must be asked for by the scenario, never implied by a keystone
section. So it is a class that keeps the ``Oracle`` protocol (``chaos.oracle``: start,
stop, verdict, cleanup, describe, promise), which a scenario hands to the workload
(``workload.running(also=[BootDelete(site)])``; ``workload.verdict("openstack")``
journals it and its figures become JUnit properties), or runs by itself
(``start()``, ``stop()``, ``verdict()``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from chaos import dryrun
from chaos.dryrun import refuse
from chaos.errors import ConfigError
from chaos.journal import Event
from chaos.oracle import OpLedger
from chaos.services.keystone import error_spans, error_windows

if TYPE_CHECKING:
    from openstack.connection import Connection

    from chaos.inventory import Secret, Site

# What the workload's verdict asks, unless the operator states otherwise (env): 95 % of
# boot/delete operations succeed (the seed's question: "at least 95 % of operations
# succeed") and no API stays in error longer than 30 s (a controller's loss behind a
# load balancer is a few seconds of errors; a service restarted by hand ~10-20 s).
MIN_SUCCESS = float(os.environ.get("CHAOS_OPENSTACK_MIN_SUCCESS", "0.95"))
MAX_ERROR_WINDOW = float(os.environ.get("CHAOS_OPENSTACK_MAX_ERROR_WINDOW", "30"))

API_TIMEOUT = 10.0  # a read's bound (token, lists): what the error window is made of
# a boot/delete operation's requests' bound. Rally's client waits 180 s
# (openstack_client_http_timeout); nova-api answers a create only once its cast to the
# conductor is sent, and a cast that went to a RabbitMQ node just cut off waits for
# oslo.messaging to reconnect to another: 9-18 s measured here, then 202 and a server
# that boots. A user of the cloud saw a slow create, not a failed one; the slowest
# request is reported beside the verdict.
REQUEST_TIMEOUT = 60.0
ACTIVE_TIMEOUT = 180.0  # a server ACTIVE (TCG on two shared cores: 2-5 s here)
DELETE_TIMEOUT = 120.0  # a server gone
CLEANUP_TIMEOUT = 180.0  # every leftover removed
SETTLE_TIMEOUT = 60.0  # placement agreeing with nova after the heal
PLACEMENT_MICROVERSION = "1.14"
EXISTING_LIMIT = 1000  # servers that existed before, followed through the run
NOVA_MICROVERSION = "2.47"  # a server's flavor embedded (vcpus, ram)


# ---- the cloud ---------------------------------------------------------------------


@dataclass(frozen=True)
class CloudConfig:
    """A cloud's address and a user of it, from the inventory; the password by
    reference, revealed only when a connection is made."""

    auth_url: str
    username: str
    password: Secret = field(repr=False)
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    region_name: str | None = None
    interface: str = "public"
    verify: bool = True
    cacert: Path | None = None
    image: str | None = None
    flavor: str | None = None
    source: str = "openstack"  # which part of the inventory said it


def cloud_config(site: Site) -> CloudConfig:
    """The site's cloud: its ``openstack:`` section, or else the first controller's
    keystone and ``credentials.openstack`` (the lab's words); ConfigError without
    either."""
    if site.openstack is not None:
        o = site.openstack
        return CloudConfig(o.auth.auth_url, o.auth.username, o.auth.password,
                           o.auth.project_name, o.auth.user_domain_name,
                           o.auth.project_domain_name, o.region_name, o.interface, o.verify,
                           o.cacert, o.image, o.flavor, "openstack")
    creds = site.credentials.openstack
    keystone = next((c.keystone for c in site.controllers if c.keystone), None)
    if creds is None or keystone is None:
        raise ConfigError("openstack: the inventory has no openstack section (nor a "
                          "controller's keystone with credentials.openstack)")
    return CloudConfig(keystone.url, creds.user, creds.password, creds.project,
                       creds.user_domain, creds.project_domain, source="keystone")


def connect(config: CloudConfig, *, timeout: float = API_TIMEOUT) -> Connection:
    """An openstacksdk connection from ``config`` alone (no clouds.yaml, no OS_*
    variables), every request bounded by ``timeout``."""
    refuse(f"connecting to OpenStack at {config.auth_url}")
    import openstack

    verify: bool | str = str(config.cacert) if config.cacert and config.verify else config.verify
    return openstack.connect(
        load_yaml_config=False, load_envvars=False, auth_type="password",
        auth={"auth_url": config.auth_url, "username": config.username,
              "password": config.password.reveal(), "project_name": config.project_name,
              "user_domain_name": config.user_domain_name,
              "project_domain_name": config.project_domain_name},
        region_name=config.region_name, interface=config.interface, verify=verify,
        api_timeout=timeout)


# ---- what was seen -----------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One API request: when it was sent (seconds since the workload's start), which
    API, what it asked, whether it was answered, how long it took, what went wrong."""

    sent: float
    api: str  # "compute", "identity", "placement"
    what: str  # "create", "poll", "delete", "token", "list servers"…
    ok: bool
    seconds: float
    error: str = ""


@dataclass(frozen=True)
class Operation:
    """One boot-and-delete: its server's name and id, whether it completed, and where
    it stopped when it did not."""

    name: str
    ok: bool
    seconds: float
    server_id: str | None = None
    failed_at: str = ""  # "create", "active", "delete", "gone"
    error: str = ""


def longest_error_window(requests: Sequence[Request], end: float) -> tuple[float, str]:
    """The longest stretch of failed requests to one API, from its first failure to
    that API's next success (or ``end``), and which API. Per API, because a read of
    keystone that succeeds says nothing of nova's API."""
    best, which = 0.0, ""
    for api in sorted({r.api for r in requests}):
        samples = [(r.sent, r.ok) for r in sorted(requests, key=lambda r: r.sent)
                   if r.api == api]
        longest = max(error_windows(samples, end), default=0.0)
        if longest > best:
            best, which = longest, api
    return best, which


def api_error_spans(requests: Sequence[Request], end: float,
                    ) -> dict[str, list[tuple[float, float]]]:
    """Per API, each stretch of its failed requests as (began, ended) in the
    workload's seconds: what the report's timeline draws as that API's lane."""
    ordered = sorted(requests, key=lambda r: r.sent)
    found = {api: error_spans([(r.sent, r.ok) for r in ordered if r.api == api], end)
             for api in sorted({r.api for r in requests})}
    return {api: spans for api, spans in found.items() if spans}


# ---- placement against nova --------------------------------------------------------

# consumer id -> resource class -> amount, per resource provider
Allocations = Mapping[str, Mapping[str, Mapping[str, int]]]


@dataclass(frozen=True)
class PlacementCheck:
    """Placement's allocations held against nova's instances: an allocation whose
    consumer nova does not know is orphaned; an instance allocated on two providers,
    or for more than its flavor, is doubled; an instance with no allocation is
    reported (a server still being scheduled has none), not failed."""

    providers: int
    consumers: int
    instances: int
    orphaned: tuple[str, ...] = ()
    doubled: tuple[str, ...] = ()
    unallocated: tuple[str, ...] = ()
    error: str = ""  # the check could not be made (no answer, no admin rights)

    @property
    def ok(self) -> bool:
        return not self.error and not self.orphaned and not self.doubled

    def describe(self) -> str:
        if self.error:
            return f"not checked: {self.error}"
        text = (f"{self.consumers} consumers on {self.providers} providers, "
                f"{self.instances} instances")
        for what in ("orphaned", "doubled", "unallocated"):
            ids: tuple[str, ...] = getattr(self, what)
            if ids:
                text += f"; {len(ids)} {what}: {', '.join(ids[:5])}"
        return text


def placement_consistency(allocations: Allocations,
                          instances: Mapping[str, Mapping[str, int] | None], *,
                          others: frozenset[str] = frozenset()) -> PlacementCheck:
    """Pure: ``allocations`` per provider (provider -> consumer -> resources),
    ``instances`` nova knows (id -> its flavor's {"VCPU", "MEMORY_MB"}, or None when
    not known), ``others`` consumers that are nova's but no instance (migrations)."""
    where: dict[str, list[str]] = {}
    totals: dict[str, dict[str, int]] = {}
    for provider, consumers in allocations.items():
        for consumer, resources in consumers.items():
            where.setdefault(consumer, []).append(provider)
            total = totals.setdefault(consumer, {})
            for rc, amount in resources.items():
                total[rc] = total.get(rc, 0) + int(amount)
    orphaned = sorted(c for c in where if c not in instances and c not in others)
    doubled = set()
    for consumer, providers in where.items():
        if consumer not in instances:
            continue
        if len(providers) > 1:
            doubled.add(consumer)
        flavor = instances[consumer]
        if flavor is not None and any(totals[consumer].get(rc, 0) > amount
                                      for rc, amount in flavor.items()):
            doubled.add(consumer)
    unallocated = sorted(i for i in instances if i not in where)
    return PlacementCheck(len(allocations), len(where), len(instances), tuple(orphaned),
                          tuple(sorted(doubled)), tuple(unallocated))


def _json(response: Any, what: str) -> Any:
    if response.status_code >= 400:
        raise _Refused(f"{what}: HTTP {response.status_code}")
    return response.json()


class _Refused(Exception):
    """An API answered with an error."""


def read_placement(conn: Connection, *, max_providers: int = 1000) -> PlacementCheck:
    """Every resource provider's allocations and every instance nova knows (all
    projects: an admin's view), read through ``conn``'s session; never raising."""
    refuse("reading placement's allocations and nova's instances")
    try:
        providers = _json(conn.placement.get("/resource_providers",
                                             microversion=PLACEMENT_MICROVERSION),
                          "placement: list providers")["resource_providers"]
        allocations: dict[str, dict[str, dict[str, int]]] = {}
        for provider in providers[:max_providers]:
            body = _json(conn.placement.get(
                f"/resource_providers/{provider['uuid']}/allocations",
                microversion=PLACEMENT_MICROVERSION), "placement: allocations")
            allocations[provider["uuid"]] = {
                consumer: dict(entry.get("resources", {}))
                for consumer, entry in body.get("allocations", {}).items()}
        instances: dict[str, dict[str, int] | None] = {}
        marker = ""
        for _ in range(100):  # pages of 1000: bounded
            query = "/servers/detail?all_tenants=1&limit=1000" + (
                f"&marker={marker}" if marker else "")
            servers = _json(conn.compute.get(query, microversion=NOVA_MICROVERSION),
                            "compute: list servers")["servers"]
            for s in servers:
                flavor = s.get("flavor") or {}
                instances[s["id"]] = ({"VCPU": int(flavor["vcpus"]),
                                       "MEMORY_MB": int(flavor["ram"])}
                                      if "vcpus" in flavor and "ram" in flavor else None)
            if len(servers) < 1000:
                break
            marker = servers[-1]["id"]
        migrations: frozenset[str] = frozenset()
        answer = conn.compute.get("/os-migrations", microversion="2.59")
        if answer.status_code < 400:
            migrations = frozenset(m["uuid"] for m in answer.json().get("migrations", [])
                                   if m.get("uuid") and m.get("status") not in
                                   ("completed", "error", "failed", "done", "cancelled"))
    except Exception as exc:  # no answer, no rights, a changed API: not checked
        return PlacementCheck(0, 0, 0, error=f"{type(exc).__name__}: {str(exc)[:160]}")
    return placement_consistency(allocations, instances, others=migrations)


# ---- the verdict -------------------------------------------------------------------


@dataclass(frozen=True)
class BootDeleteVerdict:
    """How the cloud served the workload, and what it left."""

    operations: int
    succeeded: int
    requests: int
    requests_ok: int
    error_window: float  # seconds: the longest stretch of errors of one API
    error_window_api: str
    first_error: str
    left_behind: int = 0  # the workload's servers still there when it stopped
    removed: int = 0  # of those, removed by the verdict
    not_removed: int = 0  # could not be removed within CLEANUP_TIMEOUT
    placement: PlacementCheck | None = None  # None: not checked
    min_success: float = MIN_SUCCESS
    max_window: float = MAX_ERROR_WINDOW
    existing: int = 0  # servers of others ACTIVE when the workload began
    not_intact: tuple[str, ...] = ()  # of those, not ACTIVE at the verdict ("name: status")
    # when it ran (wall clock, s) and each API's error spans (s since then): the
    # report's timeline draws a lane per API from them
    began: float | None = None
    ended: float | None = None
    spans: Mapping[str, Sequence[tuple[float, float]]] = field(default_factory=dict)
    apis: tuple[str, ...] = ()  # every API the workload asked
    slowest: float = 0.0  # seconds: the slowest request, answered or not
    slowest_what: str = ""  # which ("compute create")

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.operations if self.operations else 0.0

    @property
    def event(self) -> Event:
        return Event.ORACLE_OPENSTACK

    @property
    def acknowledged_total(self) -> int:
        return self.succeeded

    @property
    def first_lost(self) -> object:
        return self.first_error

    @property
    def ok(self) -> bool:
        return (self.operations > 0 and self.success_rate >= self.min_success
                and self.error_window <= self.max_window and self.not_removed == 0
                and not self.not_intact
                and (self.placement is None or self.placement.ok))

    def fields(self) -> dict[str, Any]:
        return {"operations": self.operations, "succeeded": self.succeeded,
                "success_rate": round(self.success_rate, 3), "requests": self.requests,
                "requests_ok": self.requests_ok, "error_window": round(self.error_window, 1),
                "error_window_api": self.error_window_api, "first_error": self.first_error,
                "left_behind": self.left_behind, "removed": self.removed,
                "not_removed": self.not_removed, "existing": self.existing,
                "not_intact": list(self.not_intact), "began": self.began,
                "ended": self.ended, "requested": sorted(self.apis),
                "slowest": round(self.slowest, 1), "slowest_what": self.slowest_what,
                "spans": {api: [[round(a, 2), round(b, 2)] for a, b in spans]
                          for api, spans in self.spans.items()},
                "placement_ok": None if self.placement is None else self.placement.ok,
                "placement": None if self.placement is None else self.placement.describe()}

    def summary(self) -> str:
        text = (f"OpenStack boot/delete: {self.succeeded}/{self.operations} operations "
                f"({self.success_rate:.0%}, wanted >= {self.min_success:.0%}), "
                f"{self.requests_ok}/{self.requests} requests answered, longest error "
                f"window {self.error_window:.1f}s"
                + (f" ({self.error_window_api})" if self.error_window_api else "")
                + f" (wanted <= {self.max_window:g}s)"
                + (f", slowest request {self.slowest:.1f}s ({self.slowest_what})"
                   if self.slowest_what else "")
                + f", {self.left_behind} servers left "
                f"behind ({self.removed} removed, {self.not_removed} not), "
                f"{self.existing - len(self.not_intact)}/{self.existing} servers that "
                "existed before still ACTIVE"
                + (f" (not: {', '.join(self.not_intact[:5])})" if self.not_intact else ""))
        if self.placement is not None:
            text += ("; placement consistent" if self.placement.ok
                     else f"; placement INCONSISTENT: {self.placement.describe()}")
        return text


def judge(operations: Sequence[Operation], requests: Sequence[Request], end: float, *,
          left_behind: int = 0, removed: int = 0, placement: PlacementCheck | None = None,
          min_success: float | None = None, max_window: float | None = None,
          existing: int = 0, not_intact: Sequence[str] = (),
          began: float | None = None) -> BootDeleteVerdict:
    """Pure: the verdict from what was seen (``end``: seconds since the start)."""
    window, api = longest_error_window(requests, end)
    slow = max(requests, key=lambda r: r.seconds, default=None)
    # the first request that failed; else the first operation that did (a server that
    # went to ERROR fails its operation with every request answered)
    first = next((f"{r.api} {r.what}: {r.error}"
                  for r in sorted(requests, key=lambda r: r.sent) if not r.ok), "") or next(
        (f"{o.name} at {o.failed_at}: {o.error}" for o in operations if not o.ok), "")
    return BootDeleteVerdict(
        len(operations), sum(1 for o in operations if o.ok), len(requests),
        sum(1 for r in requests if r.ok), window, api, first[:160], left_behind, removed,
        left_behind - removed, placement,
        MIN_SUCCESS if min_success is None else min_success,
        MAX_ERROR_WINDOW if max_window is None else max_window, existing,
        tuple(not_intact), began, None if began is None else began + end,
        api_error_spans(requests, end), tuple(sorted({r.api for r in requests})),
        slow.seconds if slow else 0.0, f"{slow.api} {slow.what}" if slow else "")


# ---- the workload ------------------------------------------------------------------


def _error(exc: BaseException) -> str:
    """An exception in one line, cut: the SDK's messages name URLs, never a password."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:200]


def _not_found(exc: BaseException) -> bool:
    from openstack import exceptions

    return isinstance(exc, exceptions.NotFoundException)


class BootDelete:
    """Rally's ``NovaServers.boot_and_delete_server``, bounded: ``concurrency`` workers
    each boot a server (no NIC: ``networks="none"``), wait for ACTIVE (bounded), delete
    it and wait until it is gone (bounded), until ``max_ops`` operations or
    ``max_seconds``; beside them one reader validates its token and lists servers and
    flavors every ``read_interval``. Every request's outcome and latency is kept
    (``requests``), every operation's (``operations``). Server names carry a prefix
    unique to the run, so the verdict's cleanup finds this run's servers alone. The
    workers' requests are bounded by ``request_timeout`` (a user's patience, not a
    reader's: see REQUEST_TIMEOUT), the reader's by ``timeout``.

    A status poll that fails is recorded and, by default, waited past (the server may
    well become ACTIVE while the API is down: what a user of the cloud sees is a boot
    that took longer); with ``strict=True`` it fails the operation, as Rally's
    ``wait_for_status`` does, and the server is deleted if the API lets it, else left to
    the verdict's cleanup. A failed create or delete fails the operation either way, and
    a worker pauses ``backoff`` seconds after a failure rather than spin on a dead API.
    Each thread has a connection of its own (an SDK connection is not shared between
    threads). Concurrency 2 by default: a boot costs this 2-core machine's nova-compute
    and qemu (TCG) about a core for a few seconds."""

    name = "openstack"
    kind: Literal["data", "availability"] = "availability"

    def __init__(self, site: Site | None = None, *, config: CloudConfig | None = None,
                 image: str | None = None, flavor: str | None = None, concurrency: int = 2,
                 max_ops: int = 200, max_seconds: float = 900.0, read_interval: float = 1.0,
                 backoff: float = 2.0, check_placement: bool = True, strict: bool = False,
                 active_timeout: float = ACTIVE_TIMEOUT,
                 delete_timeout: float = DELETE_TIMEOUT, timeout: float = API_TIMEOUT,
                 request_timeout: float = REQUEST_TIMEOUT,
                 min_success: float | None = None, max_window: float | None = None) -> None:
        if config is None:
            if site is None:
                raise ConfigError("openstack workload: give a site or a cloud config")
            config = cloud_config(site)
        self.config = config
        for what, value in (("image", image or config.image),
                            ("flavor", flavor or config.flavor)):
            if not value:
                raise ConfigError(f"openstack.{what}: the boot/delete workload needs the "
                                  f"{what} its servers boot from")
        self.image: str = image or config.image or ""
        self.flavor: str = flavor or config.flavor or ""
        if concurrency < 1:
            raise ConfigError("openstack workload: concurrency must be at least 1")
        self.concurrency, self.max_ops, self.max_seconds = concurrency, max_ops, max_seconds
        self.read_interval, self.backoff, self.timeout = read_interval, backoff, timeout
        self.request_timeout = request_timeout
        self.active_timeout, self.delete_timeout = active_timeout, delete_timeout
        self.check_placement = check_placement
        self.strict = strict
        self.min_success, self.max_window = min_success, max_window
        self.prefix = f"chaos-bd-{uuid.uuid4().hex[:8]}"
        self.ledger = OpLedger()
        self.requests: list[Request] = []
        self.operations: list[Operation] = []
        self.created: dict[str, str] = {}  # name -> server id, as create returned
        self._stop = threading.Event()
        self._next = 0
        self._started = 0.0
        self._threads: list[threading.Thread] = []
        self._ids: tuple[str, str] | None = None  # the image's and flavor's ids
        self.existing: dict[str, str] = {}  # id -> name: others' ACTIVE servers at start
        self._wall: float | None = None  # time.time() at start

    # ---- Oracle words ------------------------------------------------------------
    def describe(self) -> str:
        return (f"openstack: boot and delete servers {self.prefix}-* ({self.concurrency} "
                f"at a time{', strict polls' if self.strict else ''}, image {self.image}, "
                f"flavor {self.flavor}, no NIC) at "
                f"{self.config.auth_url}, with a token and list read every "
                f"{self.read_interval:g}s")

    def promise(self) -> str:
        wanted = MIN_SUCCESS if self.min_success is None else self.min_success
        window = MAX_ERROR_WINDOW if self.max_window is None else self.max_window
        return (f"at least {wanted:.0%} of boot/delete operations succeeded, no API error "
                f"window longer than {window:g}s, every server of the run removed"
                + (", placement's allocations match nova's instances" if
                   self.check_placement else ""))

    # ---- running -----------------------------------------------------------------
    def _now(self) -> float:
        return time.monotonic() - self._started

    def _record(self, api: str, what: str, call: Callable[[], Any]) -> tuple[bool, Any, str]:
        """Run one request; keep its outcome and latency. (ok, result, error)."""
        sent = self._now()
        clock = time.monotonic()
        try:
            result = call()
        except Exception as exc:  # every failure is an observation
            error = _error(exc)
            self._keep(Request(sent, api, what, False, time.monotonic() - clock, error))
            return False, exc, error
        self._keep(Request(sent, api, what, True, time.monotonic() - clock))
        return True, result, ""

    def _keep(self, request: Request) -> None:
        with self.ledger.lock:
            self.requests.append(request)

    def _take(self) -> int | None:
        """The next operation's number, or None when the run is over."""
        with self.ledger.lock:
            if (self._stop.is_set() or self._next >= self.max_ops
                    or self._now() >= self.max_seconds):
                return None
            self._next += 1
            return self._next - 1

    def start(self) -> None:
        refuse("starting the OpenStack boot/delete workload")
        self._started = time.monotonic()
        self._wall = time.time()
        # resolved once, before the fault: an image or flavor that does not exist is
        # the inventory's mistake, not the cloud's
        conn = connect(self.config, timeout=self.timeout)
        try:
            image = conn.image.find_image(self.image, ignore_missing=True)
            flavor = conn.compute.find_flavor(self.flavor, ignore_missing=True)
            # the servers that were there before (every project's: admin rights): the
            # verdict finds each still ACTIVE
            self.existing = {str(s.id): str(s.name) for s in itertools.islice(
                conn.compute.servers(details=False, all_projects=True, status="ACTIVE"),
                EXISTING_LIMIT) if not str(s.name).startswith(self.prefix)}
        finally:
            conn.close()
        if image is None or flavor is None:
            what = "image" if image is None else "flavor"
            raise ConfigError(f"openstack.{what}: {getattr(self, what)!r} not found at "
                              f"{self.config.auth_url}")
        self._ids = (str(image.id), str(flavor.id))
        self._threads = [threading.Thread(target=self._worker, name=f"boot-delete-{i}",
                                          daemon=True) for i in range(self.concurrency)]
        self._threads.append(threading.Thread(target=self._reader, name="openstack-reads",
                                              daemon=True))
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Ask every thread to stop and wait for them: an operation in flight goes on
        to its delete, so this waits up to the larger of ``timeout`` and a delete's
        bounds; a thread still busy after that is left to its own bounds (the verdict's
        cleanup finds its server by the run's prefix)."""
        self._stop.set()
        deadline = time.monotonic() + max(timeout, self.delete_timeout
                                          + 2 * self.request_timeout)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def wait(self, timeout: float) -> bool:
        """Wait until the workload has run its course (max_ops or max_seconds) or
        ``timeout``; whether it did."""
        deadline = time.monotonic() + timeout
        for t in self._threads[:-1]:  # the workers; the reader runs until stop
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads[:-1])

    def _worker(self) -> None:
        conn = connect(self.config, timeout=self.request_timeout)
        try:
            while True:
                n = self._take()
                if n is None:
                    return
                op = self._boot_and_delete(conn, f"{self.prefix}-{n:04d}")
                with self.ledger.lock:
                    self.operations.append(op)
                    self.ledger.attempts += 1
                    if op.ok:
                        self.ledger.acked.add(op.name)
                    else:
                        self.ledger.failed += 1
                if not op.ok:
                    self._stop.wait(self.backoff)
        finally:
            conn.close()

    def _boot_and_delete(self, conn: Connection, name: str) -> Operation:
        assert self._ids is not None
        image, flavor = self._ids
        clock = time.monotonic()

        def failed(stage: str, error: str, server: str | None) -> Operation:
            return Operation(name, False, time.monotonic() - clock, server, stage, error)

        ok, made, error = self._record("compute", "create", lambda: conn.compute.create_server(
            name=name, image_id=image, flavor_id=flavor, networks="none"))
        if not ok:
            return failed("create", error, None)
        server = str(made.id)
        with self.ledger.lock:
            self.created[name] = server
        status = self._poll(conn, server, self.active_timeout,
                            lambda s: s is not None and s.status in ("ACTIVE", "ERROR"))
        if status != "ACTIVE":
            # an ERROR or a server that never came: delete it all the same
            self._record("compute", "delete", lambda: conn.compute.delete_server(server))
            return failed("active", f"status {status}", server)
        ok, _, error = self._record("compute", "delete",
                                    lambda: conn.compute.delete_server(server))
        if not ok:
            return failed("delete", error, server)
        gone = self._poll(conn, server, self.delete_timeout, lambda s: s is None)
        if gone != "gone":
            return failed("gone", f"not gone: {gone}", server)
        return Operation(name, True, time.monotonic() - clock, server)

    def _poll(self, conn: Connection, server: str, timeout: float,
              done: Callable[[Any], bool]) -> str:
        """GET the server each second until ``done`` (of the server, None once it is
        gone) or ``timeout``; its last status, "gone", or "unknown". A failed GET is
        recorded and waited past, or, ``strict``, ends the wait at once."""
        deadline = time.monotonic() + timeout
        last = "unknown"
        while time.monotonic() < deadline:
            ok, found, _ = self._record("compute", "poll", lambda: _server_or_none(conn, server))
            if ok:
                last = "gone" if found is None else str(found.status)
                if done(found):
                    return last
            elif self.strict:
                return "unknown (the poll failed)"
            time.sleep(1.0)
        return last

    def _reader(self) -> None:
        conn: Connection | None = None
        n = 0
        while not self._stop.is_set():
            clock = time.monotonic()
            if conn is None:
                ok, made, _ = self._record("identity", "connect",
                                           lambda: connect(self.config, timeout=self.timeout))
                conn = made if ok else None
            if conn is not None:
                api, what, read = READS[n % len(READS)]
                self._record(api, what, functools.partial(read, conn))
                n += 1
            self._stop.wait(max(0.0, self.read_interval - (time.monotonic() - clock)))
        if conn is not None:
            conn.close()

    # ---- the verdict -------------------------------------------------------------
    def leftovers(self, conn: Connection) -> list[str]:
        """The ids of this run's servers still listed (by the run's name prefix)."""
        servers = conn.compute.servers(details=False, name=f"^{self.prefix}-")
        return [str(s.id) for s in servers if str(s.name).startswith(self.prefix + "-")]

    def remove(self, conn: Connection, ids: Sequence[str],
               timeout: float = CLEANUP_TIMEOUT) -> int:
        """Delete ``ids`` and wait (bounded) until they are gone; how many went."""
        for server in ids:
            self._record("compute", "cleanup delete", functools.partial(
                conn.compute.delete_server, server, ignore_missing=True))
        return len(ids) - len(_wait_gone(conn, ids, timeout))

    def verdict(self, *, settle: float = SETTLE_TIMEOUT) -> BootDeleteVerdict:
        """The workload's figures, its leftovers removed (bounded), and, with
        ``check_placement``, placement against nova once both agree or ``settle``
        seconds have passed (a deleted server's allocation goes a moment after it)."""
        refuse("judging the OpenStack workload")
        end = self._now()
        with self.ledger.lock:
            operations, requests = list(self.operations), list(self.requests)
        left: list[str] = []
        removed = 0
        placement: PlacementCheck | None = None
        conn: Connection | None = None
        not_intact: list[str] = []
        try:
            conn = connect(self.config, timeout=self.timeout)
            if self.existing:
                now = {str(s.id): str(s.status) for s in itertools.islice(
                    conn.compute.servers(all_projects=True), 2 * EXISTING_LIMIT)}
                not_intact = [f"{name}: {now.get(server, 'gone')}"
                              for server, name in self.existing.items()
                              if now.get(server) != "ACTIVE"]
            left = self.leftovers(conn)
            removed = self.remove(conn, left)
            if self.check_placement:
                deadline = time.monotonic() + settle
                while True:
                    placement = read_placement(conn)
                    if placement.ok or time.monotonic() >= deadline:
                        break
                    time.sleep(3.0)
        except Exception as exc:  # the cloud did not answer the verdict's questions
            # what may be left: the servers of the operations that did not finish
            left = left or [o.server_id for o in operations if not o.ok and o.server_id]
            placement = PlacementCheck(0, 0, 0, error=f"verdict: {_error(exc)}")
        finally:
            if conn is not None:
                conn.close()
        return judge(operations, requests, end, left_behind=len(left), removed=removed,
                     placement=placement, min_success=self.min_success,
                     max_window=self.max_window, existing=len(self.existing),
                     not_intact=not_intact, began=self._wall)

    def cleanup(self) -> None:
        """The verdict removed this run's servers; nothing else is left."""


def _ok(response: Any, what: str) -> Any:
    if response.status_code >= 400:
        raise _Refused(f"{what}: HTTP {response.status_code}")
    return response


def _server_or_none(conn: Connection, server: str) -> Any:
    """The server, or None once it is gone (a 404 is the API's answer, not a failure)."""
    try:
        return conn.compute.get_server(server)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def _wait_gone(conn: Connection, ids: Sequence[str], timeout: float) -> set[str]:
    """Ask after each of ``ids`` every 2 s until all are gone or ``timeout``; the ones
    still there (a GET that fails is asked again)."""
    deadline = time.monotonic() + timeout
    left = set(ids)
    while left and time.monotonic() < deadline:
        for server in sorted(left):
            with contextlib.suppress(Exception):  # no answer: asked again
                if _server_or_none(conn, server) is None:
                    left.discard(server)
        if left:
            time.sleep(2.0)
    return left


def _validate_token(conn: Connection) -> None:
    """GET /v3/auth/tokens for the connection's own token: keystone validates it (its
    user, project, roles, revocations: a read that reaches the database), no bcrypt."""
    session = conn.session
    token = session.get_token()
    url = conn.config.get_auth_args()["auth_url"].rstrip("/") + "/auth/tokens"
    _ok(session.get(url, headers={"X-Subject-Token": token}, raise_exc=False,
                    authenticated=True), "validate token")


def _list(path: str) -> Callable[[Connection], Any]:
    def read(conn: Connection) -> Any:
        return _ok(conn.compute.get(path), f"GET {path}")
    return read


# the reader's cycle: a token validated, then two list reads of nova's API
READS: tuple[tuple[str, str, Callable[[Connection], Any]], ...] = (
    ("identity", "token", _validate_token),
    ("compute", "list servers", _list("/servers?limit=5")),
    ("compute", "list flavors", _list("/flavors?limit=5")),
)


# ---- a compute host, as nova sees it, around a compute drill ------------------------

# nova-compute notices a lost libvirt at its next call and disables itself ("Connection
# to libvirt lost"); it enables itself again once it reconnects, at the latest with the
# next run of update_available_resource (every 60 s by default). The service then
# reports "up" within report_interval (10 s). Two minutes leave room for both.
COMPUTE_UP_WITHIN = float(os.environ.get("CHAOS_NOVA_COMPUTE_UP_WITHIN", "120"))
WITNESS_PREFIX = "chaos-witness"


@dataclass(frozen=True)
class NovaHostVerdict:
    """What nova said of one compute host after a drill: its nova-compute ``up`` and
    enabled again (seconds after the check began, or None: not within ``within``),
    every server it had ACTIVE before still ACTIVE (``lost``: the others, with what was
    seen), and a new server booted there (its outcome)."""

    host: str
    within: float
    up_after: float | None
    service: str  # the last state seen: "up, enabled" or what was wrong
    kept: list[str]
    lost: list[str]
    new_boot: str  # "ACTIVE in 3.1s" or what went wrong
    booted: bool
    seen: tuple[str, ...] = ()  # the service's states, in the order first seen

    @property
    def ok(self) -> bool:
        return self.up_after is not None and not self.lost and self.booted

    def fields(self) -> dict[str, Any]:
        return {"host": self.host, "within": self.within, "up_after": self.up_after,
                "service": self.service, "kept": self.kept, "lost": self.lost,
                "new_boot": self.new_boot, "booted": self.booted, "seen": list(self.seen),
                "ok": self.ok}

    def summary(self) -> str:
        up = (f"up and enabled {self.up_after:.1f}s after the check began" if self.up_after
              is not None else f"NOT up and enabled within {self.within:g}s "
              f"({self.service})")
        if len(self.seen) > 1:
            up += f" (seen: {' -> '.join(self.seen)})"
        lost = f", not ACTIVE now: {'; '.join(self.lost)}" if self.lost else ""
        return (f"nova-compute on {self.host} {up}; {len(self.kept)} of "
                f"{len(self.kept) + len(self.lost)} servers still ACTIVE{lost}; a new "
                f"server there: {self.new_boot}")


class NovaHost:
    """Nova's view of one compute host around a drill, where the site names its cloud
    and nova runs a compute service on that host (nova's host name is the inventory's):

    - ``before()``: the servers nova has ACTIVE there; when it has none, one witness is
      booted there (``availability_zone="nova:<host>"``: admin rights), so that the VM
      oracle, which reads qemu from libvirt, follows a server nova knows;
    - ``verdict()``: nova-compute ``up`` and enabled again within ``within`` seconds,
      every server ACTIVE before still ACTIVE, and a new server boots there and is
      deleted again;
    - ``cleanup()``: the witness and any new server deleted (bounded).

    The qemu identity of those servers (same pid, same start time) is the VM oracle's:
    their libvirt domains carry the servers' ids as UUIDs."""

    def __init__(self, site: Site, host: str, *, config: CloudConfig | None = None,
                 within: float = COMPUTE_UP_WITHIN, timeout: float = API_TIMEOUT) -> None:
        self.host = host
        self.config = config or cloud_config(site)
        self.within, self.timeout = within, timeout
        self.servers: dict[str, str] = {}  # id -> name, ACTIVE before the drill
        self.made: list[str] = []  # servers booted here, to delete at cleanup

    @classmethod
    def where_running(cls, site: Site, host: str, **kwargs: Any) -> NovaHost | None:
        """A NovaHost for ``host``, or None where the site names no cloud (an
        ``openstack:`` section) or nova has no compute service on ``host``. In a dry
        run, the plan says what would be checked."""
        if site.openstack is None:
            return None
        rehearsal = dryrun.active()
        if rehearsal is not None:
            rehearsal.step(f"where nova runs a compute service on {host}: record its ACTIVE "
                           "servers (boot a witness there when it has none); after the "
                           "recovery, nova-compute up and enabled again within "
                           f"{COMPUTE_UP_WITHIN:g}s, every one of them still ACTIVE, a new "
                           "server boots there")
            return None
        nova = cls(site, host, **kwargs)
        conn = connect(nova.config, timeout=nova.timeout)
        try:
            hosts = {str(s.host) for s in conn.compute.services(binary="nova-compute")}
        finally:
            conn.close()
        return nova if host in hosts else None

    def describe(self) -> str:
        return f"nova on {self.host} at {self.config.auth_url}"

    def _boot(self, conn: Connection, name: str) -> tuple[str | None, str]:
        """Boot ``name`` on this host and wait (bounded) for ACTIVE: (id, outcome)."""
        image = conn.image.find_image(self.config.image or "", ignore_missing=True)
        flavor = conn.compute.find_flavor(self.config.flavor or "", ignore_missing=True)
        if image is None or flavor is None:
            raise ConfigError(f"openstack.image and openstack.flavor: name an image and a "
                              f"flavor at {self.config.auth_url} (a server is booted on "
                              f"{self.host})")
        clock = time.monotonic()
        try:
            made = conn.compute.create_server(
                name=name, image_id=image.id, flavor_id=flavor.id, networks="none",
                availability_zone=f"nova:{self.host}")
        except Exception as exc:
            return None, f"create failed: {_error(exc)}"
        server = str(made.id)
        self.made.append(server)
        status = "unknown"
        deadline = time.monotonic() + ACTIVE_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # no answer: asked again
                found = _server_or_none(conn, server)
                status = "gone" if found is None else str(found.status)
                if status in ("ACTIVE", "ERROR", "gone"):
                    break
            time.sleep(1.0)
        if status == "ACTIVE":
            return server, f"ACTIVE in {time.monotonic() - clock:.1f}s"
        return server, f"{status} after {time.monotonic() - clock:.0f}s"

    def before(self) -> None:
        refuse(f"reading nova's servers on {self.host}")
        conn = connect(self.config, timeout=self.timeout)
        try:
            self.servers = {str(s.id): str(s.name) for s in conn.compute.servers(
                all_projects=True, host=self.host, status="ACTIVE")}
            if not self.servers:
                name = f"{WITNESS_PREFIX}-{uuid.uuid4().hex[:8]}"
                server, outcome = self._boot(conn, name)
                if server is None or not outcome.startswith("ACTIVE"):
                    raise ConfigError(f"nova on {self.host}: the witness server did not "
                                      f"boot before the drill: {outcome}")
                self.servers[server] = name
        finally:
            conn.close()

    def verdict(self) -> NovaHostVerdict:
        refuse(f"judging nova on {self.host}")
        clock = time.monotonic()
        up_after: float | None = None
        service = "not seen"
        seen: list[str] = []
        conn = connect(self.config, timeout=self.timeout)
        try:
            while time.monotonic() - clock < self.within:
                try:
                    found = [s for s in conn.compute.services(binary="nova-compute")
                             if str(s.host) == self.host]
                    service = (", ".join(f"{s.state}, {s.status}"
                                         + (f" ({s.disabled_reason})" if s.disabled_reason
                                            else "") for s in found) or "no service")
                    if service not in seen:
                        seen.append(service)
                    if any(s.state == "up" and s.status == "enabled" for s in found):
                        up_after = time.monotonic() - clock
                        break
                except Exception as exc:  # the API's silence is what was seen
                    service = _error(exc)
                time.sleep(2.0)
            kept: list[str] = []
            lost: list[str] = []
            for server, name in self.servers.items():
                try:
                    found = _server_or_none(conn, server)
                    status = "gone" if found is None else str(found.status)
                except Exception as exc:
                    status = f"unknown: {_error(exc)}"
                (kept if status == "ACTIVE" else lost).append(
                    name if status == "ACTIVE" else f"{name}: {status}")
            booted, outcome = False, "not tried: nova-compute is not up"
            if up_after is not None:
                new, outcome = self._boot(conn, f"{WITNESS_PREFIX}-after-"
                                          f"{uuid.uuid4().hex[:8]}")
                booted = new is not None and outcome.startswith("ACTIVE")
        finally:
            conn.close()
        return NovaHostVerdict(self.host, self.within, up_after, service, kept, lost,
                               outcome, booted, tuple(seen))

    def cleanup(self, timeout: float = CLEANUP_TIMEOUT) -> None:
        """Delete the servers booted here and wait (bounded) until they are gone."""
        if not self.made:
            return
        conn = connect(self.config, timeout=self.timeout)
        try:
            for server in self.made:
                with contextlib.suppress(Exception):  # asked again below
                    conn.compute.delete_server(server, ignore_missing=True)
            self.made = sorted(_wait_gone(conn, self.made, timeout))
        finally:
            conn.close()


@contextlib.contextmanager
def nova_on(site: Site, host: str) -> Iterator[NovaHost | None]:
    """A compute drill's view of nova on ``host``: None where the site names no cloud
    or nova runs no compute service there; else its servers recorded (a witness booted
    when it has none) on the way in, and what it booted deleted on the way out, however
    the drill ends. Judge it with ``expect.nova_host``."""
    nova = NovaHost.where_running(site, host)
    try:
        if nova is not None:
            nova.before()
        yield nova
    finally:
        if nova is not None:
            nova.cleanup()


def boot_delete_where_named(site: Site, **kwargs: Any) -> list[BootDelete]:
    """``[BootDelete(site, **kwargs)]`` where the site names its cloud with an image and
    a flavor to boot from (an ``openstack:`` section that says so is the operator's
    consent to spend the cloud's capacity on servers), ``[]`` elsewhere: what a Galera
    or controller drill hands to ``workload.running(also=...)``.

    Such a drill reports the success rate and judges the rest (the error window,
    servers that existed before still ACTIVE, none of the run's left, placement): a
    drill lasts a handful of operations, and two failed creates of four while the
    write endpoint moves are 50 %, a figure, not a verdict (measured on the lab: the
    writer's node killed, two creates HTTP 500 within 5 s). The seed's question
    (scenarios/test_openstack.py) states a success rate and runs long enough to
    judge it."""
    o = site.openstack
    if o is None or not (o.image and o.flavor):
        return []
    return [BootDelete(site, **{"min_success": 0.0, **kwargs})]
