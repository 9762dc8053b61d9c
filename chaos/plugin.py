"""The pytest plugin: one module, registered through the ``pytest11`` entry point.

Options (each also an ini key and an environment variable; the command line wins, then
the environment, then the ini file):
  --inventory FILE   site inventory       (ini ``chaos_inventory``, env ``CHAOS_INVENTORY``)
  --lab              use the running local lab's inventory

With ``--dry-run`` each scenario runs as a rehearsal (:mod:`chaos.dryrun`): its code runs,
every building block adds its part of the plan instead of acting, the plans are printed
in the terminal summary, and each scenario that planned cleanly is reported skipped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from chaos import dryrun, terminal
from chaos import inventory as inv
from chaos.errors import (
    EXIT_UNREACHABLE,
    ConfigError,
    EnvironmentProblem,
    HarnessError,
    ProbeTimeout,
)
from chaos.faults import Faults, cluster_sizes, heal, sigterm_raises
from chaos.inventory import Site
from chaos.journal import Event, Journal
from chaos.ledger import Ledger
from chaos.services import SERVICES
from chaos.steps import Step
from chaos.wait import wait_for
from chaos.workload import Workload

INVENTORY_KEY = pytest.StashKey[Path | None]()
SITE_KEY = pytest.StashKey[tuple[Site, Path] | HarnessError]()
REPORT_KEY = pytest.StashKey[Path | None]()
OPEN_FAULTS_KEY = pytest.StashKey[list[Faults]]()
# how long the first fault may wait for the monitor's first sample: its probes are
# bounded (1.5 s each), but the computes' are taken one after another
FIRST_SAMPLE_SECONDS = 30.0


@dataclass
class Rehearsed:
    """One scenario of a dry run: its plan, and what kept it from planning cleanly."""

    nodeid: str
    plan: dryrun.Rehearsal = field(default_factory=dryrun.Rehearsal)
    problems: list[str] = field(default_factory=list)


REHEARSED_KEY = pytest.StashKey[Rehearsed]()
PLANS_KEY = pytest.StashKey[list[Rehearsed]]()


def resolve_inventory(explicit: str | None, *, use_lab: bool) -> Path:
    """The inventory to use: an explicit file, else $CHAOS_INVENTORY, else the lab's."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"--inventory: {path}: no such file")
        return path
    env = os.environ.get("CHAOS_INVENTORY")
    if env and not use_lab:
        return resolve_inventory(env, use_lab=False)
    lab = inv.lab_inventory_path()
    # a lab with faults in it is still the site to act on: only its absence matters
    if not lab.is_file():
        raise EnvironmentProblem(
            f"no inventory given and no running lab at {lab.parent}; "
            "pass --inventory FILE or run 'chaos lab up'"
        )
    return lab


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "chaos harness")
    group.addoption("--inventory", action="store", default=None,
                    help="site inventory YAML (env CHAOS_INVENTORY; ini chaos_inventory)")
    group.addoption("--lab", action="store_true", default=False,
                    help="run against the running local lab")
    group.addoption("--dry-run", action="store_true", default=False,
                    help="print the whole plan of each selected scenario (faults, waits, "
                    "recovery, checks, oracle) and act on nothing")
    group.addoption("--runbook", action="store_true", default=False,
                    help="pause before every destructive step, show it, wait for Enter")
    group.addoption("--yes", action="store_true", default=False,
                    help="with --runbook: show and journal each step without asking")
    group.addoption("--chaos-report-dir", action="store", default=None,
                    help="write the run's JSON journal here (chaos run sets it)")
    parser.addini("chaos_inventory", "default site inventory file", default="")


def pytest_configure(config: pytest.Config) -> None:
    # openstacksdk warns of its own coming API changes at every call: hundreds of
    # lines a run that no operator can act on
    config.addinivalue_line("filterwarnings", "ignore::PendingDeprecationWarning:openstack")
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:openstack")
    config.addinivalue_line(
        "markers", "destructive: the scenario injects faults into the site")
    clusters = "".join(f"{s.name}=0, " for s in SERVICES.clusters())
    config.addinivalue_line(
        "markers", f"blast_radius({clusters}controllers=0): the most members "
        "of each cluster the scenario may take down at once")
    config.addinivalue_line(
        "markers", "requires(*services): skip on a site without every one of these "
        f"services ({', '.join(SERVICES)}, or openstack: the site names its cloud)")
    config.addinivalue_line(
        "markers", "platform_recovers(*services): a drill of a platform's own recovery; "
        "skip where the harness recovers these clusters")
    config.addinivalue_line(
        "markers", "harness_recovers(*services): a drill of the harness's own procedure; "
        "skip where a platform recovers these clusters")
    explicit = config.getoption("--inventory") or config.getini("chaos_inventory") or None
    config.stash[INVENTORY_KEY] = Path(explicit) if explicit else None
    report = config.getoption("--chaos-report-dir")
    config.stash[REPORT_KEY] = Path(report) if report else None
    config.stash[OPEN_FAULTS_KEY] = []
    config.stash[PLANS_KEY] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A drill for a service the site does not run does not apply there: skipped, and
    the reason says so (a Kubernetes site of Galera alone runs the Galera drills). So
    does a drill of the harness's own procedure where a platform recovers the cluster,
    and a drill of a platform's recovery where the harness does."""
    marks = [m for name in ("requires", "platform_recovers", "harness_recovers")
             for m in item.iter_markers(name)]
    if not marks:
        return
    loaded = _load_site(item.config)
    if isinstance(loaded, HarnessError):
        return  # the site fixture reports it, with its exit code
    site = loaded[0]
    # "openstack": the site names its cloud (an openstack: section), which no host runs
    present = site.services() | ({"openstack"} if site.openstack is not None else set())
    for marker in item.iter_markers("requires"):
        missing = [s for s in marker.args if s not in present]
        if missing:
            pytest.skip(f"does not apply: site {site.name} runs no {', '.join(missing)}")
    for mark, owner in (("platform_recovers", "harness"), ("harness_recovers", "platform")):
        for m in item.iter_markers(mark):
            theirs = [s for s in m.args if site.cluster(s).recovered_by == owner]
            if theirs:
                who = ("the harness" if owner == "harness"
                       else f"{site.cluster(theirs[0]).platform}")
                pytest.skip(f"does not apply: {who} recovers {', '.join(theirs)} on site "
                            f"{site.name}; this drill proves "
                            + ("a platform's own recovery" if owner == "harness"
                               else "the harness's own procedure"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item,
                            nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """In a dry run, every scenario — setup, call, teardown — runs as a rehearsal."""
    if not item.config.getoption("--dry-run"):
        return (yield)
    rehearsed = item.stash[REHEARSED_KEY] = Rehearsed(item.nodeid)
    item.config.stash[PLANS_KEY].append(rehearsed)
    with dryrun.rehearsing(rehearsed.plan):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """The end of a rehearsed scenario plans what its end would revert (a scenario that
    cannot be planned, e.g. past its blast radius, fails here as it would for real)."""
    yield
    if REHEARSED_KEY in item.stash:
        for faults in item.config.stash[OPEN_FAULTS_KEY]:
            faults.revert_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                        pytest.TestReport]:
    """A rehearsed scenario that planned cleanly is reported skipped, at its own line."""
    report = yield
    rehearsed = item.stash.get(REHEARSED_KEY, None)
    if rehearsed is None:
        return report
    if report.failed:
        rehearsed.problems.append(f"could not be planned ({report.when})")
    elif report.when == "call" and report.passed:
        path, line = item.reportinfo()[:2]
        report.outcome = "skipped"
        report.longrepr = (os.fspath(path), (line or 0) + 1,
                           f"Skipped: dry run: {len(rehearsed.plan)} steps planned, "
                           "nothing acted on")
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    plans = terminalreporter.config.stash.get(PLANS_KEY, [])
    if not plans:
        return
    terminalreporter.write_sep("=", "dry run: the plan of each scenario, nothing acted on")
    for one in plans:
        terminalreporter.write_line("")
        terminalreporter.write_line(one.nodeid + (f"  [{'; '.join(one.problems)}]" if one.problems
                                                  else f"  [{len(one.plan)} steps]"), bold=True)
        terminalreporter.write_line(one.plan.render())


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The last guard: whatever ended the run (Ctrl-C included), revert what is open."""
    for faults in session.config.stash.get(OPEN_FAULTS_KEY, []):
        with contextlib.suppress(HarnessError):
            faults.revert_all()


@pytest.fixture(scope="session")
def site(pytestconfig: pytest.Config) -> Site:
    """The validated site inventory; the session stops with exit 3 when there is none."""
    loaded = _load_site(pytestconfig)
    if isinstance(loaded, ConfigError):
        pytest.exit(str(loaded), returncode=2)
    if isinstance(loaded, HarnessError):
        pytest.exit(str(loaded), returncode=EXIT_UNREACHABLE)
    return loaded[0]


def _load_site(config: pytest.Config) -> tuple[Site, Path] | HarnessError:
    """Resolve and validate the inventory once per session (collection and fixtures
    share it); a failure is kept and reported where it matters."""
    if SITE_KEY not in config.stash:
        explicit = config.stash[INVENTORY_KEY]
        try:
            path = resolve_inventory(str(explicit) if explicit else None,
                                     use_lab=bool(config.getoption("--lab")))
            config.stash[SITE_KEY] = (inv.load(path), path.resolve())
        except HarnessError as exc:
            config.stash[SITE_KEY] = exc
    return config.stash[SITE_KEY]


@pytest.fixture(scope="session")
def site_path(site: Site, pytestconfig: pytest.Config) -> str:
    loaded = _load_site(pytestconfig)
    assert not isinstance(loaded, HarnessError)  # the site fixture stopped the session
    return str(loaded[1])


@pytest.fixture(scope="session", autouse=False)
def healed_ledger(site: Site) -> None:
    """Faults a killed earlier run left open are reverted before anything else runs."""
    rehearsal = dryrun.active()
    if rehearsal is not None:
        left = [str(e.get("id")) for e in Ledger().open_faults()]
        if left:
            rehearsal.step("heal: revert the faults an earlier run left open in the ledger "
                           f"({', '.join(left)})")
        return
    _healed, errors = heal(lambda path: inv.load(path) if path else site, Ledger())
    if errors:
        pytest.exit("open faults from an earlier run could not be reverted: "
                    + "; ".join(errors), returncode=EXIT_UNREACHABLE)


@pytest.fixture
def journal(request: pytest.FixtureRequest) -> Iterator[Journal]:
    """This scenario's events; appended to the run's journal.jsonl when reporting."""
    report: Path | None = request.config.stash[REPORT_KEY]
    path = report / "journal.jsonl" if report else None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    journal = Journal(path, scenario=request.node.nodeid)
    journal.event(Event.SCENARIO_START)
    rehearsal = dryrun.active()
    if rehearsal is not None:
        rehearsal.journal = journal  # the plan goes into the journal, step by step
    if report is None or rehearsal is not None:
        yield journal
    else:
        # lanes for the report's timeline: every member's state, sampled each second
        from chaos.monitor import Monitor

        site: Site = request.getfixturevalue("site")
        with Monitor(site, journal):
            yield journal
    journal.event(Event.SCENARIO_END)
    for key, value in journal.properties().items():
        request.node.user_properties.append((key, value))


@pytest.fixture
def faults(request: pytest.FixtureRequest, site: Site, site_path: str, journal: Journal,
           healed_ledger: None) -> Iterator[Faults]:
    """Inject faults through this; every one still open is reverted when the scenario
    ends — passed, failed, raised, interrupted or terminated."""
    marker = request.node.get_closest_marker("blast_radius")
    allowed = {k: int(v) for k, v in (marker.kwargs if marker else {}).items()}
    registry = request.config.stash[OPEN_FAULTS_KEY]
    runbook = None
    if request.config.getoption("--runbook") and dryrun.active() is None:
        runbook = Runbook(journal, ask=not request.config.getoption("--yes"))
        journal.confirm = runbook

    monitored = request.config.stash[REPORT_KEY] is not None and dryrun.active() is None
    with sigterm_raises(), Faults(site, inventory_path=site_path, allowed=allowed,
                                  journal=journal, confirm=runbook,
                                  before_inject=(partial(steady_state_sampled, journal)
                                                 if monitored else None)) as active:
        registry.append(active)
        try:
            yield active
        finally:
            registry.remove(active)


def steady_state_sampled(journal: Journal, *, timeout: float = FIRST_SAMPLE_SECONDS) -> None:
    """Hold a fault until the monitor's first sample is in the journal, so the report
    shows the steady state the fault broke. The monitor starts with the scenario, but a
    sample is journaled only once every probe of it answered (the domains of every
    compute, over ssh, one host after another): a drill that injects at once used to
    act first, and its lanes began at the fault."""
    if journal.first(Event.SAMPLE) is not None:
        return
    # an observer never ends a drill: without a sample after the bound, it goes on and
    # the report shows those lanes as not observed before the fault
    with contextlib.suppress(ProbeTimeout):
        wait_for(lambda: (journal.first(Event.SAMPLE) is not None, "no sample yet"),
                 what="the monitor's first sample (the steady state, for the report)",
                 timeout=timeout, interval=0.1)


class Runbook:
    """Shows each destructive step before it runs — action, target, expected effect —
    and waits for Enter on the terminal (not pytest's captured stdin). Each answer is
    timestamped into the journal."""

    def __init__(self, journal: Journal, *, ask: bool) -> None:
        self.journal = journal
        self.ask = ask
        self.count = 0

    def __call__(self, step: Step) -> None:
        self.count += 1
        try:
            tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
        except OSError:
            if self.ask:
                raise ConfigError("--runbook needs a terminal to ask on (or add --yes)") from None
            tty = None
        if tty is not None:
            try:
                # fitted to the operator's terminal: long commands wrap under themselves
                text = "\n" + terminal.card(
                    f"runbook step {self.count}",
                    [("target", step.target), ("action", step.command),
                     ("expect", step.effect)],
                    terminal.columns(tty), colour="NO_COLOR" not in os.environ)
                os.write(tty, (text + ("  press Enter to run it, Ctrl-C to stop: " if self.ask
                                       else "  (--yes: running)\n")).encode())
                # an operator takes their time: no deadline on reading the answer, but
                # only one line is read, byte by byte, so nothing past it is swallowed
                while self.ask and os.read(tty, 1) not in (b"\n", b""):
                    pass
            finally:
                os.close(tty)
        self.journal.event(Event.RUNBOOK_STEP, n=self.count, target=step.target,
                           command=step.command, effect=step.effect,
                           confirmed="yes" if not self.ask else "enter")


@pytest.fixture
def workload(request: pytest.FixtureRequest, site: Site, journal: Journal) -> Workload:
    # Availability is promised only where quorum is: a scenario that declares it may
    # take a majority of a cluster (blast_radius) gets the API's figures reported, not
    # judged. Data is promised everywhere.
    marker = request.node.get_closest_marker("blast_radius")
    allowed = {k: int(v) for k, v in (marker.kwargs if marker else {}).items()}
    sizes = cluster_sizes(site)
    quorum_kept = not any(allowed.get(name, 0) > size // 2 for name, size in sizes.items()
                          if name != "controllers")
    return Workload(site, journal, availability=quorum_kept)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``controller`` and ``compute`` parameters range over the site's hosts, so one
    scenario runs on every node of whatever site it is pointed at."""
    # a test that defines its own fixture of that name keeps it
    defined = getattr(metafunc, "_arg2fixturedefs", {})
    wanted = [n for n in ("controller", "compute")
              if n in metafunc.fixturenames and n not in defined]
    if not wanted:
        return
    loaded = _load_site(metafunc.config)
    if isinstance(loaded, HarnessError):
        # no site: the session fixture will say so once, with the right exit code
        for name in wanted:
            metafunc.parametrize(name, ["(no site)"])
        return
    site = loaded[0]
    if "controller" in wanted:
        names = [c.name for c in site.controllers if SERVICES.on(c)]
        metafunc.parametrize("controller", names)
    if "compute" in wanted:
        names = [c.name for c in site.computes if SERVICES["libvirt"].runs_on(c)]
        metafunc.parametrize("compute", names)
