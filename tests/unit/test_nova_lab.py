"""NovaLab's facts without running anything: start commands and endpoints."""

from __future__ import annotations

from pathlib import Path

from chaoslab.nova import AGENTS, APIS, DAEMONS, Admin, NovaLab

SECRET = "s3cr$t-pw"


def _lab(tmp_path: Path) -> NovaLab:
    lab = NovaLab(tmp_path / "os", "127.0.3.4", f"mysql+pymysql://u:{SECRET}@127.0.3.1:3306",
                  f"rabbit://u:{SECRET}@h1:5672,u:{SECRET}@h2:5672/",
                  Admin("http://127.0.3.3:5000/v3", "admin", SECRET, "admin"),
                  "qemu+tcp://127.0.3.5/system", compute_address="127.0.3.5",
                  cache=tmp_path / "cache")
    (tmp_path / "os" / "secrets").mkdir(parents=True)
    return lab


def test_start_commands_name_their_pidfile_and_no_secret(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    assert len(set(DAEMONS)) == len(APIS) + len(AGENTS)
    for daemon in DAEMONS:
        command = lab.start_command(daemon)
        assert SECRET not in command and lab.service_password() not in command
        assert command.startswith(f"cd {lab.home(daemon)} && ")
        if daemon in AGENTS:
            # the shell writes its own PID, then becomes the service
            assert f"echo $$ > {lab.pidfile(daemon)} && " in command
            assert f"exec {lab.venv}/bin/{daemon} " in command
        else:
            # gunicorn reads gunicorn.conf.py (with the pidfile) from its folder
            assert command.endswith(f"exec {lab.venv}/bin/gunicorn")


def test_endpoints_and_database_urls(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    assert lab.endpoint("nova-api") == "http://127.0.3.4:8774/v2.1"
    assert lab.endpoint("neutron-api") == "http://127.0.3.4:9696"
    assert lab.db_url("nova_cell0").endswith("@127.0.3.1:3306/nova_cell0?charset=utf8")
    # one folder per daemon: a harness restart writes its log beside the pidfile
    assert len({lab.pidfile(d).parent for d in DAEMONS}) == len(DAEMONS)
