"""The OpenStack venv is never rebuilt (deleted first) under a process running from it."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from chaos.errors import LabError
from chaos.wait import wait_for
from chaoslab.openstack import ensure_venv, venv_users


def test_an_out_of_date_venv_in_use_is_left_alone(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".chaos-stamp").write_text("an older build\n")
    # a process whose command line names a file of the venv, as gunicorn's does
    user = subprocess.Popen(["sh", "-c", "sleep 30; :", str(venv / "bin" / "gunicorn")],
                            start_new_session=True)
    try:
        # (named once sleep has been exec'd)
        wait_for(lambda: (venv_users(venv) == [user.pid], str(venv_users(venv))),
                 what="the process seen", timeout=5, interval=0.05)
        with pytest.raises(LabError, match=f"processes \\[{user.pid}\\] run from it"):
            ensure_venv(tmp_path, timeout=5)
        assert (venv / ".chaos-stamp").read_text() == "an older build\n"
    finally:
        os.killpg(user.pid, signal.SIGKILL)  # sh and its sleep
        user.wait()
    assert venv_users(venv) == []
