"""Keystone's home: OpenStack Identity on a controller, as the harness asks it (a token
issued, over HTTP, bounded) and as its faults see it (a process: pidfile, start command).

Added as a module and one line in the service table, with no edit to the core: the
generic kill, stop and freeze faults, the blast-radius guard, the monitor's lanes and
the CLI's ``--service keystone`` all come from the ``Service`` protocol.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from chaos.dryrun import refuse
from chaos.errors import ConfigError
from chaos.fanout import ask_each
from chaos.inventory import Controller
from chaos.journal import Event
from chaos.oracle import OpLedger
from chaos.services import ProcessService, Section

if TYPE_CHECKING:
    from chaos.inventory import Compute, Site


@dataclass(frozen=True)
class TokenAnswer:
    """One token request: issued or not, how long it took, and what went wrong."""

    ok: bool
    seconds: float
    error: str = ""
    token: str = field(default="", repr=False)  # a secret: never printed

    def describe(self) -> str:
        return (f"token in {self.seconds:.2f}s" if self.ok
                else f"no token ({self.error[:60]})")


def issue_token(url: str, user: str, password: str, project: str, *,
                user_domain: str = "Default", project_domain: str = "Default",
                timeout: float = 5.0) -> TokenAnswer:
    """POST ``url``/auth/tokens with a password: one bounded request, never raising."""
    refuse(f"asking keystone at {url} for a token")
    body = json.dumps({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": user_domain}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": project_domain}}}}})
    request = urllib.request.Request(url.rstrip("/") + "/auth/tokens", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    return _ask(request, 201, timeout=timeout)


def _ask(request: urllib.request.Request, want: int, *, timeout: float,
         token: str = "") -> TokenAnswer:
    """Send ``request``: answered when the status is ``want`` (and, without ``token``,
    a new token came back in X-Subject-Token); bounded, never raising."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            token = token or response.headers.get("X-Subject-Token") or ""
            ok = response.status == want and bool(token)
            return TokenAnswer(ok, time.monotonic() - started,
                               "" if ok else f"HTTP {response.status}", token)
    except urllib.error.HTTPError as exc:
        return TokenAnswer(False, time.monotonic() - started, f"HTTP {exc.code}")
    except (OSError, ValueError) as exc:  # refused, reset, timed out: all observations
        return TokenAnswer(False, time.monotonic() - started, f"{type(exc).__name__}: {exc}")


def list_projects(url: str, token: str, *, timeout: float = 5.0) -> TokenAnswer:
    """GET ``url``/auth/projects with ``token``: a read that reaches the database (the
    token's roles and projects) without a password hash; bounded, never raising."""
    refuse(f"listing projects at {url}")
    request = urllib.request.Request(url.rstrip("/") + "/auth/projects",
                                     headers={"X-Auth-Token": token})
    return _ask(request, 200, timeout=timeout, token=token)


def api_answers(url: str, *, timeout: float = 3.0) -> bool:
    """Whether the API at ``url`` serves its version document (HTTP 200), bounded."""
    refuse(f"asking keystone at {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):  # refused, reset, timed out, an HTTP error
        return False


# -- the API oracle: OpenStack kept answering -----------------------------------------

# What "kept answering" means, unless the operator states otherwise: three API reads in
# four answered, and no stretch of errors longer than 30 s. Measured on the lab: a
# Galera node's loss behind HAProxy costs one failed read (about 1 s); a drill lasts
# 20-60 s, so a short failover already weighs a few percent of its reads.
MIN_SUCCESS = float(os.environ.get("CHAOS_API_MIN_SUCCESS", "0.75"))
MAX_ERROR_WINDOW = float(os.environ.get("CHAOS_API_MAX_ERROR_WINDOW", "30"))


@dataclass(frozen=True)
class ApiVerdict:
    """How the API answered while the scenario ran."""

    requests: int
    succeeded: int
    longest_error_window: float  # seconds from a first error to the next success
    first_error: str
    min_success: float = MIN_SUCCESS
    max_window: float = MAX_ERROR_WINDOW

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.requests if self.requests else 0.0

    @property
    def event(self) -> Event:
        return Event.ORACLE_API

    @property
    def acknowledged_total(self) -> int:
        return self.succeeded

    @property
    def first_lost(self) -> object:
        return self.first_error

    @property
    def ok(self) -> bool:
        return (self.success_rate >= self.min_success
                and self.longest_error_window <= self.max_window)

    def fields(self) -> dict[str, Any]:
        return {"requests": self.requests, "succeeded": self.succeeded,
                "success_rate": round(self.success_rate, 3),
                "error_window": round(self.longest_error_window, 1),
                "first_error": self.first_error}

    def summary(self) -> str:
        return (f"keystone API: {self.succeeded}/{self.requests} reads answered "
                f"({self.success_rate:.0%}, wanted >= {self.min_success:.0%}), longest "
                f"error window {self.longest_error_window:.1f}s (wanted <= "
                f"{self.max_window:g}s)")


def error_spans(samples: list[tuple[float, bool]], end: float) -> list[tuple[float, float]]:
    """Each stretch of failed requests as (began, ended): from its first failure to the
    next success (or ``end``). ``samples``: (time sent, answered) in order."""
    spans, began = [], None
    for sent, ok in samples:
        if not ok and began is None:
            began = sent
        elif ok and began is not None:
            spans.append((began, sent))
            began = None
    if began is not None:
        spans.append((began, end))
    return spans


def error_windows(samples: list[tuple[float, bool]], end: float) -> list[float]:
    """Each stretch of failed requests, in seconds (``error_spans``' lengths)."""
    return [ended - began for began, ended in error_spans(samples, end)]


class TokenReads:
    """An API read every ``interval``, to each keystone in turn, bounded, each outcome
    and latency kept: a token when it has none (or its token was refused), then the
    token's projects, a read that reaches the database. (A token a second would cost
    keystone half a core in bcrypt alone; the scenarios beside it need the CPU.)"""

    name = "keystone"
    kind: Literal["data", "availability"] = "availability"

    def __init__(self, site: Site, *, interval: float = 1.0, max_ops: int = 1800,
                 max_seconds: float = 900.0, timeout: float = 5.0) -> None:
        creds = site.credentials.openstack
        if creds is None:
            raise ConfigError("keystone: the inventory has no credentials.openstack")
        self.creds = creds
        self.urls = [c.keystone.url for c in site.controllers if c.keystone]
        self.interval, self.max_ops, self.max_seconds = interval, max_ops, max_seconds
        self.timeout = timeout
        self.ledger = OpLedger()
        self.samples: list[tuple[float, bool, float, str]] = []  # sent, ok, seconds, why
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="keystone-reads",
                                        daemon=True)
        self._started = 0.0

    def describe(self) -> str:
        return (f"keystone: an API read (token, then its projects) every "
                f"{self.interval:g}s from {', '.join(self.urls)}")

    def promise(self) -> str:
        return (f"keystone's API answered at least {MIN_SUCCESS:.0%} of its reads, "
                f"with no error window longer than {MAX_ERROR_WINDOW:g}s")

    def _loop(self) -> None:
        password = self.creds.password.reveal()
        token = ""
        deadline = self._started + self.max_seconds
        for n in range(self.max_ops):
            if self._stop.is_set() or time.monotonic() >= deadline:
                return
            sent = time.monotonic()
            url = self.urls[n % len(self.urls)]
            if token:
                answer = list_projects(url, token, timeout=self.timeout)
                if answer.error == "HTTP 401":
                    token = ""  # expired or revoked: a new one next time
            else:
                answer = issue_token(url, self.creds.user, password, self.creds.project,
                                     user_domain=self.creds.user_domain,
                                     project_domain=self.creds.project_domain,
                                     timeout=self.timeout)
                token = answer.token
            op = f"read-{n}"
            with self.ledger.lock:
                self.ledger.attempts += 1
                if answer.ok:
                    self.ledger.acked.add(op)
                else:
                    self.ledger.failed += 1
                self.samples.append((sent - self._started, answer.ok, answer.seconds,
                                     answer.error))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - sent)))

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def verdict(self) -> ApiVerdict:
        with self.ledger.lock:
            samples = list(self.samples)
        end = time.monotonic() - self._started
        windows = error_windows([(t, ok) for t, ok, _, _ in samples], end)
        first = next((why for _, ok, _, why in samples if not ok), "")
        return ApiVerdict(len(samples), sum(1 for _, ok, _, _ in samples if ok),
                          max(windows, default=0.0), first[:120])

    def cleanup(self) -> None:
        """Tokens expire by themselves; nothing is left to remove."""


class Keystone(ProcessService):
    name = "keystone"
    quorum = False  # stateless; its state is in Galera
    ports = "5000"  # its public API: a partition of keystone alone cuts it
    kinds = frozenset({"kill", "stop", "freeze", "partition"})

    def section(self, host: Controller | Compute) -> Section | None:
        k = host.keystone if isinstance(host, Controller) else None
        return None if k is None else Section(k.target, k.pidfile, k.start, None)

    def tokens(self, site: Site, *, timeout: float = 5.0) -> dict[str, TokenAnswer | None]:
        """Each keystone's answer to a token request, the nodes asked at once."""
        creds = site.credentials.openstack
        if creds is None:
            raise ConfigError("keystone: the inventory has no credentials.openstack")
        password = creds.password.reveal()

        def ask(c: Controller) -> TokenAnswer:
            assert c.keystone is not None
            return issue_token(c.keystone.url, creds.user, password, creds.project,
                               user_domain=creds.user_domain,
                               project_domain=creds.project_domain, timeout=timeout)

        answers, _ = ask_each([c for c in site.controllers if c.keystone], ask,
                              deadline=2 * timeout + 1)
        return answers

    def oracle(self, site: Site) -> TokenReads | None:
        # without the credentials to ask for a token there is nothing to prove with
        return TokenReads(site) if site.credentials.openstack is not None else None

    def lanes(self, site: Site, *, timeout: float = 1.5) -> dict[str, str]:
        # the API's version document, not a token: a token costs ~0.5 s of keystone's
        # CPU (bcrypt), which once a second would be a quarter of this machine
        def ask(c: Controller) -> bool:
            assert c.keystone is not None
            return api_answers(c.keystone.url, timeout=timeout)

        answers, _ = ask_each([c for c in site.controllers if c.keystone], ask,
                              deadline=2 * timeout + 1)
        return {f"keystone/{host}": "answers" if ok else "down"
                for host, ok in answers.items()}


SERVICE = Keystone()
