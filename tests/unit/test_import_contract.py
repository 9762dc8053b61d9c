"""The harness never imports the lab, and the layers hold (scenarios → recovery →
chaos): the contracts in pyproject.toml, checked by import-linter on this tree — and
shown to catch a breach, on copies of this tree with one bad import added."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("chaos", "recovery", "scenarios", "chaoslab")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS}: install the dev extra (import-linter)"
    # the tree itself first on the path: a copy's packages shadow the installed ones
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], capture_output=True, text=True,
                          timeout=120, cwd=tree, env={"PYTHONPATH": str(tree),
                                                      "PATH": "/usr/bin:/bin"})


def test_this_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "source", "broken"),
    [
        # even an import made only when a function runs is one
        ("chaos/breach.py", "def up() -> None:\n    from chaoslab.lab import Lab\n",
         "chaos.breach -> chaoslab.lab"),
        ("recovery/breach.py", "import chaoslab.procs\n", "recovery.breach -> chaoslab.procs"),
        ("scenarios/test_breach.py", "from chaoslab import model\n",
         "scenarios.test_breach -> chaoslab.model"),
        ("chaos/breach.py", "from recovery.plan import Plan\n", "chaos.breach -> recovery.plan"),
    ],
    ids=["chaos-imports-the-lab-lazily", "recovery-imports-the-lab",
         "a-scenario-imports-the-lab", "chaos-imports-recovery"],
)
def test_a_breach_is_caught(tmp_path: Path, module: str, source: str, broken: str) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / module).write_text(source)
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 broken" in result.stdout
    assert broken in result.stdout
