"""The lab's wait for its components: each gets the lab's bound or the longer one it
states, and one still starting past its bound is reported with how its start ended."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import chaoslab.lab as lab_module
from chaos.errors import LabError
from chaoslab.kube import (
    CONTROL_PLANE_UP,
    NODES,
    OSH_LIBVIRT_READY,
    OSH_MARIADB_READY,
    OSH_NOVA_READY,
    OSH_RABBIT_READY,
    KubeLab,
)
from chaoslab.lab import Lab


class Slow:
    """A component whose up takes ``seconds``, then fails with ``error`` if given."""

    def __init__(self, name: str, seconds: float, error: str = "",
                 up_timeout: float | None = None) -> None:
        self.name, self.seconds, self.error = name, seconds, error
        if up_timeout is not None:
            self.up_timeout = up_timeout

    def up(self, register: Any) -> None:
        time.sleep(self.seconds)
        if self.error:
            raise LabError(self.error)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    monkeypatch.setattr(lab_module, "UP_TIMEOUT", 0.1)
    made = Lab(root=tmp_path)
    made._state = {"daemons": []}
    return made


def test_a_component_that_states_a_longer_bound_is_waited_for(lab: Lab) -> None:
    lab._up_all([Slow("kube", 0.4, up_timeout=5.0)])  # type: ignore[list-item]


def test_a_late_component_is_reported_with_how_its_start_ended(lab: Lab) -> None:
    with pytest.raises(LabError) as failed:
        lab._up_all([Slow("kube", 0.4, "statefulset mariadb-server not ready: 1/3")])  # type: ignore[list-item]
    assert str(failed.value) == ("kube: not up within 0s (statefulset mariadb-server not "
                                 "ready: 1/3)")
    with pytest.raises(LabError) as failed:
        lab._up_all([Slow("kube", 0.4)])  # type: ignore[list-item]
    assert "its bound is too short" in str(failed.value)


def test_openstack_helm_s_tier_is_waited_for_as_long_as_its_own_waits_add_up() -> None:
    seed = KubeLab.__new__(KubeLab)
    seed.platform = "seed"
    assert seed.up_timeout == CONTROL_PLANE_UP
    osh = KubeLab.__new__(KubeLab)
    osh.platform = "openstack-helm"
    osh.nodes = list(NODES)  # one compute
    assert osh.up_timeout == (CONTROL_PLANE_UP + OSH_RABBIT_READY + OSH_MARIADB_READY
                              + OSH_LIBVIRT_READY + OSH_NOVA_READY)
    # the chart's first-start race (a joiner that read `live` before the leader was
    # ready waits out 12 fresh samples): its join measured 154 s after the pods were
    # made, then its SST and the 30 s readiness period
    assert OSH_MARIADB_READY > 154 + 30
