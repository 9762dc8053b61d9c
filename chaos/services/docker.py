"""The docker daemon of a compute host, as the harness's faults see it: a process of the
host itself (no target URL of its own: reached as the host's ``access`` says), under
which the libvirt container runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chaos.inventory import Compute
from chaos.services import Process, ProcessService, Section
from chaos.targets import host_target

if TYPE_CHECKING:
    from chaos.inventory import Controller, Site


class DockerDaemon(ProcessService):
    name = "docker"
    # not partitioned apart from its host (no ports); kill-docker is its kill
    kinds = frozenset({"kill", "stop", "freeze", "partition", "power-off", "kill-docker"})

    def section(self, host: Controller | Compute) -> Section | None:
        d = host.docker if isinstance(host, Compute) else None
        return None if d is None else Section(None, d.pidfile, d.start, None)

    def process(self, site: Site, host: Controller | Compute) -> Process:
        # the same as any process of the host, in the words an operator knows it by
        where = host_target(site, host.name, need="act on its docker daemon").url
        s = self._section(host)
        return Process.of(host.name, self.name, where, s.pidfile, s.start, s.datadir)


SERVICE = DockerDaemon()
