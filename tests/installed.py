"""The harness as a user gets it: the wheel built from this tree and installed into a
fresh virtualenv, for tests that run it from outside the checkout.

Offline by construction: the wheel is built without build isolation (setuptools from
the running environment) and installed with ``--no-deps --no-index``; the fresh
environment reaches its dependencies (pytest, pydantic, …) through one path line to this
environment's site-packages, a plain path, so the development install's editable
finder there is never activated and every import of chaos, recovery, scenarios or
chaoslab comes from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what a checkout holds besides its sources: never part of a build
NOT_SOURCES = (".git", ".venv", ".tox", "build", "dist", "*.egg-info", "__pycache__",
               ".mypy_cache", ".ruff_cache", ".pytest_cache", "reports")


@dataclass(frozen=True)
class Installed:
    venv: Path

    @property
    def chaos(self) -> Path:
        return self.venv / "bin" / "chaos"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def _run(argv: list[str | Path], *, timeout: float) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            timeout=timeout, env=env)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} failed:\n"
                             f"{result.stdout[-2000:]}{result.stderr[-2000:]}")


def build_wheel(work: Path) -> Path:
    """Build the wheel from a copy of this tree (a build writes its egg-info and build/
    next to the sources: not into the checkout)."""
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    dist = work / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", dist, source], timeout=300)
    (wheel,) = dist.glob("openstack_chaos-*.whl")
    return wheel


def install(wheel: Path, venv: Path) -> Installed:
    """A fresh virtualenv with the wheel installed and this environment's
    dependencies visible."""
    _run([sys.executable, "-m", "venv", "--without-pip", venv], timeout=120)
    here = sysconfig.get_paths()["purelib"]
    there = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, timeout=60, check=True)
    Path(there.stdout.strip(), "dependencies-from-the-dev-venv.pth").write_text(here + "\n")
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
          "--no-deps", "--no-index", "-q", wheel], timeout=300)
    return Installed(venv)


def clean_env(ledger: Path | None = None) -> dict[str, str]:
    """This environment without an inventory or a path to the checkout; with
    ``ledger``, a fault ledger of its own instead of this machine's."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CHAOS_INVENTORY", "PYTHONPATH", "VIRTUAL_ENV")}
    if ledger is not None:
        env["CHAOS_LEDGER_DIR"] = str(ledger)
    return env
