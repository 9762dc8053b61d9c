"""The wheel stands on its own: built from this tree, installed into a fresh virtualenv
and run from a directory outside the checkout, it validates an inventory and plans the
scenario suite it ships. Offline (see tests/installed.py); about 20 s."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.installed import ROOT, Installed, build_wheel, clean_env, install


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    return install(build_wheel(work), work / "venv")


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory outside the checkout, holding a copy of the example site."""
    shutil.copy(ROOT / "docs" / "examples" / "ssh-site.yaml", tmp_path / "ssh-site.yaml")
    return tmp_path


def run(installed: Installed, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(cwd / "ledger"), "CHAOS_LAB_DIR": str(cwd / "no-lab")}
    return subprocess.run([str(installed.chaos), *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_every_package_comes_from_the_wheel(installed: Installed, elsewhere: Path) -> None:
    found = subprocess.run(
        [str(installed.python), "-c", "import chaos, recovery, scenarios, chaoslab; "
         "print(chaos.__file__, recovery.__file__, scenarios.__file__, chaoslab.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=elsewhere, env=clean_env())
    assert found.returncode == 0, found.stderr
    for path in found.stdout.split():
        assert Path(path).is_relative_to(installed.venv), path


def test_installed_cli_checks_an_inventory(installed: Installed, elsewhere: Path) -> None:
    result = run(installed, elsewhere, "inventory", "check", "ssh-site.yaml")
    assert result.returncode == 0, result.stderr
    assert "ssh-site.yaml: ok: site staging" in result.stdout


def test_installed_cli_plans_the_shipped_scenarios(installed: Installed,
                                                   elsewhere: Path) -> None:
    # the scenarios this example site can be planned for: it gives no pidfile or start
    # command for its containerised Galera and RabbitMQ, which kill and stop need
    result = run(installed, elsewhere, "run", "--dry-run", "--inventory", "ssh-site.yaml",
                 "-k", "partition or kill_libvirt or kill9_libvirtd", "-rs")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "no tests ran" not in result.stdout
    planned = re.findall(r"dry run: (\d+) steps planned, nothing acted on", result.stdout)
    assert len(planned) >= 4 and all(int(n) > 0 for n in planned)
    assert "chaos run: every scenario planned, nothing acted on (dry run)" in result.stdout
    assert (elsewhere / "reports").is_dir()  # the report went where it was run from


def test_installed_cli_reaches_the_lab_it_ships(installed: Installed, elsewhere: Path) -> None:
    result = run(installed, elsewhere, "lab", "status")
    assert result.returncode == 3  # the lab is there, but not up in this directory
    assert "no lab at" in result.stderr and "chaos lab up" in result.stderr
