#!/usr/bin/env python3
"""Benchmark: lab up wall time from nothing, lab down time, total RSS of the lab.

    .venv/bin/python bench/lab_up.py [--runs N]

Takes down any running lab first. Prints one line per run and a summary. Goal from
issue 2: up <= 30 s on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from chaoslab.lab import Lab

LAB_EXES = ("mariadbd", "beam.smp", "epmd", "dockerd", "containerd", "containerd-shim",
            "containerd-shim-runc-v2", "libvirtd", "qemu-system-x86_64", "sshd", "erl_child_setup",
            "inet_gethost")


def lab_rss_mib(root: Path) -> tuple[float, int]:
    """Sum of RSS over processes that belong to the lab: named like a lab daemon and
    either started from the lab root or a qemu (whose cmdline names its domain only)."""
    total_kib, count = 0, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            comm = (entry / "comm").read_text().strip()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if comm not in LAB_EXES and not any(comm.startswith(e[:15]) for e in LAB_EXES):
            continue
        if comm != "qemu-system-x86" and str(root) not in cmdline and comm not in (
                "epmd", "erl_child_setup", "inet_gethost", "libvirtd", "containerd-shim"):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
                count += 1
    return total_kib / 1024, count


def chaos(*args: str) -> float:
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "chaos.cli", *args], capture_output=True,
                            text=True, timeout=600)
    if result.returncode != 0:
        sys.exit(f"chaos {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lab = Lab()
    if lab.read_state() is not None:
        chaos("lab", "down")
    ups, downs, rss = [], [], []
    for run in range(1, args.runs + 1):
        ups.append(chaos("lab", "up"))
        time.sleep(2)  # let start-up transients settle before measuring memory
        mib, count = lab_rss_mib(lab.root)
        rss.append(mib)
        downs.append(chaos("lab", "down"))
        print(f"run {run}: up {ups[-1]:5.1f} s   down {downs[-1]:4.1f} s   "
              f"RSS {mib:6.0f} MiB over {count} processes", flush=True)
    print(f"lab up   median {statistics.median(ups):5.1f} s  (min {min(ups):.1f}, max "
          f"{max(ups):.1f}; goal <= 30 s)")
    print(f"lab down median {statistics.median(downs):5.1f} s")
    print(f"lab RSS  median {statistics.median(rss):6.0f} MiB")


if __name__ == "__main__":
    main()
