"""Shared shapes of the lab: hosts, secrets, health checks, and the component contract."""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from chaoslab.procs import Daemon


@dataclass(frozen=True)
class Host:
    """A lab host: a name and its own loopback address (ctl1 = 127.0.0.11)."""

    name: str
    address: str


# the lab's hosts, each a loopback address of this machine
CONTROLLERS = [Host("ctl1", "127.0.0.11"), Host("ctl2", "127.0.0.12"), Host("ctl3", "127.0.0.13")]
# cmp1 is built the way openstack-helm does it; cmp2 and cmp3 are deliberately wrong
COMPUTES = [
    ("cmp1", "127.0.0.21", "right"),
    ("cmp2", "127.0.0.22", "no-hostpid"),
    ("cmp3", "127.0.0.23", "in-cgroup"),
]
SSH_PORT = 2222


@dataclass(frozen=True)
class Check:
    """One line of ``chaos lab status``."""

    component: str  # "galera/ctl1", "rabbitmq/ctl2", "libvirt/cmp1", "sshd"
    ok: bool
    detail: str


def secret_file(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in ``path``, made by ``make`` and written (mode 600, in a folder of
    mode 700) the first time it is asked for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    if path.exists():
        return path.read_text().strip()
    text = make()
    path.touch(mode=0o600)
    path.write_text(text + "\n")
    return text


@dataclass(frozen=True)
class LabSecrets:
    """Credentials the lab generates once and keeps in files (mode 600) under its root."""

    db_user: str
    db_password: str
    rabbit_user: str
    rabbit_password: str
    erlang_cookie: str

    @classmethod
    def load_or_create(cls, root: Path) -> LabSecrets:
        folder = root / "secrets"

        def value(name: str, make: Callable[[], str]) -> str:
            return secret_file(folder / name, make)

        return cls(
            db_user="chaos",
            db_password=value("db-password", lambda: _secrets.token_urlsafe(18)),
            rabbit_user="chaos",
            rabbit_password=value("rabbitmq-password", lambda: _secrets.token_urlsafe(18)),
            # Erlang cookies are plain uppercase letters by convention
            erlang_cookie=value(
                "erlang-cookie",
                lambda: "".join(_secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(32)),
            ),
        )


Register = Callable[[Daemon], None]
"""Called with each daemon the moment it is spawned, so a failed ``up`` can still stop it."""


class Component(Protocol):
    """What the orchestrator needs of each part of the lab."""

    name: str

    def preflight(self) -> list[str]:
        """Problems that forbid starting (port in use, binary missing); [] when fit."""
        ...

    def up(self, register: Register) -> None:
        """Start from nothing and return once healthy; raise LabError otherwise."""
        ...

    def status(self) -> list[Check]:
        """Health, each probe bounded by timeouts."""
        ...

    def down(self, daemons: list[Daemon]) -> None:
        """Stop this component's daemons and remove whatever else it created."""
        ...
