"""``chaos lab up|down|status|env``: the lab's part of the ``chaos`` command. The
harness's CLI parses the arguments and hands them here by module name, so the harness
never imports the lab."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chaos.errors import EXIT_OK, EXIT_VERDICT, ConfigError
from chaoslab.fleet import FleetSize
from chaoslab.lab import Lab
from chaoslab.nova import FLAVOR, IMAGE


def run(args: argparse.Namespace) -> int:
    """One lab action (``args.action``, ``args.kube``, ``args.lab_dir``); a LabError
    goes up to the CLI, which prints it and exits with its code."""
    lab = Lab(Path(args.lab_dir) if args.lab_dir else None)
    if args.action == "up":
        fleet = None
        if args.computes is not None or args.vms is not None:
            fleet = FleetSize(args.computes if args.computes is not None else 3,
                              args.vms if args.vms is not None else 1)
        platform = getattr(args, "platform", None)
        if platform is not None and not args.kube:
            raise ConfigError("--platform goes with --kube (the Kubernetes tier's topology)")
        result = lab.up(kube=args.kube, fleet=fleet, openstack=args.openstack,
                        platform=platform or "seed")
        if result.already_up:
            # up on a lab that runs: nothing is started, but what is unhealthy is said,
            # with what brings it back
            bad = [c for c in lab.status() if not c.ok]
            if bad:
                print(f"lab up at {lab.root}, but NOT healthy:", file=sys.stderr)
                for check in bad:
                    print(f"  {check.component}: {check.detail}", file=sys.stderr)
                for line in remedies([c.component for c in bad], open_faults(lab)):
                    print(f"  -> {line}", file=sys.stderr)
                return EXIT_VERDICT
            print(f"lab already up at {lab.root} (nothing to do)")
        else:
            print(f"lab up in {result.seconds:.1f}s at {lab.root}")
        print(f"inventory: {result.inventory}")
        size = lab.fleet_size()
        if size is not None:
            print(f"computes: {size.computes} (cmp4..cmp{size.computes}: light hosts, "
                  f"{size.vms} paused VM(s) each)")
        if lab.openstack_enabled():
            nova = lab.nova()
            print(f"openstack: keystone at {lab.keystone().auth_url}; glance, placement, "
                  f"nova and neutron on {nova.address}, nova-compute for "
                  f"{nova.compute_host}; image {IMAGE!r}, flavor {FLAVOR!r} "
                  "(eval \"$(chaos lab env)\" for the openstack client)")
        if lab.kube_enabled():
            print(f"kubernetes tier ({lab.kube().platform}): inventory {lab.kube_inventory_file}, "
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


def open_faults(lab: Lab) -> int:
    """Faults still open (in the ledger) on this lab's sites."""
    from chaos.ledger import Ledger

    ours = {str(p.resolve()) for p in (lab.inventory_file, lab.kube_inventory_file)}
    return sum(1 for entry in Ledger().open_faults() if entry.get("inventory") in ours)


def remedies(components: list[str], faults: int) -> list[str]:
    """What brings each unhealthy component back, in the order to type it."""
    lines = []
    if faults:
        lines.append(f"chaos heal   ({faults} fault(s) still open on this lab: revert them "
                     "first)")
    services = {c.split("/", 1)[0]: c for c in components}
    for service in ("galera", "rabbitmq", "libvirt"):
        if service in services:
            lines.append(f"chaos recover {service}")
    others = [c for c in components if c.split("/", 1)[0] not in
              ("galera", "rabbitmq", "libvirt")
              # dead processes of a service that has a recovery are that service's
              and not (c == "processes" and lines)]
    if others or not lines:
        lines.append(f"chaos lab down && chaos lab up   ({', '.join(others) or 'the lab'}: "
                     "no recovery procedure brings it back)")
    elif lines:
        lines.append("or, starting afresh: chaos lab down && chaos lab up")
    return lines
