"""Kubernetes server binaries for the lab's Kubernetes tier, built from Debian's source.

No registry reachable here ships kube-apiserver, k3s or kind; Debian's *source* package
``kubernetes`` (1.20.2, the orig tarball carries vendor/) builds with golang-1.19 in
GOPATH mode once ``make gen_openapi`` has generated the OpenAPI definitions. The result
is cached outside the repository (``$CHAOS_KUBE_CACHE``, default /var/cache/chaos-kube)
and rebuilt only when a binary is missing or was built from another source version.

Measured on the 2-core reference machine: the cold build took 8 min 44 s from an empty
cache (kube-apiserver 4 min, kubelet 3 min); the log in the cache times each step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from chaos.errors import EnvironmentProblem, LabError

DEFAULT_CACHE = Path("/var/cache/chaos-kube")
SOURCE_PACKAGE = "kubernetes"
SOURCE_VERSION = "1.20.2"  # the upstream tree inside Debian's 1.20.5+really1.20.2
# the lab's own changes to that tree; a new one bumps BUILD_ID, so caches rebuild
BUILD_ID = f"{SOURCE_VERSION}+chaos2"
PATCHES = [
    # Every node of the lab is a loopback address of one machine (127.0.1.x); the
    # kubelet refuses a loopback node IP and then publishes no address at all, so the
    # apiserver cannot reach it for exec or logs.
    ("pkg/kubelet/kubelet_node_status.go",
     """	if nodeIP.IsLoopback() {
		return fmt.Errorf("nodeIP can't be loopback address")
	}""",
     """	if nodeIP.IsLoopback() {
		return nil // chaos lab: nodes are loopback addresses of one machine
	}"""),
    # Each kubelet garbage-collects the pod log directories of pods it does not run;
    # several kubelets on one machine sharing /var/log/pods delete each other's logs
    # (measured: the API then served no log for the nova stand-in). A kubelet of the
    # lab keeps them in a directory of its own, named by $CHAOS_KUBELET_POD_LOGS.
    ("pkg/kubelet/kuberuntime/kuberuntime_manager.go",
     """	// The root directory for pod logs
	podLogsRootDirectory = "/var/log/pods"
""",
     """	// The root directory for pod logs: podLogsRootDirectory below (chaos lab)
"""),
    ("pkg/kubelet/kuberuntime/helpers.go",
     """func BuildPodLogsDirectory(""",
     """// chaos lab: $CHAOS_KUBELET_POD_LOGS, for several kubelets on one machine
var podLogsRootDirectory = func() string {
	if dir := os.Getenv("CHAOS_KUBELET_POD_LOGS"); dir != "" {
		return dir
	}
	return "/var/log/pods"
}()

func BuildPodLogsDirectory("""),
    ("pkg/kubelet/kuberuntime/helpers.go", "import (\n", "import (\n\t\"os\" // chaos lab\n"),
]
GO = Path("/usr/lib/go-1.19/bin/go")
# CGO off for the control plane (static, as Debian builds them); the kubelet needs cgo
BINARIES = {
    "kube-apiserver": False,
    "kube-controller-manager": False,
    "kube-scheduler": False,
    "kubelet": True,
}
DEB_SRC_LIST = Path("/etc/apt/sources.list.d/chaos-deb-src.sources")
DEB_SRC = """\
# written by chaos (lab --kube): Debian source packages, to build the lab's Kubernetes
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
BUILD_TIMEOUT = 45 * 60.0  # per step; the whole cold build took 8 min 44 s on 2 cores
PAUSE_SOURCE = "build/pause/linux/pause.c"


def cache_dir() -> Path:
    return Path(os.environ.get("CHAOS_KUBE_CACHE") or DEFAULT_CACHE)


def bin_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "bin"


def _stamp(cache: Path) -> Path:
    return bin_dir(cache) / ".built-from"


def built(cache: Path | None = None) -> bool:
    """Every binary present and built from the expected source version."""
    cache = cache or cache_dir()
    try:
        stamp = _stamp(cache).read_text().strip()
    except OSError:
        return False
    names = [*BINARIES, "pause"]
    return stamp == BUILD_ID and all((bin_dir(cache) / n).is_file() for n in names)


def preflight() -> list[str]:
    """What forbids a build on this machine; [] when it can build (or needs not)."""
    if built():
        return []
    problems = []
    if not GO.is_file():
        problems.append(f"kube: {GO} missing (install golang-1.19-go)")
    if shutil.which("gcc") is None:
        problems.append("kube: gcc missing (the kubelet and the pause binary need it)")
    if shutil.which("apt-get") is None:
        problems.append("kube: apt-get missing (the source comes from Debian)")
    return problems


def _run(argv: list[str], log: Path, *, cwd: Path | None = None,
         env: dict[str, str] | None = None, timeout: float) -> None:
    started = time.monotonic()
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        try:
            result = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise LabError(f"kube build: {argv[0]} did not finish in {timeout:.0f}s "
                           f"(log: {log})") from None
        out.write(f"# exit {result.returncode} after {time.monotonic() - started:.0f}s\n")
    if result.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise LabError(f"kube build: {' '.join(argv[:3])} failed (exit {result.returncode}; "
                       f"log: {log}): {' | '.join(tail)}")


def _source_tree(cache: Path, log: Path) -> Path:
    """The upstream tree, unpacked from Debian's orig tarball (downloaded once)."""
    src = cache / "src"
    tree = src / f"kubernetes-{SOURCE_VERSION}"
    if (tree / "cmd" / "kube-apiserver").is_dir() and (tree / "vendor").is_dir():
        return tree
    src.mkdir(parents=True, exist_ok=True)
    tarballs = sorted(src.glob(f"{SOURCE_PACKAGE}_*really{SOURCE_VERSION}.orig.tar.gz"))
    if not tarballs:
        if not DEB_SRC_LIST.exists():
            DEB_SRC_LIST.write_text(DEB_SRC)
        _run(["apt-get", "update", "-qq"], log, timeout=600)
        _run(["apt-get", "source", "--download-only", SOURCE_PACKAGE], log, cwd=src,
             timeout=600)
        tarballs = sorted(src.glob(f"{SOURCE_PACKAGE}_*really{SOURCE_VERSION}.orig.tar.gz"))
        if not tarballs:
            raise EnvironmentProblem(
                f"kube build: Debian's {SOURCE_PACKAGE} source is not {SOURCE_VERSION} "
                f"any more (see {src}); the lab's Kubernetes tier is written for 1.20")
    _run(["tar", "-C", str(src), "-xzf", str(tarballs[-1])], log, timeout=600)
    return tree


def _patch(tree: Path, out: Path) -> None:
    """Apply the lab's patches (idempotent); a binary built before a patch goes."""
    try:
        stamp = _stamp(out.parent).read_text().strip()
    except OSError:
        stamp = ""
    if stamp and stamp != BUILD_ID:
        for name in BINARIES:
            (out / name).unlink(missing_ok=True)
    for relative, old, new in PATCHES:
        path = tree / relative
        text = path.read_text()
        if new in text:
            continue
        if old not in text:
            raise LabError(f"kube build: {relative} does not read as expected; "
                           "the lab's patch does not apply")
        path.write_text(text.replace(old, new))


def ensure_binaries(*, progress: bool = True) -> Path:
    """The directory holding kube-apiserver, kube-controller-manager, kube-scheduler,
    kubelet and pause; built first when missing."""
    cache = cache_dir()
    out = bin_dir(cache)
    if built(cache):
        return out
    problems = preflight()
    if problems:
        raise EnvironmentProblem(problems[0])
    cache.mkdir(parents=True, exist_ok=True)
    out.mkdir(exist_ok=True)
    log = cache / "build.log"
    if progress:
        print(f"building Kubernetes {SOURCE_VERSION} from Debian's source once "
              f"(about 9 min on 2 cores; log: {log})", flush=True)
    tree = _source_tree(cache, log)
    gopath = cache / "gopath"
    link = gopath / "src" / "k8s.io" / "kubernetes"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(tree)
    _patch(tree, out)
    env = {**os.environ, "GOPATH": str(gopath), "GO111MODULE": "off",
           "GOCACHE": str(cache / "gocache"), "HOME": str(cache),
           "PATH": f"{GO.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           # GOPATH mode finds vendor/ only from the path under GOPATH; the kernel
           # resolves the link for cwd, and Go trusts $PWD when it names the same place
           "PWD": str(link)}
    if not (tree / "pkg" / "generated" / "openapi" / "zz_generated.openapi.go").is_file():
        _run(["make", "gen_openapi"], log, cwd=link, env=env, timeout=BUILD_TIMEOUT)
    for name, cgo in BINARIES.items():
        if (out / name).is_file():
            continue
        _run([str(GO), "build", "-o", str(out / f".{name}.tmp"), f"./cmd/{name}"], log,
             cwd=link, env={**env, "CGO_ENABLED": "1" if cgo else "0"}, timeout=BUILD_TIMEOUT)
        (out / f".{name}.tmp").rename(out / name)
    # the pod sandbox ("pause") image's one binary, from its C source: no registry here
    _run(["gcc", "-Os", "-static", "-DVERSION=chaos-lab", "-o", str(out / "pause"),
          str(tree / PAUSE_SOURCE)], log, timeout=120)
    _stamp(cache).write_text(BUILD_ID + "\n")
    return out
