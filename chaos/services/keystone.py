"""Keystone's home: OpenStack Identity on a controller, as the harness asks it (a token
issued, over HTTP, bounded) and as its faults see it (a process: pidfile, start command).

Added as a module and one line in the service table, with no edit to the core: the
generic kill, stop and freeze faults, the blast-radius guard, the monitor's lanes and
the CLI's ``--service keystone`` all come from the ``Service`` protocol.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chaos.dryrun import refuse
from chaos.errors import ConfigError
from chaos.fanout import ask_each
from chaos.inventory import Controller
from chaos.services import ProcessService, Section

if TYPE_CHECKING:
    from chaos.inventory import Compute, Site


@dataclass(frozen=True)
class TokenAnswer:
    """One token request: issued or not, how long it took, and what went wrong."""

    ok: bool
    seconds: float
    error: str = ""

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
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            ok = response.status == 201 and bool(response.headers.get("X-Subject-Token"))
            return TokenAnswer(ok, time.monotonic() - started,
                               "" if ok else f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        return TokenAnswer(False, time.monotonic() - started, f"HTTP {exc.code}")
    except (OSError, ValueError) as exc:  # refused, reset, timed out: all observations
        return TokenAnswer(False, time.monotonic() - started, f"{type(exc).__name__}: {exc}")


def api_answers(url: str, *, timeout: float = 3.0) -> bool:
    """Whether the API at ``url`` serves its version document (HTTP 200), bounded."""
    refuse(f"asking keystone at {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):  # refused, reset, timed out, an HTTP error
        return False


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
