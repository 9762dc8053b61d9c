"""``chaos lab up|down|status|env``: the lab's part of the ``chaos`` command. The
harness's CLI parses the arguments and hands them here by module name, so the harness
never imports the lab."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chaos.errors import EXIT_OK, EXIT_VERDICT
from chaoslab.fleet import FleetSize
from chaoslab.lab import Lab


def run(args: argparse.Namespace) -> int:
    """One lab action (``args.action``, ``args.kube``, ``args.lab_dir``); a LabError
    goes up to the CLI, which prints it and exits with its code."""
    lab = Lab(Path(args.lab_dir) if args.lab_dir else None)
    if args.action == "up":
        fleet = None
        if args.computes is not None or args.vms is not None:
            fleet = FleetSize(args.computes if args.computes is not None else 3,
                              args.vms if args.vms is not None else 1)
        result = lab.up(kube=args.kube, fleet=fleet)
        if result.already_up:
            print(f"lab already up at {lab.root} (nothing to do)")
        else:
            print(f"lab up in {result.seconds:.1f}s at {lab.root}")
        print(f"inventory: {result.inventory}")
        size = lab.fleet_size()
        if size is not None:
            print(f"computes: {size.computes} (cmp4..cmp{size.computes}: light hosts, "
                  f"{size.vms} paused VM(s) each)")
        if lab.kube_enabled():
            print(f"kubernetes tier: inventory {lab.kube_inventory_file}, "
                  f"kubeconfig {lab.kube().kubeconfig}")
        return EXIT_OK
    if args.action == "down":
        seconds = lab.down()
        print(f"lab down in {seconds:.1f}s; nothing of it left running")
        return EXIT_OK
    if args.action == "status":
        checks = lab.status()
        width = max(len(c.component) for c in checks)
        for check in checks:
            print(f"{'ok  ' if check.ok else 'FAIL'} {check.component:<{width}}  {check.detail}")
        healthy = all(c.ok for c in checks)
        print("lab healthy" if healthy else "lab NOT healthy")
        return EXIT_OK if healthy else EXIT_VERDICT
    if args.action == "env":
        sys.stdout.write(lab.env())
        return EXIT_OK
    raise AssertionError(args.action)
