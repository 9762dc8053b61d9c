"""The pytest plugin: one module, registered through the ``pytest11`` entry point.

Options (each also an ini key and an environment variable; the command line wins, then
the environment, then the ini file):
  --inventory FILE   site inventory       (ini ``chaos_inventory``, env ``CHAOS_INVENTORY``)
  --lab              use the running local lab's inventory
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chaos import inventory as inv
from chaos.errors import EXIT_UNREACHABLE, ConfigError, EnvironmentProblem, HarnessError
from chaos.inventory import Site

INVENTORY_KEY = pytest.StashKey[Path | None]()


def resolve_inventory(explicit: str | None, *, use_lab: bool) -> Path:
    """The inventory to use: an explicit file, else $CHAOS_INVENTORY, else the lab's."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"--inventory: {path}: no such file")
        return path
    env = os.environ.get("CHAOS_INVENTORY")
    if env and not use_lab:
        return resolve_inventory(env, use_lab=False)
    from chaos.lab.lab import Lab

    lab = Lab()
    # a lab with faults in it is still the site to act on: only its absence matters
    if not lab.inventory_file.is_file():
        raise EnvironmentProblem(
            f"no inventory given and no running lab at {lab.root}; "
            "pass --inventory FILE or run 'chaos lab up'"
        )
    return lab.inventory_file


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "chaos harness")
    group.addoption("--inventory", action="store", default=None,
                    help="site inventory YAML (env CHAOS_INVENTORY; ini chaos_inventory)")
    group.addoption("--lab", action="store_true", default=False,
                    help="run against the running local lab")
    parser.addini("chaos_inventory", "default site inventory file", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "destructive: the scenario injects faults into the site")
    config.addinivalue_line(
        "markers", "blast_radius(galera=0, rabbitmq=0, controllers=0): the most members "
        "of each cluster the scenario may take down at once")
    explicit = config.getoption("--inventory") or config.getini("chaos_inventory") or None
    config.stash[INVENTORY_KEY] = Path(explicit) if explicit else None


@pytest.fixture(scope="session")
def site(pytestconfig: pytest.Config) -> Site:
    """The validated site inventory; the session stops with exit 3 when there is none."""
    explicit = pytestconfig.stash[INVENTORY_KEY]
    try:
        path = resolve_inventory(str(explicit) if explicit else None,
                                 use_lab=bool(pytestconfig.getoption("--lab")))
        return inv.load(path)
    except ConfigError as exc:
        pytest.exit(str(exc), returncode=2)
    except HarnessError as exc:
        pytest.exit(str(exc), returncode=EXIT_UNREACHABLE)
