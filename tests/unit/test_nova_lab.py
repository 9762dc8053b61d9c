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


def test_the_lab_wires_nova_to_one_writer_every_rabbit_node_and_cmp1s_libvirtd(
        tmp_path: Path) -> None:
    """``lab up --openstack``'s wiring, read without starting anything: every database
    through HAProxy's one write endpoint, every RabbitMQ node in the transport URL,
    nova-compute as cmp1 on the libvirtd of cmp1's container, the instances folder the
    one every compute container binds at the same path."""
    from chaoslab.compute import ComputeLab
    from chaoslab.lab import DB_ENDPOINT, Lab
    from chaoslab.model import COMPUTES, CONTROLLERS

    lab = Lab(tmp_path)
    nova = lab.nova()
    assert nova.database_base.endswith(f"@{DB_ENDPOINT}:3306")
    members = nova.transport_url.removeprefix("rabbit://").removesuffix("/").split(",")
    assert [m.rsplit("@", 1)[1] for m in members] == [f"{h.address}:5672"
                                                     for h in CONTROLLERS]
    name, address, mode = COMPUTES[0]
    assert (name, mode) == ("cmp1", "right")
    assert nova.libvirt_uri == f"qemu+tcp://{address}:16509/system"
    assert (nova.compute_host, nova.compute_address) == (name, address)
    assert nova.address == CONTROLLERS[0].address
    compute = next(c for c in lab._process_components() if isinstance(c, ComputeLab))
    assert compute.shared == nova.instances_path == lab.nova_instances()
    conf = nova._compute_conf()
    assert f"instances_path = {lab.nova_instances()}" in conf
    assert f"connection_uri = {nova.libvirt_uri}" in conf
    # the secrets are in the config files (mode 600), never in a command line
    secrets = lab.secrets()
    for daemon in DAEMONS:
        command = nova.start_command(daemon)
        assert secrets.db_password not in command and secrets.rabbit_password not in command
