"""The lab tests run against the real local lab: 127.0.0.11-13 (controllers) and
127.0.0.21-23 (computes). A running lab is reused; otherwise one is brought up."""

from __future__ import annotations

import os

import pytest

from chaoslab.lab import Lab


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab_teardown: takes the lab down; runs last")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.lab)
    # the test that takes the lab down runs after every test that needs it up
    items.sort(key=lambda item: item.get_closest_marker("lab_teardown") is not None)


@pytest.fixture(scope="session")
def root_required() -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab tests start real daemons and need root (run ./quickstart test)")


@pytest.fixture
def lab(root_required: None) -> Lab:
    """The running lab, brought up (again) when it is not running."""
    lab = Lab()
    if not lab.is_running() and lab.read_state() is not None:
        lab.down()  # stale, or broken by an earlier test
    # on a running lab: starts nothing, writes its inventories again (current format)
    lab.up()
    return lab
