"""A real Keystone (OpenStack Identity), from OpenStack's releases on PyPI.

Keystone's virtualenv
---------------------
Keystone does not go into the harness's environment: its requirements are OpenStack's
whole library stack (oslo.*, SQLAlchemy, eventlet…), pinned together by
``openstack-constraints.txt`` beside this file (OpenStack's own upper-constraints play
that part upstream; its header says why pins are needed at all). The virtualenv lives
outside every lab, in ``$CHAOS_OPENSTACK_CACHE/venv`` (default
/var/cache/chaos-openstack), built from Debian's ``/usr/bin/python3`` and reused by every
lab and test; a stamp file names what it was built from, and it is built again only
when that changes. Measured on the 2-core VM: a cold build (empty pip cache) of
keystone alone 53.5 s, 282 MB; python-openstackclient is ~9 s and ~70 MB of that, and
goes there too, not into the harness's venv: it shares keystone's library stack and
pins, while the harness's dependencies owe nothing to OpenStack's. With nova, glance,
placement, neutron and libvirt-python of the same series (chaoslab/nova.py runs them)
the cold build is 98 s and 619 MB. A rebuild deletes the venv first, so it is refused
while any process runs from it (``venv_users``): pins changed under a running lab
wait for its ``down``.

Serving
-------
gunicorn (from PyPI: no compiler, no Debian package) serves keystone's public WSGI
application, one worker with four threads. It is started with no arguments at all, in
the component's root, where it finds ``gunicorn.conf.py``: keystone parses the process's
command line as its own options (oslo.config), and ``gunicorn --config …`` dies in every
worker with "ambiguous option: --config". The master writes the pidfile; a SIGKILLed
master's worker notices its parent gone and exits by itself within ~1 s (measured: it
answered one more request 0.5 s after the kill, none at 1 s).

Measured (keystone 26.1.1, before 30.0.0; SQLite): ``up`` 15 s with the venv built
(keystone-manage steps 2.5-3.6 s each, mostly imports; the worker answers ~2.2 s after
start), a token 0.45-0.65 s (bcrypt), RSS 25 MB (master) + 134 MB (worker). On a one-node Galera
(GaleraLab at another address, the lab's account): ``up`` 22 s, db_sync being slower
on InnoDB; tokens 0.55-0.70 s.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from chaos.errors import LabError, ProbeTimeout
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.model import Check, Register, secret_file
from chaoslab.procs import Daemon

# the newest on PyPI, matching the pinned oslo libraries: 26.1.1 (2024.2) issued tokens
# with them, but failed every request made with one (oslo.context 6 dropped
# RequestContext._domain_id, which its auth middleware reads): HTTP 500
KEYSTONE_VERSION = "30.0.0"
# the rest of the same release series, 2026.2 (all four published on 2026-09-30 with
# keystone 30.0.0): the services of chaoslab/nova.py share this venv and its pins
NOVA_VERSION = "34.0.0"
GLANCE_VERSION = "33.0.0"
PLACEMENT_VERSION = "16.0.0"
NEUTRON_VERSION = "29.0.0"
PYTHON = "/usr/bin/python3"  # Debian's, as quickstart's own venv (python3-venv)
CONSTRAINTS = Path(__file__).with_name("openstack-constraints.txt")
PACKAGES = (
    f"keystone=={KEYSTONE_VERSION}", f"nova=={NOVA_VERSION}", f"glance=={GLANCE_VERSION}",
    f"openstack-placement=={PLACEMENT_VERSION}", f"neutron=={NEUTRON_VERSION}",
    # nova's libvirt driver imports it; built from source against Debian's libvirt-dev
    # (quickstart installs gcc, pkg-config and libvirt-dev for the harness's own copy)
    "libvirt-python", "PyMySQL", "gunicorn", "python-openstackclient",
)
DEFAULT_CACHE = Path("/var/cache/chaos-openstack")

PUBLIC_PORT = 5000
ADMIN_USER = "admin"
ADMIN_PROJECT = "admin"
CLOUD_NAME = "chaos-lab"

BUILD_TIMEOUT = 900.0  # a cold build takes ~100 s here; a slow mirror may take many times that
MANAGE_TIMEOUT = 120.0  # each keystone-manage step takes ~3 s here
UP_TIMEOUT = 60.0  # the worker answers ~2.2 s after start
STOP_TIMEOUT = 10.0  # graceful_timeout is 5 s; idle workers stop at once
TOKEN_TIMEOUT = 10.0  # one token costs ~0.5 s (bcrypt)


def openstack_cache() -> Path:
    """``$CHAOS_OPENSTACK_CACHE`` or /var/cache/chaos-openstack."""
    return Path(os.environ.get("CHAOS_OPENSTACK_CACHE") or DEFAULT_CACHE)


# ---- keystone's virtualenv ------------------------------------------------------------


def _stamp() -> str:
    """What the venv is built from: the interpreter, the packages and their pins."""
    text = "\n".join((os.path.realpath(PYTHON), *PACKAGES, CONSTRAINTS.read_text()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def venv_current(cache: Path) -> bool:
    return (cache / "venv" / ".chaos-stamp").is_file() and (
        (cache / "venv" / ".chaos-stamp").read_text().strip() == _stamp()
    )


def ensure_venv(cache: Path | None = None, *, timeout: float = BUILD_TIMEOUT) -> Path:
    """Keystone's virtualenv under ``cache``, built when missing or out of date; its path.

    Two labs may ask at once: one builds, the other waits (bounded) for it."""
    cache = cache or openstack_cache()
    venv = cache / "venv"
    if venv_current(cache):
        return venv
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:

        def locked() -> tuple[bool, str]:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False, "another build holds the lock"
            return True, "locked"

        try:
            wait_for(locked, what=f"the lock on {cache}", timeout=timeout, interval=1.0)
        except ProbeTimeout as exc:
            raise LabError(f"keystone venv: {exc}") from exc
        if not venv_current(cache):  # the build we waited for may have made it
            users = venv_users(venv)
            if users:
                # a rebuild starts by deleting the venv: under a running service (the
                # lab's keystone while a test asks, say) that breaks its next import
                raise LabError(f"OpenStack venv {venv} is out of date (the pins changed) "
                               f"but processes {users[:5]} run from it: stop them "
                               "(chaos lab down) and try again")
            _build(venv, timeout)
    return venv


def venv_users(venv: Path) -> list[int]:
    """Live processes whose command line names a path inside ``venv``."""
    if not venv.exists():
        return []
    marker = str(venv).encode() + b"/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes() and procs.alive(int(entry.name)):
                found.append(int(entry.name))
    return sorted(found)


def _build(venv: Path, timeout: float) -> None:
    # a venv is not relocatable (its scripts name its path): built in place, the stamp
    # last, so a half-built one is never taken for done
    shutil.rmtree(venv, ignore_errors=True)
    started = time.monotonic()
    procs.run([PYTHON, "-m", "venv", str(venv)], timeout=120)
    log = venv.parent / "build.log"
    result = procs.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--no-input",
         "--timeout", "60", "--retries", "2", "-c", str(CONSTRAINTS), *PACKAGES],
        timeout=max(1.0, timeout - (time.monotonic() - started)), check=False,
    )
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        raise LabError(f"keystone venv: pip install exited {result.returncode}: "
                       f"{errors[-1] if errors else '(no error line)'} (log: {log})")
    (venv / ".chaos-stamp").write_text(_stamp() + "\n")


# ---- the client side -----------------------------------------------------------------


class TokenResult(NamedTuple):
    ok: bool
    seconds: float
    error: str | None


def _http_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s"
    return f"{type(exc).__name__}: {exc}"


def issue_token(url: str, user: str, password: str, project: str,
                timeout: float = TOKEN_TIMEOUT) -> TokenResult:
    """Ask keystone at ``url`` (its /v3 endpoint) for a token scoped to ``project``, all
    in the Default domain, as a client would; never raises. ``error`` never holds the
    password (keystone's error bodies do not echo it, and they are not read)."""
    domain = {"name": "Default"}
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {
            "user": {"name": user, "domain": domain, "password": password}}},
        "scope": {"project": {"name": project, "domain": domain}},
    }}
    request = urllib.request.Request(
        url.rstrip("/") + "/auth/tokens", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            has_token = bool(response.headers.get("X-Subject-Token"))
            status = response.status
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        return TokenResult(False, time.monotonic() - started, _http_error(exc, timeout))
    seconds = time.monotonic() - started
    if status != 201 or not has_token:
        return TokenResult(False, seconds, f"HTTP {status} without a token")
    return TokenResult(True, seconds, None)


def api_answers(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether GET ``url`` (keystone's /v3) answers 200, and what was seen."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200, f"HTTP {response.status}"
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        return False, _http_error(exc, timeout)


# ---- the component -------------------------------------------------------------------


def _ini(value: str) -> str:
    # oslo.config substitutes $name in values; a password may hold a '$'
    return value.replace("$", "$$")


class KeystoneLab:
    """Keystone's public API on ``address``:5000, its state under ``root``.

    ``database_url`` is an SQLAlchemy URL: ``mysql+pymysql://user:pw@ctl1/keystone``
    (one Galera node, or a write endpoint; the database is created when missing) or
    ``sqlite:////path/keystone.db``. The schema and the bootstrap data are written by
    every ``up``; both are idempotent, but a second keystone on the same database must
    not run them at once (Galera would fail the concurrent DDL) -- one instance per
    database is all this component starts.
    """

    name = "keystone"

    def __init__(self, root: Path, address: str, database_url: str, *,
                 port: int = PUBLIC_PORT, cache: Path | None = None,
                 admin_password_file: Path | None = None, region: str = "RegionOne") -> None:
        self.root = root
        self.address = address
        self.port = port
        self.database_url = database_url
        self.cache = cache or openstack_cache()
        self.password_file = admin_password_file or root / "secrets" / "admin-password"
        self.region = region
        self.auth_url = f"http://{address}:{port}/v3"
        self.venv = self.cache / "venv"
        self.pidfile = root / "keystone.pid"  # gunicorn's master writes it
        self.log = root / "keystone.log"  # keystone's own
        self.server_log = root / "gunicorn.log"  # gunicorn's, and anything on stderr
        self.clouds_yaml = root / "clouds.yaml"

    # ---- facts the inventory and clients use -------------------------------------
    def start_command(self) -> str:
        """The shell command that starts keystone as is (no argument: see the module
        docstring); it writes the pidfile itself."""
        return (f"cd {shlex.quote(str(self.root))} && "
                f"exec {shlex.quote(str(self.venv / 'bin' / 'gunicorn'))}")

    def admin_password(self) -> str:
        return secret_file(self.password_file, lambda: _secrets.token_urlsafe(18))

    def openstack_env(self) -> dict[str, str]:
        """Environment for the ``openstack`` CLI (in keystone's venv): the password stays
        in clouds.yaml (mode 600)."""
        return {"OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml), "OS_CLOUD": CLOUD_NAME}

    def token(self, timeout: float = TOKEN_TIMEOUT) -> TokenResult:
        return issue_token(self.auth_url, ADMIN_USER, self.admin_password(), ADMIN_PROJECT,
                           timeout)

    # ---- preflight ---------------------------------------------------------------
    def preflight(self) -> list[str]:
        problems: list[str] = []
        if not Path(PYTHON).exists():
            problems.append(f"keystone: {PYTHON} missing (install python3)")
        elif not venv_current(self.cache) and procs.run(
                [PYTHON, "-c", "import ensurepip"], timeout=30, check=False).returncode:
            problems.append("keystone: python3 cannot make a venv (install python3-venv)")
        if os.geteuid() != 0:
            problems.append("keystone: must run as root (its key repositories are root's)")
        if procs.port_in_use(self.address, self.port):
            problems.append(f"keystone: {self.address}:{self.port} already in use")
        return problems

    # ---- up ----------------------------------------------------------------------
    def up(self, register: Register) -> None:
        problems = self.preflight()
        if problems:
            raise LabError(problems[0])
        ensure_venv(self.cache)
        self._write_files()
        if self.database_url.startswith("mysql"):
            self._create_database()
        # independent steps, 2.5-3 s each, mostly imports: at once, up took 14.9 s, not 15.9
        owner = ("--keystone-user", "root", "--keystone-group", "root")
        with ThreadPoolExecutor(max_workers=3) as pool:
            steps = [pool.submit(self._manage, "fernet_setup", *owner),
                     pool.submit(self._manage, "credential_setup", *owner),
                     pool.submit(self._manage, "db_sync")]
            for step in steps:
                step.result()
        # the password goes by the environment: a command line is world-readable
        self._manage("bootstrap", "--bootstrap-username", ADMIN_USER,
                     "--bootstrap-project-name", ADMIN_PROJECT,
                     "--bootstrap-region-id", self.region,
                     "--bootstrap-public-url", self.auth_url,
                     env={"OS_BOOTSTRAP_PASSWORD": self.admin_password()})
        since = _log_size(self.server_log), _log_size(self.log)
        daemon = procs.spawn(self.name, ["sh", "-c", self.start_command()],
                             log=self.server_log, pidfile=self.pidfile)
        register(daemon)
        self.wait_serving(timeout=UP_TIMEOUT, daemon=daemon, since=since)

    def _write_files(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # fresh keys each up: tokens of an earlier lab must not validate in this one
        for name in ("fernet-keys", "credential-keys"):
            shutil.rmtree(self.root / name, ignore_errors=True)
            (self.root / name).mkdir(mode=0o700)
        (self.root / "lock").mkdir(exist_ok=True)
        conf = self.root / "keystone.conf"
        conf.touch(mode=0o600)  # it holds the database password
        conf.write_text(self._config_text())
        (self.root / "gunicorn.conf.py").write_text(self._gunicorn_text())
        self.clouds_yaml.touch(mode=0o600)
        self.clouds_yaml.write_text(self._clouds_text())

    def _config_text(self) -> str:
        keys = self.root / "fernet-keys"
        return f"""\
# Generated by chaoslab.openstack; rewritten by every `up`.
[DEFAULT]
log_file = {self.log}

[database]
connection = {_ini(self.database_url)}

[token]
provider = fernet

[fernet_tokens]
key_repository = {keys}

[fernet_receipts]
# receipts (multi-factor auth) default to /etc/keystone; the lab keeps out of /etc
key_repository = {keys}

[credential]
key_repository = {self.root / "credential-keys"}

[oslo_concurrency]
lock_path = {self.root / "lock"}
"""

    def _gunicorn_text(self) -> str:
        env = f"OS_KEYSTONE_CONFIG_FILES={self.root / 'keystone.conf'}"
        return f"""\
# Generated by chaoslab.openstack; read by gunicorn from its working directory, because
# keystone takes the process's arguments as its own options (see chaoslab/openstack.py).
bind = {f"{self.address}:{self.port}"!r}
wsgi_app = "keystone.server.wsgi:initialize_public_application()"
# one worker (134 MB RSS) is plenty for a lab; threads overlap bcrypt and the database
workers = 1
worker_class = "gthread"
threads = 4
# a stop must not wait for gunicorn's default 30 s
graceful_timeout = 5
pidfile = {str(self.pidfile)!r}
accesslog = {str(self.root / "access.log")!r}
raw_env = [{env!r}]
"""

    def _clouds_text(self) -> str:
        cloud = {"clouds": {CLOUD_NAME: {
            "auth": {"auth_url": self.auth_url, "username": ADMIN_USER,
                     "password": self.admin_password(), "project_name": ADMIN_PROJECT,
                     "user_domain_name": "Default", "project_domain_name": "Default"},
            "region_name": self.region, "identity_api_version": 3}}}
        # JSON is YAML, and needs no dependency
        return json.dumps(cloud, indent=1) + "\n"

    def _create_database(self) -> None:
        import pymysql

        url = urllib.parse.urlsplit(self.database_url)
        name = url.path.lstrip("/")
        if not name or "`" in name:
            raise LabError(f"keystone: no usable database name in the database URL: {name!r}")
        try:
            conn = pymysql.connect(
                host=url.hostname or "127.0.0.1", port=url.port or 3306,
                user=urllib.parse.unquote(url.username or ""),
                password=urllib.parse.unquote(url.password or ""),
                connect_timeout=10, read_timeout=30, write_timeout=30)
            try:
                with conn.cursor() as cur:
                    cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
            finally:
                conn.close()
        except pymysql.MySQLError as exc:
            # pymysql's messages name the user and host, never the password
            raise LabError(f"keystone: cannot create database {name!r}: {exc}") from exc

    def _manage(self, *args: str, env: dict[str, str] | None = None) -> None:
        since = _log_size(self.log)
        # eventlet's 7-line deprecation banner on every run would bury the error line
        result = procs.run(
            [str(self.venv / "bin" / "keystone-manage"), "--config-file",
             str(self.root / "keystone.conf"), *args],
            timeout=MANAGE_TIMEOUT, check=False, env={"PYTHONWARNINGS": "ignore", **(env or {})})
        if result.returncode != 0:
            raise LabError(f"keystone-manage {args[0]} exited {result.returncode}: "
                           f"{_last_error(self.log, since) or result.stderr.strip()[-300:]}")

    def wait_serving(self, *, timeout: float, daemon: Daemon | None = None,
                     since: tuple[int, int] = (0, 0)) -> None:
        """Return once /v3 answers 200 and the admin gets a token; raise LabError (with
        the logs' news since offsets ``since``) if not within ``timeout`` or if
        ``daemon`` dies meanwhile."""

        def serving() -> tuple[bool, str]:
            if daemon is not None and not daemon.alive():
                return True, "the server exited"
            answers, seen = api_answers(self.auth_url)
            if not answers:
                return False, f"GET /v3: {seen}"
            token = self.token()
            return token.ok, f"token: {token.error or 'issued'}"

        try:
            seen = wait_for(serving, what=f"keystone at {self.auth_url} to issue a token",
                            timeout=timeout, interval=0.25)
        except ProbeTimeout as exc:
            raise LabError(f"keystone: {exc}; {_last_error(self.log, since[1])}") from exc
        if seen == "the server exited":
            raise LabError(f"keystone: the server exited while starting; "
                           f"{_last_error(self.server_log, since[0])}")

    # ---- status ------------------------------------------------------------------
    def status(self) -> list[Check]:
        component = f"keystone/{self.address}"
        answers, seen = api_answers(self.auth_url)
        if not answers:
            return [Check(component, False, f"GET {self.auth_url}: {seen}")]
        token = self.token()
        detail = (f"token issued in {token.seconds:.2f}s" if token.ok
                  else f"API answers, but no token: {token.error}")
        return [Check(component, token.ok, detail)]

    # ---- down --------------------------------------------------------------------
    def server_pids(self) -> list[int]:
        """Every live process serving from this root, whoever started it (the lab, a
        fault's revert, a recovery): gunicorn's master and workers all have the root as
        their working directory, and an orphaned worker outlives its master by ~1 s."""
        root = str(self.root.resolve())
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if (os.readlink(entry / "cwd") == root
                        and str(self.venv) in (entry / "cmdline").read_text(errors="replace")
                        and procs.alive(int(entry.name))):
                    found.append(int(entry.name))
        return found

    def down(self, daemons: list[Daemon]) -> None:
        pids = {p for d in daemons for p in d.pids()} | set(self.server_pids())
        left = procs.stop(sorted(pids), timeout=STOP_TIMEOUT)
        if left:
            raise LabError(f"keystone: processes {left} survived SIGKILL")


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _last_error(path: Path, since: int = 0) -> str:
    """The last ERROR (or CRITICAL) line of a log past offset ``since`` (earlier runs
    append to the same log), else its last line, with the file's name."""
    try:
        with open(path, "rb") as fh:
            fh.seek(since)
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if " ERROR " in line or " CRITICAL " in line or "[ERROR]" in line:
            return f"{path}: {line.strip()[-300:]}"
    return f"{path}: {lines[-1].strip()[-300:]}" if lines else ""
