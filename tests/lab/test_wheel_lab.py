"""The installed wheel against the running lab: built from this tree, installed into a
fresh virtualenv (tests/installed.py) and run from outside the checkout, its ``chaos
run`` acts on the lab — a real fault, recovery and oracle — by inventory alone."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from chaoslab.lab import Lab
from tests.installed import build_wheel, clean_env, install


def test_installed_wheel_runs_a_scenario_against_the_lab(lab: Lab, tmp_path: Path) -> None:
    installed = install(build_wheel(tmp_path), tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the machine's ledger, as any run against the lab: what it leaves open, heal finds
    env = clean_env()
    result = subprocess.run([str(installed.chaos), "run", "--inventory",
                             str(lab.inventory_file), "-k", "galera and kill and ctl2", "-q"],
                            capture_output=True, text=True, timeout=900, cwd=elsewhere,
                            env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None and int(passed.group(1)) >= 1, result.stdout[-3000:]
    assert "chaos run: all scenarios passed" in result.stdout
    assert (elsewhere / "reports").is_dir()
