"""The rest of a real OpenStack beside keystone: glance, placement, nova and neutron.

All from OpenStack's releases on PyPI, series 2026.2 (nova 34.0.0, glance 33.0.0,
placement 16.0.0, neutron 29.0.0, with keystone 30.0.0), installed into keystone's
virtualenv (chaoslab/openstack.py: the same venv, the same pins). Each service is one
process of the lab's own, with a pidfile and a start command a fault's revert or a
recovery can run as is (``chaos.steps.start_unless_running``):

- the four APIs (glance-api, placement-api, nova-api, neutron-api) are their projects'
  WSGI applications under gunicorn, one worker each, started with no arguments in their
  own folder where gunicorn finds ``gunicorn.conf.py`` (the services parse the process's
  command line as their own options, as keystone does);
- nova-conductor, nova-scheduler and nova-compute are the console scripts, one worker
  each, started by ``echo $$ > pidfile && exec …``.

Cells v2: the ``nova_api``, ``nova`` and ``nova_cell0`` databases, ``map_cell0``,
``create_cell`` (cell1) and, once nova-compute has registered, ``discover_hosts``. The
services, users and endpoints are made in keystone over its REST API (idempotent).

nova-compute uses the libvirt driver, ``virt_type = qemu`` (TCG: /dev/kvm is unusable
here) and ``connection_uri = qemu+tcp://<address>/system``: it reaches a libvirtd that
runs elsewhere (a container with hostPID, or a process in its own mount namespace), and
both see the instances folder at the same path. neutron-server is ML2 with no mechanism
drivers and no agents: enough for ``server create --nic none`` and for ``server
delete``, which asks neutron for the instance's ports even then.

Traps met on the way (2026.2, Debian 12):

- no ``sudo`` here: nova's privsep daemon is started by ``[nova_sys_admin]
  helper_command`` naming the venv's privsep-helper and nova-compute's config (we run
  as root already); without it nova-compute runs ``sudo nova-rootwrap …``;
- ``qemu-img`` (Debian's qemu-utils, not installed with qemu-system-x86) is needed by
  nova-compute for every image;
- VNC is on by default and would listen on 127.0.0.1:5900+: ``[vnc] enabled = false``;
- nova-api loads its paste pipeline from the *first* of its config files: leave
  ``OS_NOVA_CONFIG_FILES`` unset (api-paste.ini, nova.conf) rather than naming nova.conf
  alone ("No section 'osapi_compute' … in nova.conf");
- keystonemiddleware looks for identity's *internal* endpoint, and keystone-manage
  bootstrap registers only the public one: ``[keystone_authtoken] interface = public``
  (else every API request is HTTP 500, "internal endpoint for identity … not found");
- nova-compute writes its node identity to ``$state_path/compute_id`` and dies
  (CRITICAL, then lingers) when the folder is missing: ``wait_compute`` fails at once
  on a CRITICAL line instead of waiting out its timeout;
- neutron's API-only WSGI process: ``get_ports`` reads ``Port.port_forwardings``, a
  backref that exists only after SQLAlchemy has configured its mappers (done by the
  first query of a process), and nothing queries before nova's first GET
  /v2.0/ports: HTTP 500 at every server create and delete (same with SQLAlchemy 2.0.58,
  so not the pin; ``service_plugins = router`` did not help). A ``post_worker_init``
  hook in its gunicorn.conf.py (NEUTRON_HOOK) configures them once the app is loaded;
- a command line is world-readable: ``nova-manage cell_v2 map_cell0`` and
  ``create_cell`` read the database and transport URL from nova.conf, not arguments;
- nova-compute and libvirtd must see the instances folder at the same path: the lab's
  compute containers bind ``compute/nova-instances`` at its own path
  (``instances_path``);
- nova-compute refuses its first start on a hypervisor that already runs domains ("My
  hypervisor has existing instances, but I appear to be a new service"): the lab sets
  cmp1's own domain aside while it registers (``ComputeLab.domain_set_aside``).

Measured on the 2-core VM (shared with a running lab; load average 2-4 during the
runs), when it ran standalone beside the lab on a plain MariaDB or a one-node Galera:

- the venv (chaoslab/openstack.py): a cold build (empty pip cache) 98 s wall, 69 s of
  user CPU, 619 MB; keystone's alone was 53.5 s and 282 MB, so these services add ~45 s
  and ~340 MB (nova, neutron and their libraries: os-ken, ovsdbapp, numpy, lxml…);
- ``up`` with the venv built: 50-76 s in eight runs, median 64 s, the same on a plain
  MariaDB as on a one-node Galera (config, databases and keystone entries 6-9 s;
  schemas and cells, two at a time, 20-29 s; the four APIs answering 9-16 s;
  nova-compute up and in placement 12-15 s; discover_hosts 3-5 s); a second ``up``
  over the same databases 50-75 s;
- memory, idle after one server boot, RSS/PSS in MB (VmRSS of /proc/PID/status, Pss
  of /proc/PID/smaps_rollup; gunicorn: master + worker): glance-api 25/14 + 131/109,
  placement-api 25/14 + 100/80, nova-api 25/14 + 159/138, neutron-api 25/14 + 168/147,
  nova-conductor 127/91, nova-scheduler 126/90, nova-compute 162/132 and its privsep
  daemon 44/38 (keystone 25/14 + 136/115): the seven services ~1.1 GB RSS, ~0.9 GB PSS;
- a ``--nic none`` server on a 64 MiB blank qcow2 image: ACTIVE 2.3-4.3 s after the
  create returned; its qemu (TCG, no bootable disk, 32 MiB translation cache) 44/25 MB.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets as _secrets
import shlex
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.errors import LabError, ProbeTimeout
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.model import Check, Register, secret_file
from chaoslab.openstack import _ini, _last_error, _log_size, ensure_venv, openstack_cache
from chaoslab.procs import Daemon

SERVICE_PROJECT = "service"
IMAGE = "blank"  # what the lab's servers boot from (ensure_image_and_flavor)
FLAVOR = "tiny"
MANAGE_TIMEOUT = 300.0  # a schema sync on InnoDB: nova's takes the longest
UP_TIMEOUT = 120.0  # each API answers within ~10 s of start here; two cores, shared
COMPUTE_TIMEOUT = 180.0  # nova-compute: start, libvirt, its record, placement
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Api:
    """A WSGI API of one project, under gunicorn."""

    name: str  # the daemon: "nova-api"
    project: str  # whose config folder: "nova"
    service: str  # keystone's service name and user: "nova"
    service_type: str  # "compute"
    port: int
    app: str  # gunicorn's wsgi_app
    path: str  # the endpoint's path after host:port
    config_env: Mapping[str, str]  # how the WSGI module finds its config (relative to etc)


APIS = (
    Api("glance-api", "glance", "glance", "image", 9292, "glance.wsgi.api:application", "",
        {"OS_GLANCE_CONFIG_DIR": "glance"}),
    Api("placement-api", "placement", "placement", "placement", 8778,
        "placement.wsgi.api:application", "", {"OS_PLACEMENT_CONFIG_DIR": "placement"}),
    Api("nova-api", "nova", "nova", "compute", 8774, "nova.wsgi.osapi_compute:application",
        # its default files, api-paste.ini first: nova loads its paste pipeline from
        # whichever file comes first
        "/v2.1", {"OS_NOVA_CONFIG_DIR": "nova"}),
    Api("neutron-api", "neutron", "neutron", "network", 9696, "neutron.wsgi.api:application",
        "", {"OS_NEUTRON_CONFIG_DIR": "neutron",
             "OS_NEUTRON_CONFIG_FILES": "neutron.conf;plugins/ml2/ml2_conf.ini"}),
)
AGENTS = ("nova-conductor", "nova-scheduler", "nova-compute")
DAEMONS = (*(a.name for a in APIS), *AGENTS)
DATABASES = ("glance", "placement", "nova_api", "nova", "nova_cell0", "neutron")


@dataclass(frozen=True)
class Admin:
    """Keystone's address and its admin, whose token registers the services."""

    auth_url: str  # .../v3
    user: str
    password: str
    project: str
    region: str = "RegionOne"


class NovaLab:
    """glance, placement, nova (API, conductor, scheduler, compute) and neutron.

    ``address`` is where the APIs listen and the controller services call home;
    ``compute_address`` is nova-compute's ``my_ip`` and ``compute_host`` its host name.
    ``database_base`` is an SQLAlchemy URL without a database
    (``mysql+pymysql://user:pw@host:3306``): one writer for every service. The databases
    are created when missing. ``transport_url`` lists every RabbitMQ host
    (``rabbit://u:p@h1:5672,u:p@h2:5672/``).
    """

    name = "openstack"

    def __init__(self, root: Path, address: str, database_base: str, transport_url: str,
                 admin: Admin, libvirt_uri: str, *, compute_address: str | None = None,
                 compute_host: str = "cmp1", controller_host: str = "ctl1",
                 cache: Path | None = None, service_password_file: Path | None = None,
                 instances_path: Path | None = None) -> None:
        self.root = root
        self.address = address
        self.compute_address = compute_address or address
        self.compute_host = compute_host
        self.controller_host = controller_host
        self.database_base = database_base.rstrip("/")
        self.transport_url = transport_url
        self.admin = admin
        self.libvirt_uri = libvirt_uri
        self.cache = cache or openstack_cache()
        self.venv = self.cache / "venv"
        self.etc = root / "etc"
        self.password_file = service_password_file or root / "secrets" / "service-password"
        # where libvirtd sees it too (a folder its container binds at the same path)
        self.instances_path = instances_path or root / "nova-compute" / "instances"
        self.images_path = root / "glance" / "images"
        self.timings: dict[str, float] = {}  # seconds per step of the last up

    # ---- facts the inventory and clients use -------------------------------------
    def home(self, daemon: str) -> Path:
        return self.root / daemon

    def pidfile(self, daemon: str) -> Path:
        return self.home(daemon) / f"{daemon}.pid"

    def log(self, daemon: str) -> Path:
        """The service's own log (oslo.log)."""
        return self.home(daemon) / f"{daemon}.log"

    def out_log(self, daemon: str) -> Path:
        """stdout and stderr of the process (gunicorn's own lines, tracebacks)."""
        return self.home(daemon) / "out.log"

    def api(self, daemon: str) -> Api:
        for api in APIS:
            if api.name == daemon:
                return api
        raise LabError(f"openstack: {daemon!r} is not an API")

    def endpoint(self, daemon: str) -> str:
        api = self.api(daemon)
        return f"http://{self.address}:{api.port}{api.path}"

    def start_command(self, daemon: str) -> str:
        """The shell command that starts ``daemon`` in the foreground and writes its
        pidfile (gunicorn's master writes its own); it needs no environment of its own,
        as a harness's restart gives none."""
        home = shlex.quote(str(self.home(daemon)))
        if daemon in AGENTS:
            conf = self.etc / "nova" / ("nova-compute.conf" if daemon == "nova-compute"
                                        else "nova.conf")
            # eventlet's deprecation banner on every start would bury the error lines
            return (f"cd {home} && echo $$ > {shlex.quote(str(self.pidfile(daemon)))} && "
                    f"PYTHONWARNINGS=ignore "
                    f"exec {shlex.quote(str(self.venv / 'bin' / daemon))} "
                    f"--config-file {shlex.quote(str(conf))} "
                    f"--log-file {shlex.quote(str(self.log(daemon)))}")
        self.api(daemon)
        return f"cd {home} && exec {shlex.quote(str(self.venv / 'bin' / 'gunicorn'))}"

    def service_password(self) -> str:
        return secret_file(self.password_file, lambda: _secrets.token_urlsafe(18))

    def db_url(self, database: str) -> str:
        return f"{self.database_base}/{database}?charset=utf8"

    # ---- preflight ---------------------------------------------------------------
    def preflight(self) -> list[str]:
        problems = [f"openstack: {self.address}:{a.port} already in use"
                    for a in APIS if procs.port_in_use(self.address, a.port)]
        if shutil.which("qemu-img") is None:
            problems.append("openstack: qemu-img missing (apt-get install qemu-utils): "
                            "nova-compute needs it for every image")
        if os.geteuid() != 0:
            problems.append("openstack: must run as root (nova-compute's privsep)")
        return problems

    # ---- up ----------------------------------------------------------------------
    def up(self, register: Register) -> None:
        problems = self.preflight()
        if problems:
            raise LabError(problems[0] + (f" (+{len(problems) - 1} more)" if problems[1:] else ""))
        self.timings.clear()
        with self._timed("venv"):
            ensure_venv(self.cache)
        with self._timed("config, databases, keystone"):
            self._write_files()
            self._create_databases()
            self._register_in_keystone()
        with self._timed("schemas and cells"):
            self._sync_schemas()
        clock = time.monotonic()
        started = {}
        since = {d: _log_size(self.out_log(d)) for d in DAEMONS}
        for daemon in DAEMONS:
            if daemon == "nova-compute":
                continue  # after the controller services, whose RPC it calls at start
            started[daemon] = self._spawn(daemon, register)
        for api in APIS:
            self._wait_api(api, started[api.name], since[api.name])
        self.timings["APIs answering"] = time.monotonic() - clock
        with self._timed("nova-compute up, in placement"):
            started["nova-compute"] = self._spawn("nova-compute", register)
            self.wait_compute(timeout=COMPUTE_TIMEOUT, daemons=list(started.values()))
        with self._timed("discover_hosts"):
            self.discover_hosts()
        with self._timed("image and flavor"):
            self.ensure_image_and_flavor()

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        clock = time.monotonic()
        yield
        self.timings[step] = time.monotonic() - clock

    def _spawn(self, daemon: str, register: Register) -> Daemon:
        spawned = procs.spawn(daemon, ["sh", "-c", self.start_command(daemon)],
                              log=self.out_log(daemon), pidfile=self.pidfile(daemon))
        register(spawned)
        return spawned

    def _env(self) -> dict[str, str]:
        # eventlet's deprecation banner on every run would bury the error lines
        return {"PYTHONWARNINGS": "ignore"}

    # ---- files -------------------------------------------------------------------
    def _write_files(self) -> None:
        for daemon in DAEMONS:
            self.home(daemon).mkdir(parents=True, exist_ok=True)
        for sub in ("glance", "placement", "nova", "neutron/plugins/ml2"):
            (self.etc / sub).mkdir(parents=True, exist_ok=True)
        self.etc.chmod(0o700)  # every file in it holds a password
        for folder in (self.root / "lock", self.root / "state", self.instances_path,
                       self.home("nova-compute") / "state",
                       self.images_path, self.root / "glance" / "staging",
                       self.root / "glance" / "tasks"):
            folder.mkdir(parents=True, exist_ok=True)
        shipped = self.venv / "etc"
        shutil.copy(shipped / "nova" / "api-paste.ini", self.etc / "nova" / "api-paste.ini")
        shutil.copy(shipped / "glance" / "glance-api-paste.ini",
                    self.etc / "glance" / "glance-api-paste.ini")
        shutil.copy(shipped / "neutron" / "api-paste.ini",
                    self.etc / "neutron" / "api-paste.ini")
        files = {
            self.etc / "glance" / "glance-api.conf": self._glance_conf(),
            self.etc / "placement" / "placement.conf": self._placement_conf(),
            self.etc / "nova" / "nova.conf": self._nova_conf(),
            self.etc / "nova" / "nova-compute.conf": self._compute_conf(),
            self.etc / "neutron" / "neutron.conf": self._neutron_conf(),
            self.etc / "neutron" / "plugins" / "ml2" / "ml2_conf.ini": ML2_CONF,
        }
        for path, text in files.items():
            path.touch(mode=0o600)
            path.write_text("# Generated by chaoslab.nova; rewritten by every `up`.\n" + text)
        for api in APIS:
            (self.home(api.name) / "gunicorn.conf.py").write_text(self._gunicorn_conf(api))

    def _auth(self, section: str, user: str, *, token_section: bool = False) -> str:
        lines = [f"[{section}]"]
        if token_section:
            lines += [f"www_authenticate_uri = {self.admin.auth_url}",
                      "service_token_roles_required = true",
                      # keystone-manage bootstrap registers identity's public endpoint
                      # only; the middleware looks for the internal one by default
                      "interface = public"]
        lines += [
            f"auth_url = {self.admin.auth_url}", "auth_type = password",
            "project_domain_name = Default", "user_domain_name = Default",
            f"project_name = {SERVICE_PROJECT}", f"username = {user}",
            f"password = {_ini(self.service_password())}", f"region_name = {self.admin.region}",
        ]
        return "\n".join(lines) + "\n"

    def _common(self, log: Path | None = None) -> str:
        lines = ["[DEFAULT]", f"state_path = {self.root / 'state'}"]
        if log is not None:
            lines.append(f"log_file = {log}")
        return "\n".join(lines) + "\n"

    def _lock(self) -> str:
        return f"[oslo_concurrency]\nlock_path = {self.root / 'lock'}\n"

    def _glance_conf(self) -> str:
        return f"""{self._common(self.log("glance-api"))}enabled_backends = fs:file

[database]
connection = {_ini(self.db_url("glance"))}

{self._auth("keystone_authtoken", "glance", token_section=True)}
[paste_deploy]
flavor = keystone
config_file = {self.etc / "glance" / "glance-api-paste.ini"}

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = {self.images_path}

[os_glance_staging_store]
filesystem_store_datadir = {self.root / "glance" / "staging"}

[os_glance_tasks_store]
filesystem_store_datadir = {self.root / "glance" / "tasks"}

{self._lock()}"""

    def _placement_conf(self) -> str:
        return f"""{self._common(self.log("placement-api"))}
[api]
auth_strategy = keystone

[placement_database]
connection = {_ini(self.db_url("placement"))}

{self._auth("keystone_authtoken", "placement", token_section=True)}
{self._lock()}"""

    def _nova_services(self) -> str:
        """What nova-api, the conductor, the scheduler and the compute share."""
        return f"""transport_url = {_ini(self.transport_url)}

{self._auth("placement", "placement")}
[glance]
region_name = {self.admin.region}

{self._auth("neutron", "neutron")}
{self._auth("service_user", "nova")}send_service_user_token = true

[vnc]
# on by default, and it would listen on 127.0.0.1:5900+
enabled = false

{RABBIT_QUEUES}
{self._lock()}"""

    def _nova_conf(self) -> str:
        return f"""{self._common(self.log("nova-api"))}host = {self.controller_host}
my_ip = {self.address}
{self._nova_services()}
[api]
auth_strategy = keystone

[wsgi]
api_paste_config = {self.etc / "nova" / "api-paste.ini"}

[api_database]
connection = {_ini(self.db_url("nova_api"))}

[database]
connection = {_ini(self.db_url("nova"))}

{self._auth("keystone_authtoken", "nova", token_section=True)}
[conductor]
workers = 1

[scheduler]
workers = 1
"""

    def _compute_conf(self) -> str:
        helper = (f"{self.venv / 'bin' / 'privsep-helper'} --config-file "
                  f"{self.etc / 'nova' / 'nova-compute.conf'}")
        return f"""[DEFAULT]
state_path = {self.home("nova-compute") / "state"}
instances_path = {self.instances_path}
host = {self.compute_host}
my_ip = {self.compute_address}
compute_driver = libvirt.LibvirtDriver
{self._nova_services()}
[libvirt]
virt_type = qemu
connection_uri = {self.libvirt_uri}
# TCG: let QEMU pick its default CPU model; host-model means nothing without KVM
cpu_mode = none
# MiB of TCG translation cache per guest; QEMU's default is 1 GiB
tb_cache_size = 32

[nova_sys_admin]
# no sudo on these machines, and we are root already
helper_command = {helper}
"""

    def _neutron_conf(self) -> str:
        return f"""{self._common(self.log("neutron-api"))}core_plugin = ml2
# no routers, no agents (GET /v2.0/ports needs the gunicorn hook: see NEUTRON_HOOK)
service_plugins =
auth_strategy = keystone
transport_url = {_ini(self.transport_url)}
api_paste_config = {self.etc / "neutron" / "api-paste.ini"}
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false

[database]
connection = {_ini(self.db_url("neutron"))}

{self._auth("keystone_authtoken", "neutron", token_section=True)}
{self._auth("nova", "nova")}
{RABBIT_QUEUES}
{self._lock()}"""

    def _gunicorn_conf(self, api: Api) -> str:
        env = [f"{k}={self.etc / v}" if k.endswith("_DIR") else f"{k}={v}"
               for k, v in api.config_env.items()]
        return f"""\
# Generated by chaoslab.nova; read by gunicorn from its working directory, because the
# service takes the process's arguments as its own options (see chaoslab/openstack.py).
bind = {f"{self.address}:{api.port}"!r}
wsgi_app = {api.app!r}
workers = 1
worker_class = "gthread"
threads = 4
# nova-api and neutron load their whole API at the first request: generous
timeout = 120
graceful_timeout = 5
pidfile = {str(self.pidfile(api.name))!r}
accesslog = {str(self.home(api.name) / "access.log")!r}
raw_env = {env!r}
""" + (NEUTRON_HOOK if api.project == "neutron" else "")

    # ---- databases ---------------------------------------------------------------
    def _create_databases(self) -> None:
        import pymysql

        url = urllib.parse.urlsplit(self.database_base)
        try:
            conn = pymysql.connect(
                host=url.hostname or "127.0.0.1", port=url.port or 3306,
                user=urllib.parse.unquote(url.username or ""),
                password=urllib.parse.unquote(url.password or ""),
                connect_timeout=10, read_timeout=30, write_timeout=30)
            try:
                with conn.cursor() as cur:
                    for name in DATABASES:
                        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` "
                                    "CHARACTER SET utf8mb4")
            finally:
                conn.close()
        except pymysql.MySQLError as exc:
            # pymysql's messages name the user and host, never the password
            raise LabError(f"openstack: cannot create the databases: {exc}") from exc

    def _manage(self, tool: str, *args: str, conf: tuple[Path, ...], log: Path,
                ok_codes: tuple[int, ...] = (0,)) -> str:
        argv = [str(self.venv / "bin" / tool)]
        for path in conf:
            argv += ["--config-file", str(path)]
        since = _log_size(log)
        result = procs.run([*argv, *args], timeout=MANAGE_TIMEOUT, check=False, env=self._env())
        if result.returncode not in ok_codes:
            detail = _last_error(log, since) or result.stderr.strip()[-300:]
            raise LabError(f"openstack: {tool} {' '.join(args)} exited "
                           f"{result.returncode}: {detail}")
        return result.stdout

    def _nova_manage(self, *args: str, ok_codes: tuple[int, ...] = (0,)) -> str:
        log = self.root / "nova-manage.log"
        return self._manage("nova-manage", "--log-file", str(log), *args,
                            conf=(self.etc / "nova" / "nova.conf",), log=log,
                            ok_codes=ok_codes)

    def _sync_schemas(self) -> None:
        """Each project's schema; nova's cells after its API database. Independent
        projects at once: two at a time is what two cores give."""
        neutron = (self.etc / "neutron" / "neutron.conf",
                   self.etc / "neutron" / "plugins" / "ml2" / "ml2_conf.ini")
        steps: list[Callable[[], object]] = [
            self._nova_cells,
            lambda: self._manage("glance-manage", "db_sync",
                                 conf=(self.etc / "glance" / "glance-api.conf",),
                                 log=self.log("glance-api")),
            lambda: self._manage("placement-manage", "db", "sync",
                                 conf=(self.etc / "placement" / "placement.conf",),
                                 log=self.log("placement-api")),
            lambda: self._manage("neutron-db-manage", "upgrade", "heads", conf=neutron,
                                 log=self.log("neutron-api")),
        ]
        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(step) for step in steps]:
                future.result()

    def _nova_cells(self) -> None:
        self._nova_manage("api_db", "sync")
        # both read the database and transport URL from nova.conf: a command line is
        # world-readable. cell0's database is [database]'s with "_cell0" appended.
        self._nova_manage("cell_v2", "map_cell0")
        cells = self._nova_manage("cell_v2", "list_cells", "--verbose")
        if " cell1 " not in cells:
            self._nova_manage("cell_v2", "create_cell", "--name", "cell1")
        self._nova_manage("db", "sync")

    def discover_hosts(self) -> None:
        self._nova_manage("cell_v2", "discover_hosts")

    def ensure_image_and_flavor(self) -> None:
        """``IMAGE`` (a blank qcow2 of 64 MiB, made here: nothing can be downloaded)
        and ``FLAVOR`` (64 MiB, one vCPU), public, made once: what a server boots from
        in the lab, small enough that a boot costs little on two cores."""
        client = self.client()
        images = client.get("glance-api", f"/v2/images?name={IMAGE}")["images"]
        if not any(i["status"] == "active" for i in images):
            for stale in images:  # an upload cut short by a failed up
                client.call("DELETE", "glance-api", f"/v2/images/{stale['id']}")
            disk = self.root / "blank.qcow2"
            disk.unlink(missing_ok=True)
            procs.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"],
                      timeout=30)
            image = client.call("POST", "glance-api", "/v2/images", {
                "name": IMAGE, "disk_format": "qcow2", "container_format": "bare",
                "visibility": "public"})
            _request("PUT", f"{self.endpoint('glance-api')}/v2/images/{image['id']}/file",
                     token=client.token(), data=disk.read_bytes(),
                     headers={"Content-Type": "application/octet-stream"}, timeout=60)
        flavors = client.get("nova-api", "/flavors")["flavors"]
        if not any(f["name"] == FLAVOR for f in flavors):
            client.call("POST", "nova-api", "/flavors", {"flavor": {
                "name": FLAVOR, "ram": 64, "vcpus": 1, "disk": 1}})

    # ---- keystone ----------------------------------------------------------------
    def _register_in_keystone(self) -> None:
        keystone = _Keystone(self.admin)
        project = keystone.ensure("projects", {"name": SERVICE_PROJECT, "domain_id": "default"})
        roles = [keystone.ensure("roles", {"name": name}) for name in ("admin", "service")]
        for api in APIS:
            user = keystone.ensure("users", {"name": api.service, "domain_id": "default"},
                                   extra={"password": self.service_password()})
            for role in roles:
                keystone.call("PUT", f"/projects/{project}/users/{user}/roles/{role}")
            service = keystone.ensure("services", {"type": api.service_type},
                                      extra={"name": api.service})
            for interface in ("public", "internal"):
                keystone.ensure("endpoints", {"service_id": service, "interface": interface,
                                              "region_id": self.admin.region},
                                extra={"url": self.endpoint(api.name)})

    # ---- waiting -----------------------------------------------------------------
    def _wait_api(self, api: Api, daemon: Daemon, since: int) -> None:
        url = self.endpoint(api.name)

        def answers() -> tuple[bool, str]:
            if not daemon.alive():
                return True, "exited"
            ok, seen = _get(url)
            return ok, seen

        try:
            seen = wait_for(answers, what=f"{api.name} at {url}", timeout=UP_TIMEOUT,
                            interval=0.5)
        except ProbeTimeout as exc:
            raise LabError(f"openstack: {exc}; {_last_error(self.log(api.name))}") from exc
        if seen == "exited":
            raise LabError(f"openstack: {api.name} exited while starting; "
                           f"{_last_error(self.out_log(api.name), since)}")

    def wait_compute(self, *, timeout: float, daemons: list[Daemon] | None = None) -> None:
        """Return once nova lists ``compute_host``'s nova-compute as up and its resource
        provider is in placement; raise LabError naming what was missing."""
        client = self.client()
        since = _log_size(self.log("nova-compute"))

        def ready() -> tuple[bool, str]:
            dead = [d.name for d in daemons or [] if not d.alive()]
            if dead:
                return True, f"exited: {dead}"
            # nova-compute may log CRITICAL and hang on instead of exiting
            critical = _last_error(self.log("nova-compute"), since)
            if " CRITICAL " in critical:
                return True, f"failed: {critical}"
            try:
                services = client.get("nova-api", "/os-services?binary=nova-compute")
                up = [s for s in services["services"]
                      if s["host"] == self.compute_host and s["state"] == "up"]
                if not up:
                    return False, "nova-compute not up in os-services"
                providers = client.get("placement-api", "/resource_providers")
            except LabError as exc:
                return False, str(exc)
            return bool(providers["resource_providers"]), "resource providers: " + str(
                len(providers["resource_providers"]))

        try:
            seen = wait_for(ready, what=f"nova-compute on {self.compute_host}",
                            timeout=timeout, interval=1.0)
        except ProbeTimeout as exc:
            raise LabError(f"openstack: {exc}; "
                           f"{_last_error(self.log('nova-compute'))}") from exc
        if seen.startswith("failed"):
            raise LabError(f"openstack: nova-compute {seen}")
        if seen.startswith("exited"):
            name = seen.split("'")[1]
            raise LabError(f"openstack: {seen}; {_last_error(self.log(name))} "
                           f"{_last_error(self.out_log(name))}")

    def client(self) -> ApiClient:
        return ApiClient(self)

    # ---- status ------------------------------------------------------------------
    def status(self) -> list[Check]:
        checks = []
        for api in APIS:
            ok, seen = _get(self.endpoint(api.name))
            checks.append(Check(f"{api.name}/{self.address}", ok,
                                f"GET {self.endpoint(api.name)}: {seen}"))
        for daemon in AGENTS:
            pid = procs.read_pidfile(self.pidfile(daemon))
            alive = pid is not None and procs.alive(pid)
            where = self.compute_address if daemon == "nova-compute" else self.address
            checks.append(Check(f"{daemon}/{where}", alive,
                                f"pid {pid} {'running' if alive else 'not running'}"))
        try:
            services = self.client().get("nova-api", "/os-services")["services"]
            down = [f"{s['binary']}@{s['host']}" for s in services if s["state"] != "up"]
            checks.append(Check("nova/services", bool(services) and not down,
                                f"{len(services)} services, down: {down or 'none'}"))
        except LabError as exc:
            checks.append(Check("nova/services", False, str(exc)[:200]))
        return checks

    # ---- down --------------------------------------------------------------------
    def daemon_pids(self) -> list[int]:
        """Every live process of these services, whoever started it: each runs in its
        own folder under the root, from the venv (a gunicorn worker outlives its killed
        master by ~1 s; privsep helpers are nova-compute's children)."""
        homes = {str(self.home(d).resolve()) for d in DAEMONS}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_text(errors="replace")
                if str(self.venv) not in cmdline:
                    continue
                if (os.readlink(entry / "cwd") in homes
                        or str(self.etc / "nova" / "nova-compute.conf") in cmdline) \
                        and procs.alive(int(entry.name)):
                    found.append(int(entry.name))
        return found

    def down(self, daemons: list[Daemon]) -> None:
        pids = {p for d in daemons for p in d.pids()} | set(self.daemon_pids())
        left = procs.stop(sorted(pids), timeout=STOP_TIMEOUT)
        if left:
            raise LabError(f"openstack: processes {left} survived SIGKILL")


# neutron's get_ports reads Port.port_forwardings, a backref that exists only once
# SQLAlchemy has configured the mappers, which the first query of the process does. In
# the API-only process nothing queries before nova's first GET /v2.0/ports (at a server's
# create and delete), so every such request failed with HTTP 500 ("type object 'Port'
# has no attribute 'port_forwardings'") until something else had queried; the same with
# SQLAlchemy 2.0.58. The worker configures them once its application is loaded.
NEUTRON_HOOK = """

def post_worker_init(worker):
    import sqlalchemy.orm

    sqlalchemy.orm.configure_mappers()
"""

# Quorum queues for every queue, the transient ones (RPC replies, per-server topics)
# too, under names that survive a reconnect: what kolla-ansible configures now. With
# oslo.messaging's defaults (classic transient queues, random reply queue names) a
# controller cut off took the queues homed on its RabbitMQ node with it, and the casts
# and replies in flight: measured on the lab, a server set to ERROR after a 60 s
# MessagingTimeout, and two left in BUILD for good while ctl3 was cut off.
RABBIT_QUEUES = """[oslo_messaging_rabbit]
rabbit_quorum_queue = true
rabbit_transient_quorum_queue = true
use_queue_manager = true
"""

ML2_CONF = """[ml2]
# no agents, no mechanism driver: networks exist only as rows; servers go --nic none
type_drivers = flat
tenant_network_types =
mechanism_drivers =
extension_drivers =

[ml2_type_flat]
flat_networks =
"""


# ---- HTTP ---------------------------------------------------------------------------


def _get(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether GET ``url`` answers below 500 (an API's version document: 200, or 300
    Multiple Choices, or 401 where even it needs a token); what was seen."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return True, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return exc.code < 500, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"


def _request(method: str, url: str, *, token: str | None = None,
             body: Mapping[str, Any] | None = None, data: bytes | None = None,
             headers: Mapping[str, str] | None = None,
             timeout: float = HTTP_TIMEOUT) -> tuple[int, Mapping[str, str], Any]:
    """One JSON request (or ``data`` as is, with the caller's Content-Type); (status,
    headers, decoded body or None). Raises LabError for no answer and for status >= 400
    (with the API's message, never a request body)."""
    if body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Accept": "application/json",
        **({"Content-Type": "application/json"} if body is not None else {}),
        **({"X-Auth-Token": token} if token else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, dict(response.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        raise LabError(f"{method} {url}: HTTP {exc.code} {detail}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise LabError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc


def admin_token(admin: Admin) -> str:
    domain = {"name": "Default"}
    _, headers, _ = _request("POST", admin.auth_url.rstrip("/") + "/auth/tokens", body={
        "auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": admin.user, "domain": domain, "password": admin.password}}},
            "scope": {"project": {"name": admin.project, "domain": domain}}}})
    token = headers.get("X-Subject-Token")
    if not token:
        raise LabError("keystone issued no token")
    return token


class _Keystone:
    """Just enough of keystone's v3 API to register services, idempotently."""

    def __init__(self, admin: Admin) -> None:
        self.url = admin.auth_url.rstrip("/")
        self.token = admin_token(admin)

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return _request(method, self.url + path, token=self.token, body=body)[2]

    def ensure(self, kind: str, match: Mapping[str, str],
               extra: Mapping[str, str] | None = None) -> str:
        """The id of the one ``kind`` whose fields equal ``match``, made (with ``extra``)
        when there is none; a password in ``extra`` is set again on an existing user."""
        query = urllib.parse.urlencode(match)
        found = self.call("GET", f"/{kind}?{query}")[kind]
        found = [f for f in found if all(f.get(k) == v for k, v in match.items())]
        single = kind[:-1]
        if found:
            ident: str = found[0]["id"]
            if extra and kind == "users":
                self.call("PATCH", f"/users/{ident}", {"user": dict(extra)})
            return ident
        made = self.call("POST", f"/{kind}", {single: {**match, **(extra or {})}})
        return str(made[single]["id"])


class ApiClient:
    """The admin's view of the APIs, by REST (probes and the test; no SDK in the
    harness's environment)."""

    def __init__(self, lab: NovaLab) -> None:
        self.lab = lab
        self._token: str | None = None
        self._issued = 0.0

    def token(self) -> str:
        if self._token is None or time.monotonic() - self._issued > 600:
            self._token = admin_token(self.lab.admin)
            self._issued = time.monotonic()
        return self._token

    def call(self, method: str, api: str, path: str, body: Mapping[str, Any] | None = None,
             headers: Mapping[str, str] | None = None) -> Any:
        return _request(method, self.lab.endpoint(api) + path, token=self.token(), body=body,
                        headers=headers)[2]

    def get(self, api: str, path: str) -> Any:
        return self.call("GET", api, path)
