#!/usr/bin/env python3
"""Benchmark: the harness at the seed's scale (issue 14).

    .venv/bin/python bench/scale.py [--hosts 1,5,10,25,50] [--vms 1,20] [--runs 3]
                                    [--out DIR]

For each number of VMs per host, brings the lab up with a fleet of 50 light computes
(``chaos lab up --computes 53 --vms K``: cmp4..cmp53), then for each number of hosts H
measures, on a site made of the first H fleet hosts (and the lab's controllers):

- snapshot: ``expect.vm_snapshot`` of every VM of the H hosts (what a compute drill
  records before and after its fault; the rolling scenario records the whole fleet);
- sample: one ``Monitor.sample`` of the whole site (Galera, RabbitMQ, every compute's
  libvirt and VMs), what the monitor does once a second during a reported run;
- drill: the harness's time for one compute drill on cmp4 (snapshot of the host, libvirtd
  killed, recovery until libvirt answers, snapshot, verdict) with the monitor sampling
  the H-host site once a second beside it, as in a reported run; and "own", the drill
  less the time libvirtd itself took to start answering (the site's time, not ours).

Prints a table (median of --runs; min-max in brackets), writes scale.json and draws
scale.png in --out (default bench/out). Takes down any running lab first, and leaves the
lab down (--keep: the last fleet stays up; a lab already up at the size is reused).
Every figure is measured: no size here is extrapolated unless the table says so.
Goals (issue 14): 1000 VMs over 50 hosts snapshot <= 5 s; one sample of a 50-compute site
<= 1 s; a drill's own time the same whatever the size of the site.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaos import expect, inventory
from chaos.faults import Faults
from chaos.inventory import Site
from chaos.journal import Journal
from chaos.monitor import Monitor
from chaos.services.libvirt import with_libvirt
from chaoslab.fleet import FleetSize
from chaoslab.lab import Lab
from recovery import libvirt as recover_libvirt

FLEET_FIRST = 4


def chaos(*args: str, timeout: float = 900) -> None:
    result = subprocess.run([sys.executable, "-m", "chaos.cli", *args], capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode != 0:
        sys.exit(f"chaos {' '.join(args)} failed ({result.returncode}): "
                 f"{(result.stderr or result.stdout).strip()[-500:]}")


def subset(site: Site, hosts: int) -> Site:
    """The site with only the first ``hosts`` fleet computes."""
    keep = [f"cmp{n}" for n in range(FLEET_FIRST, FLEET_FIRST + hosts)]
    return site.model_copy(update={"computes": [c for c in site.computes if c.name in keep]})


def timed(work: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.monotonic()
        work()
        out.append(time.monotonic() - started)
    return out


def drill(site: Site, path: str, host: str) -> tuple[float, float]:
    """One compute drill on ``host``, the monitor running over ``site``: (wall seconds,
    seconds libvirtd took to answer again after its start, the site's share)."""
    compute = site.host(host)
    uri = compute.libvirt.uri  # type: ignore[union-attr]
    journal = Journal(None, scenario="bench")
    with Monitor(site, journal), Faults(site, inventory_path=path, journal=journal) as faults:
        started = time.monotonic()
        before = expect.vm_snapshot(site, [host])
        faults.add("kill", host, "libvirt")
        restart = time.monotonic()
        recover_libvirt.recover(site, only=host)
        answered = time.monotonic()
        # the recovery ends on the first answer; how long libvirtd took is the site's
        with_libvirt(uri, lambda c: c.getLibVersion(), timeout=5, what="ping")
        verdict = expect.vm_verdict(before, expect.vm_snapshot(site, [host]))
        wall = time.monotonic() - started
    if not verdict.all_survived:
        sys.exit(f"drill on {host}: {verdict.summary()}")
    return wall, answered - restart


def measure(vms: int, hosts_list: list[int], runs: int) -> list[dict[str, Any]]:
    largest = max(hosts_list)
    lab = Lab()
    if lab.is_running() and lab.fleet_size() == FleetSize(FLEET_FIRST - 1 + largest, vms):
        print(f"# the running lab has {largest} fleet hosts x {vms} VM(s): reused",
              flush=True)
    else:
        chaos("lab", "down")
        started = time.monotonic()
        chaos("lab", "up", "--computes", str(FLEET_FIRST - 1 + largest), "--vms", str(vms),
              timeout=1800)
        print(f"# lab up with {largest} fleet hosts x {vms} VM(s) in "
              f"{time.monotonic() - started:.0f}s", flush=True)
    path = "/var/lib/chaos-lab/inventory.yaml"
    full = inventory.load(path)
    rows = []
    for hosts in hosts_list:
        site = subset(full, hosts)
        names = [c.name for c in site.computes if c.name.startswith("cmp")
                 and int(c.name[3:]) >= FLEET_FIRST]
        count = len(expect.vm_snapshot(site, names))
        if count != hosts * vms:
            sys.exit(f"{hosts} hosts: {count} VMs seen, {hosts * vms} expected")
        snap = timed(lambda s=site, n=names: expect.vm_snapshot(s, n), runs)  # type: ignore[misc]
        monitor = Monitor(site, Journal(None, scenario="bench"))
        sample = timed(monitor.sample, runs)
        drills = [drill(site, path, f"cmp{FLEET_FIRST}") for _ in range(runs)]
        walls = [w for w, _ in drills]
        own = [w - s for w, s in drills]
        rows.append({"hosts": hosts, "vms_per_host": vms, "vms": count,
                     "snapshot": snap, "sample": sample, "drill": walls, "drill_own": own,
                     "measured": True})
        print(row_text(rows[-1]), flush=True)
    return rows


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} [{min(values):.2f}-{max(values):.2f}]"


def row_text(row: dict[str, Any]) -> str:
    return (f"{row['hosts']:>5} {row['vms_per_host']:>7} {row['vms']:>6}  "
            f"{fmt(row['snapshot']):>20} {fmt(row['sample']):>20} {fmt(row['drill']):>20} "
            f"{fmt(row['drill_own']):>20}")


HEADER = (f"{'hosts':>5} {'VMs/host':>7} {'VMs':>6}  {'snapshot s':>20} {'sample s':>20} "
          f"{'drill s':>20} {'drill own s':>20}")


def plot(rows: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for vms in sorted({r["vms_per_host"] for r in rows}):
        mine = [r for r in rows if r["vms_per_host"] == vms]
        xs = [r["hosts"] for r in mine]
        for ax, key, title in zip(axes, ("snapshot", "sample", "drill_own"),
                                  ("VM snapshot", "one monitor sample",
                                   "one compute drill (harness's own time)"), strict=True):
            ax.plot(xs, [statistics.median(r[key]) for r in mine], marker="o",
                    label=f"{vms} VM(s)/host")
            ax.set_title(title)
            ax.set_xlabel("compute hosts")
            ax.set_ylabel("seconds (median)")
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)
    axes[0].axhline(5, color="red", linestyle="--", linewidth=0.8, label="goal (1000 VMs)")
    axes[1].axhline(1, color="red", linestyle="--", linewidth=0.8, label="goal (50 hosts)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle("chaos harness at scale: measured on the lab's fleet (2 cores)")
    fig.tight_layout()
    path = out / "scale.png"
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="1,5,10,25,50")
    parser.add_argument("--vms", default="1,20")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "out"))
    parser.add_argument("--keep", action="store_true", help="leave the last fleet up")
    parser.add_argument("--replot", metavar="JSON", help="draw the plot of an earlier run")
    args = parser.parse_args()
    hosts_list = sorted(int(h) for h in args.hosts.split(","))
    vms_list = [int(v) for v in args.vms.split(",")]
    if not 1 <= args.runs <= 20 or not all(1 <= h <= 97 for h in hosts_list):
        parser.error("--runs 1..20, --hosts each 1..97")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        print(f"plot: {plot(json.loads(Path(args.replot).read_text()), out)}")
        return
    rows: list[dict[str, Any]] = []
    print(HEADER, flush=True)
    try:
        for vms in vms_list:
            rows += measure(vms, hosts_list, args.runs)
    finally:
        if not args.keep:
            chaos("lab", "down")
    (out / "scale.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{HEADER}")
    for row in rows:
        print(row_text(row))
    print(f"\ntable: {out / 'scale.json'}; plot: {plot(rows, out)}")


if __name__ == "__main__":
    main()
