"""sshd of the lab: one daemon listening on every lab host's address, so that the
harness's ssh targets (fabric) reach each "host" for real, with a key made per lab."""

from __future__ import annotations

import pwd
import shutil
from pathlib import Path

from chaos.errors import LabError
from chaos.wait import wait_for
from chaoslab import procs
from chaoslab.model import Check, Host, Register
from chaoslab.procs import Daemon

SSHD = "/usr/sbin/sshd"
# OpenSSH's sshd listens on at most 16 sockets (MAX_LISTEN_SOCKS in sshd.c): past that
# it exits at start, as the first 50-host fleet found
MAX_LISTEN = 16


class SshdLab:
    """``sshd -D`` with its own host keys, authorized key and pid file under ``root``."""

    name = "sshd"

    def __init__(self, root: Path, hosts: list[Host], *, port: int = 2222,
                 per_daemon: int = MAX_LISTEN) -> None:
        self.root = root
        self.hosts = hosts
        self.port = port
        # hosts one sshd listens for: the fleet gives each host a daemon of its own
        self.per_daemon = max(1, min(per_daemon, MAX_LISTEN))

    def groups(self) -> list[list[Host]]:
        """The hosts of each sshd daemon, in order."""
        return [self.hosts[i:i + self.per_daemon]
                for i in range(0, len(self.hosts), self.per_daemon)]

    @property
    def client_key(self) -> Path:
        """Private key the harness uses to log in as root on every lab host."""
        return self.root / "id_ed25519"

    def preflight(self) -> list[str]:
        problems = []
        for tool in (SSHD, "/usr/bin/ssh-keygen"):
            if not Path(tool).exists():
                problems.append(f"{tool} is missing (Debian package openssh-server)")
        problems += [
            f"sshd: {h.address}:{self.port} is already in use"
            for h in self.hosts
            if procs.port_in_use(h.address, self.port)
        ]
        return problems

    def _keys(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        host_key = self.root / "ssh_host_ed25519_key"
        if not host_key.exists():
            procs.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                      timeout=20)
        if not self.client_key.exists():
            procs.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "chaos-lab",
                       "-f", str(self.client_key)], timeout=20)
        shutil.copyfile(f"{self.client_key}.pub", self.root / "authorized_keys")
        (self.root / "authorized_keys").chmod(0o600)

    def _config(self, index: int, hosts: list[Host]) -> Path:
        listen = "\n".join(f"ListenAddress {h.address}:{self.port}" for h in hosts)
        config = self.root / ("sshd_config" if index == 0 else f"sshd_config-{index}")
        pidfile = self.root / ("sshd.pid" if index == 0 else f"sshd-{index}.pid")
        config.write_text(
            f"""{listen}
HostKey {self.root}/ssh_host_ed25519_key
PidFile {pidfile}
AuthorizedKeysFile {self.root}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# a fleet of computes is asked all at once (chaos.fanout); the default 10 would drop some
MaxStartups 200
# the lab's files live in a directory sshd's owner checks would refuse
StrictModes no
PrintMotd no
LogLevel ERROR
"""
        )
        return config

    def _light_sessions(self) -> list[str]:
        """A prefix that runs sshd in a mount namespace of its own, where root's
        ``.bashrc`` is an empty file. Debian's bash reads ``.bashrc`` for every command
        run over ssh, and the build machines' root ``.bashrc`` starts pyenv: 150 ms of
        CPU per command, measured, which no compute host of a real site pays and which
        would swamp what bench/scale.py measures. Nothing outside the namespace changes;
        mounts made later on the machine still reach it (slave propagation)."""
        home = Path(pwd.getpwnam("root").pw_dir)
        if not (home / ".bashrc").is_file() or shutil.which("unshare") is None:
            return []
        empty = self.root / "session-bashrc"
        empty.write_text("# the lab's ssh sessions: no shell start-up of the build machine\n")
        return ["unshare", "--mount", "--propagation", "slave", "sh", "-c",
                'mount --bind "$0" "$1" && shift && exec "$@"', str(empty),
                str(home / ".bashrc")]

    def up(self, register: Register) -> None:
        self._keys()
        # sshd insists on its privilege-separation directory
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        daemons = []
        for index, hosts in enumerate(self.groups()):
            config = self._config(index, hosts)
            procs.run([SSHD, "-t", "-f", str(config)], timeout=10)
            daemon = procs.spawn("sshd", [*self._light_sessions(), SSHD, "-D", "-e", "-f",
                                          str(config)],
                                 log=self.root / ("sshd.log" if index == 0
                                                  else f"sshd-{index}.log"))
            register(daemon)
            daemons.append(daemon)

        def listening() -> tuple[bool, str]:
            dead = [d.log for d in daemons if not procs.alive(d.pid)]
            if dead:
                raise LabError(f"sshd exited at start; see {dead[0]}")
            down = [h.name for h in self.hosts if not procs.port_open(h.address, self.port)]
            return not down, f"not listening yet for {down}"

        wait_for(listening, what="sshd to listen", timeout=10 + len(daemons) * 0.2,
                 interval=0.1)

    def status(self) -> list[Check]:
        down = [h.address for h in self.hosts if not procs.port_open(h.address, self.port)]
        detail = f"listening on {len(self.hosts) - len(down)}/{len(self.hosts)} addresses"
        if down:
            detail += f"; not on {', '.join(down)}"
        return [Check("sshd", not down, detail)]

    def down(self, daemons: list[Daemon]) -> None:
        procs.stop([p for d in daemons for p in d.pids()], timeout=5)
