#!/usr/bin/env python3
"""Benchmark the recovery procedures on the running lab and print figures.

    .venv/bin/python bench/recovery_times.py [--runs N]

- Galera full outage (all three nodes killed with -9) to 3 Synced nodes (goal <= 8 s)
- one Galera node killed and rejoined by IST (goal <= 5 s; the log must show no SST)
- a RabbitMQ node with wiped data rejoined, quorum queues grown back (goal <= 14 s)

Each figure is the procedure alone (observe + plan + execute), from the moment the fault
is in place; the lab's tuned failure detection is part of the Galera figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from chaos import expect, inventory
from chaos.faults import Faults
from chaos.inventory import Controller, Site
from chaoslab.lab import Lab
from recovery import galera, rabbitmq


def timed(action: object) -> float:
    start = time.monotonic()
    action()  # type: ignore[operator]
    return time.monotonic() - start


def sst_count(site: Site, node: str) -> int:
    host = site.host(node)
    assert isinstance(host, Controller) and host.galera and host.galera.pidfile
    log = Path(host.galera.pidfile).parent / "mysqld.log"
    # MariaDB runs its rsync script for an IST too; the closing line names the kind
    text = log.read_text(errors="replace") if log.exists() else ""
    return text.count("rsync SST completed on joiner")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lab = Lab()
    if not lab.is_running():
        raise SystemExit("no running lab: chaos lab up")
    site = inventory.load(lab.inventory_file)
    allowed = {"galera": 3, "rabbitmq": 3, "controllers": 3}
    full, ist, wiped = [], [], []
    for run in range(1, args.runs + 1):
        expect.galera_healthy(site)
        with Faults(site, allowed=allowed) as faults:
            for node in ("ctl1", "ctl2", "ctl3"):
                faults.add("kill", node, "galera")
            full.append(timed(lambda: galera.recover(site)))
        expect.galera_healthy(site)
        before = sst_count(site, "ctl2")
        with Faults(site, allowed=allowed) as faults:
            faults.add("kill", "ctl2", "galera")
            expect.galera_quorum(site, ["ctl1", "ctl3"])
            ist.append(timed(lambda: galera.recover(site)))
        if sst_count(site, "ctl2") != before:
            raise SystemExit("ctl2 rejoined by SST where IST was possible")
        expect.rabbit_healthy(site)
        with Faults(site, allowed=allowed) as faults:
            faults.add("wipe", "ctl3", "rabbitmq")
            expect.rabbit_running(site, ["ctl1", "ctl2"])
            wiped.append(timed(lambda: rabbitmq.recover(site)))
        expect.rabbit_healthy(site)
        print(f"run {run}: galera full outage {full[-1]:5.1f} s   galera IST rejoin "
              f"{ist[-1]:4.1f} s   rabbitmq wiped node {wiped[-1]:5.1f} s", flush=True)
    print(f"galera full outage -> 3 Synced  median {statistics.median(full):5.1f} s (goal <= 8)")
    print(f"galera one node rejoin by IST   median {statistics.median(ist):5.1f} s (goal <= 5)")
    print(f"rabbitmq wiped node rejoined    median {statistics.median(wiped):5.1f} s (goal <= 14)")


if __name__ == "__main__":
    main()
