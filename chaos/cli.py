"""The ``chaos`` command.

Exit codes: 0 ok, 1 a verdict failed, 2 bad usage or bad input, 3 the site (or the
machine under the lab) could not be reached or is not fit.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from chaos.errors import (
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    EXIT_VERDICT,
    ConfigError,
    EnvironmentProblem,
    HarnessError,
)

if TYPE_CHECKING:
    from chaos.inventory import Site

LAB_MISSING = "the local lab is not installed: pip install 'openstack-chaos[lab]'"


class _Parser(argparse.ArgumentParser):
    """argparse, but bad usage is one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)


def _lab(args: argparse.Namespace) -> int:
    """``chaos lab …`` is the lab's own command: the harness reaches it only here, by
    name, when a lab subcommand runs (the lab uses the harness, never the reverse)."""
    import importlib

    try:
        lab_cli = importlib.import_module("chaoslab.cli")
    except ModuleNotFoundError as exc:
        if exc.name not in ("chaoslab", "chaoslab.cli"):
            raise  # the lab is there but broken: its own traceback says more
        print(f"chaos: {LAB_MISSING}", file=sys.stderr)
        return EXIT_USAGE
    code: int = lab_cli.run(args)
    return code


def _inventory(args: argparse.Namespace) -> int:
    from chaos import inventory

    if args.inv_action == "discover":
        return _discover(args)
    site = inventory.load(args.file)
    print(f"{args.file}: ok: site {site.name} ({site.kind}), "
          f"{len(site.controllers)} controllers, {len(site.computes)} computes")
    return EXIT_OK


def _discover(args: argparse.Namespace) -> int:
    """Only gets and lists: what was found (and why not) on stderr, the inventory on
    stdout or in --output."""
    from chaos import discover

    found = discover.discover(Path(args.kubeconfig), namespace=args.namespace,
                              context=args.context, access=args.access, name=args.name,
                              db_user=args.db_user, rabbitmq_user=args.rabbitmq_user)
    for line in found.lines():
        print(line, file=sys.stderr)
    if found.inventory is None:
        print("chaos inventory discover: nothing to write (no Galera or RabbitMQ member "
              "found)", file=sys.stderr)
        return EXIT_VERDICT
    scope = f"namespace {args.namespace}" if args.namespace else "every namespace"
    text = discover.render(found, f"{Path(args.kubeconfig).resolve()}"
                           + (f" (context {args.context})" if args.context else "")
                           + f", {scope}")
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            raise ConfigError(f"{args.output}: cannot write: {exc.strerror}") from None
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _site(args: argparse.Namespace) -> tuple[Site, str]:
    from chaos import inventory
    from chaos.plugin import resolve_inventory

    path = resolve_inventory(args.inventory, use_lab=False)
    return inventory.load(path), str(path.resolve())


def _fault(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from chaos.faults import Faults, allow_everything, plan
    from chaos.inventory import Compute

    site, path = _site(args)
    fault = plan(site, args.kind, args.node, args.service)
    print(fault.describe())
    if args.dry_run:
        print("dry run: nothing was done")
        return EXIT_OK
    allowed = allow_everything() if args.allow_quorum_loss else {}
    context = {}
    host = site.host(args.node)
    if isinstance(host, Compute) and host.libvirt is not None:
        # what 'chaos recover libvirt' will hold the VMs to: same qemu pid and start time
        from chaos import expect

        context["vms_before"] = {u: asdict(d) for u, d in
                                 expect.vm_snapshot(site, [host.name]).items()}
    Faults(site, inventory_path=path, allowed=allowed).inject(fault, context=context)
    print(f"fault {fault.id} injected and left in place; undo with 'chaos heal'")
    return EXIT_OK


def _heal(args: argparse.Namespace) -> int:
    from chaos import inventory
    from chaos.faults import heal

    default: list[Site] = []

    def site_for(path: str | None) -> Site:
        if path and Path(path).is_file():
            return inventory.load(path)
        if not default:
            default.append(_site(args)[0])
        return default[0]

    healed, errors = heal(site_for)
    for fault_id in healed:
        print(f"reverted {fault_id}")
    for line in errors:
        print(f"could not revert {line}", file=sys.stderr)
    if not healed and not errors:
        print("nothing to heal: the ledger has no open fault")
    return EXIT_VERDICT if errors else EXIT_OK


def _watch_platform(site: Site, service: str, *, dry_run: bool) -> int:
    """A platform's cluster: the harness watches it recover and acts only when asked."""
    import importlib

    # by name, as every procedure: the CLI sits under the layers it dispatches to
    platform = importlib.import_module("recovery.platform")

    cluster = site.cluster(service)
    print(f"{service}: recovered by {cluster.platform} on this site; the harness watches "
          f"(up to {cluster.deadline_seconds:.0f}s) and acts only with --take-over")
    if dry_run:
        print("dry run: nothing was watched or changed")
        return EXIT_OK
    watched = platform.watch(site, service)
    print(watched.describe())
    if not watched.recovered:
        print(f"to act anyway: chaos recover {service} --take-over", file=sys.stderr)
        return EXIT_VERDICT
    return EXIT_OK


def _recover(args: argparse.Namespace) -> int:
    import importlib

    if args.discard and args.procedure != "galera":
        raise ConfigError("--discard applies to 'chaos recover galera' only")
    site, _ = _site(args)
    module = importlib.import_module(f"recovery.{args.procedure}")
    extra: dict[str, Any] = {"discard": args.discard} if args.discard else {}
    owner = (site.cluster(args.procedure).recovered_by
             if args.procedure in ("galera", "rabbitmq") else "harness")
    if args.take_over:
        if args.procedure != "galera":
            raise ConfigError("--take-over applies to galera (a platform's RabbitMQ is not "
                              "taken over by this harness)")
        if owner != "platform":
            raise ConfigError("--take-over: the harness recovers galera on this site already "
                              "(no platform to take it over from)")
        extra["take_over"] = True
    elif owner == "platform":
        return _watch_platform(site, args.procedure, dry_run=args.dry_run)
    started = time.monotonic()

    def show(step: object) -> None:
        print(f"{time.strftime('%H:%M:%S')} {getattr(step, 'effect', step)}", flush=True)

    # a plan that only settles members alive but silent (given time to answer, then
    # killed) is followed by a fresh observation and plan: bounded rounds
    for _ in range(3):
        # a dry run reads only: no procedure may write while observing for it
        observation = module.observe(site, read_only=args.dry_run)
        the_plan = module.plan(site, observation, force_node=args.node, **extra)
        print(the_plan.render(), flush=True)
        if the_plan.refused:
            return EXIT_VERDICT
        if args.dry_run:
            print("dry run: nothing was changed"
                  + ("; once the silent members are settled, the real run observes again "
                     "and plans the rest" if the_plan.replan else ""))
            return EXIT_OK
        if not the_plan.steps:
            if time.monotonic() - started > 1:
                print(f"recovered in {time.monotonic() - started:.1f}s")
            return EXIT_OK if args.procedure != "libvirt" else _vm_verdict(site)
        module.execute(site, the_plan, confirm=show)
        if not the_plan.replan:
            break
        print("silent members settled: observing again", flush=True)
    else:
        print("chaos recover: members still silent after 3 rounds", file=sys.stderr)
        return EXIT_VERDICT
    print(f"recovered in {time.monotonic() - started:.1f}s")
    if args.procedure == "libvirt":
        return _vm_verdict(site)
    return EXIT_OK


def _vm_verdict(site: Site) -> int:
    """Hold every VM recorded before an open fault to its qemu pid and start time."""
    from chaos import expect
    from chaos.ledger import Ledger
    from chaos.probes import DomainIdentity

    before: dict[str, DomainIdentity] = {}
    for entry in Ledger().open_faults():
        for uuid, dom in entry.get("vms_before", {}).items():
            before.setdefault(uuid, DomainIdentity(**dom))
    if not before:
        print("no VM record from before a fault (record one by injecting with 'chaos fault'): "
              "VM identity not verified")
        return EXIT_OK
    hosts = sorted({c.name for c in site.computes if c.libvirt})
    verdict = expect.vm_verdict(before, expect.vm_snapshot(site, hosts))
    print(verdict.summary())
    return EXIT_OK if verdict.all_survived else EXIT_VERDICT


def _scenarios() -> Path:
    """Where the scenario suite is: the installed ``scenarios`` package (the checkout's
    own in a development install), found without importing it."""
    from importlib.util import find_spec

    spec = find_spec("scenarios")
    if spec is None or not spec.submodule_search_locations:
        raise EnvironmentProblem("the scenario suite (package 'scenarios') is not installed "
                                 "beside the harness; reinstall openstack-chaos")
    return Path(next(iter(spec.submodule_search_locations)))


def _run(args: argparse.Namespace, pytest_args: list[str]) -> int:
    import pytest

    from chaos.plugin import resolve_inventory

    inventory = resolve_inventory(args.inventory, use_lab=args.lab)
    scenarios = _scenarios()
    report_dir = Path(args.report_dir or Path("reports") / time.strftime("%Y%m%d-%H%M%S"))
    report_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(scenarios),
        f"--inventory={inventory}",
        f"--junitxml={report_dir / 'junit.xml'}",
        f"--chaos-report-dir={report_dir}",
        "-o", "junit_family=xunit2",
        *(["--dry-run"] if args.dry_run else []),
        *pytest_args,
    ]
    code = int(pytest.main(argv))
    verdicts = ({0: "every scenario planned, nothing acted on (dry run)",
                 1: "a scenario could NOT be planned (dry run)"} if args.dry_run else
                {0: "all scenarios passed", 1: "a scenario FAILED"})
    verdict = verdicts.get(code, "run did not complete")
    from chaos import report

    html = report.build(report_dir, title=f"{inventory} {time.strftime('%Y-%m-%d %H:%M')}")
    tally = ", ".join(f"{n} {outcome}" for outcome, n in report.tally(report_dir).items() if n)
    # the verdict on a short line of its own; each path whole on the next ones (never
    # cut to the terminal's width: it is there to be copied)
    print(f"chaos run: {verdict}" + (f" ({tally})" if tally else ""))
    print(f"  report: {html.resolve()}")
    journal = report_dir / "journal.jsonl"
    if journal.exists():
        print(f"  journal: {journal.resolve()}")
    if code in (0, 1, 3):
        return code
    return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chaos", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    lab = sub.add_parser("lab", help="the local lab: a real control plane on this machine")
    lab.add_argument("action", choices=["up", "down", "status", "env"])
    lab.add_argument("--kube", action="store_true",
                     help="with up: the Kubernetes tier too (built from Debian's source once)")
    lab.add_argument("--platform", choices=["seed", "openstack-helm"],
                     help="with up --kube: the topology the tier runs: the seed's (a "
                          "Deployment per node, host networking; the default) or "
                          "openstack-helm's (StatefulSets on a pod network, recovery the "
                          "platform owns)")
    lab.add_argument("--openstack", action="store_true",
                     help="with up: OpenStack's services on the lab's (so far keystone, "
                          "from OpenStack's releases on PyPI, in a venv of its own)")
    lab.add_argument("--computes", type=int, metavar="N",
                     help="with up: N compute hosts in all; those past the first three are "
                          "light (own address, sshd and libvirtd; paused qemu VMs)")
    lab.add_argument("--vms", type=int, metavar="K",
                     help="with up --computes: VMs on each light compute (default 1)")
    lab.add_argument("--lab-dir",
                     help="lab directory (default $CHAOS_LAB_DIR or /var/lib/chaos-lab)")

    inv = sub.add_parser("inventory", help="site inventories")
    inv_sub = inv.add_subparsers(dest="inv_action", required=True, parser_class=_Parser)
    check = inv_sub.add_parser("check", help="validate an inventory file")
    check.add_argument("file")
    disc = inv_sub.add_parser(
        "discover", help="write an inventory from what a Kubernetes cluster runs (only "
        "gets and lists; never reads a Secret)")
    disc.add_argument("--kubeconfig", required=True, metavar="FILE")
    disc.add_argument("--namespace", metavar="NS", help="look in NS only (default: every "
                      "namespace the kubeconfig's user may list)")
    disc.add_argument("--context", metavar="C", help="the kubeconfig's context to use")
    disc.add_argument("--output", metavar="FILE", help="write the inventory there "
                      "(default: stdout)")
    disc.add_argument("--access", choices=["local"],
                      help="local: every node is this machine (the lab): hosts access: "
                           "local, firewall: local")
    disc.add_argument("--name", default="discovered", help="the site's name")
    disc.add_argument("--db-user", metavar="USER",
                      help="the database user (default: as the pod spec shows, else root)")
    disc.add_argument("--rabbitmq-user", metavar="USER",
                      help="the RabbitMQ user (default: guest; the clusters keep it in a "
                           "Secret, which discover does not read)")

    run = sub.add_parser("run",
                         help="run the scenario suite against a site (extra args go to pytest)")
    run.add_argument("--inventory", help="site inventory (default: the running lab's)")
    run.add_argument("--lab", action="store_true", help="run against the running local lab")
    run.add_argument("--report-dir", help="where the report goes (default reports/<time>)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the whole plan of each selected scenario, act on nothing")
    from chaos.faults import KINDS, kinds_help
    from chaos.services import SERVICES

    fault = sub.add_parser("fault", help="inject one fault and leave it in place (undo: heal)",
                           epilog=kinds_help(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    fault.add_argument("kind", help=", ".join(KINDS) + " (below)")
    fault.add_argument("--node", required=True, help="host name from the inventory")
    fault.add_argument("--service", help=", ".join(SERVICES))
    fault.add_argument("--inventory", help="site inventory (default: the running lab's)")
    fault.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    fault.add_argument("--allow-quorum-loss", action="store_true",
                       help="allow taking a majority of a cluster (or every controller) down")

    recover = sub.add_parser("recover", help="run a recovery procedure")
    recover.add_argument("procedure", choices=["galera", "rabbitmq", "libvirt"])
    recover.add_argument("--node", help="the node to bootstrap (galera) or boot first "
                         "(rabbitmq), or the only host to act on (libvirt); used as named or "
                         "refused with the reason, never replaced by another")
    recover.add_argument("--discard", action="append", default=[], metavar="NODE",
                         help="galera: let NODE's own data be replaced by a full state "
                         "transfer (its history differs or its position is unknown); "
                         "may be repeated")
    recover.add_argument("--take-over", action="store_true",
                         help="galera on a site whose platform recovers it "
                              "(clusters.galera.recovered_by: platform): act instead of "
                              "watching, choosing the most advanced node as the harness's "
                              "own procedure does")
    recover.add_argument("--dry-run", action="store_true",
                         help="print the plan (positions, choice, steps) and change nothing")
    recover.add_argument("--inventory", help="site inventory (default: the running lab's)")

    heal = sub.add_parser("heal", help="revert every fault left open in the ledger")
    heal.add_argument("--inventory", help="site inventory (default: the running lab's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "lab":
            return _lab(args)
        if args.command == "inventory":
            return _inventory(args)
        if args.command == "run":
            return _run(args, extra)
        if args.command == "fault":
            return _fault(args)
        if args.command == "heal":
            return _heal(args)
        if args.command == "recover":
            return _recover(args)
    except ConfigError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return exc.exit_code
    except HarnessError as exc:
        print(f"chaos {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the machine refused: permissions, disk, a vanished file
        print(f"chaos {args.command}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        print("chaos: interrupted", file=sys.stderr)
        return 130
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
