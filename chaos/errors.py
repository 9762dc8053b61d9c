"""One error tree; each error knows the CLI exit code it maps to.

Exit codes (a contract other tools rely on): 0 ok, 1 a verdict failed,
2 bad usage or bad input, 3 the site (or the machine under the lab) could not
be reached or is not fit to run.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_VERDICT = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""

    exit_code = EXIT_VERDICT


class ConfigError(HarnessError):
    """Bad input: an inventory, an option, an argument."""

    exit_code = EXIT_USAGE


class EnvironmentProblem(HarnessError):
    """The machine or site is not fit: missing package, port in use, unreachable."""

    exit_code = EXIT_UNREACHABLE


class ServiceError(EnvironmentProblem):
    """A service did not answer its client (in time), or answered with an error: libvirt
    at a site's URI, for one. Not a verdict: what the service was asked could not be
    learnt."""


class LabError(EnvironmentProblem):
    """The local lab could not be brought up, inspected or torn down."""


class FaultError(HarnessError):
    """A fault could not be injected or reverted."""


class RecoveryError(HarnessError):
    """A recovery procedure could not bring the service back, or refused as unsafe."""


class ProbeTimeout(HarnessError):
    """A wait ran out of time; the message says what was last observed."""


class DryRunViolation(HarnessError):
    """In a dry run, something tried to reach the site instead of showing its plan."""
