"""``local://``: this machine."""

from __future__ import annotations

import subprocess

from chaos.targets.base import CommandResult, Target, TargetUnreachable


class LocalTarget(Target):
    scheme = "local"

    def _run(self, command: str, timeout: float) -> CommandResult:
        try:
            proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TargetUnreachable(
                f"{self.url}: `{command}` did not finish within {timeout:.0f}s") from None
        return CommandResult(self.url, command, proc.returncode, proc.stdout, proc.stderr)
