"""The fault ledger: every fault is written here, durably, *before* it acts, and
removed only after its revert succeeded. ``chaos heal`` replays what is left.

One file per open fault in the ledger directory, written to a temporary name, fsync'd,
renamed, and the directory fsync'd: a harness killed with -9 at any instant leaves
either no record (nothing was done yet) or a complete one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path("/var/lib/chaos/ledger")


def ledger_dir() -> Path:
    return Path(os.environ.get("CHAOS_LEDGER_DIR") or DEFAULT_DIR)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Ledger:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or ledger_dir()

    def record(self, fault_id: str, entry: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / f"{fault_id}.json"
        tmp = self.path / f".{fault_id}.tmp"
        with open(tmp, "w") as out:
            json.dump(entry, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.path)

    def clear(self, fault_id: str) -> None:
        (self.path / f"{fault_id}.json").unlink(missing_ok=True)
        if self.path.is_dir():
            _fsync_dir(self.path)

    def open_faults(self) -> Iterator[dict[str, Any]]:
        """Open faults, oldest first (revert in the reverse order)."""
        if not self.path.is_dir():
            return
        entries = []
        for file in self.path.glob("*.json"):
            try:
                entries.append(json.loads(file.read_text()))
            except (OSError, ValueError):
                continue  # a record is renamed into place whole; anything else is not ours
        yield from sorted(entries, key=lambda e: (e.get("created", 0), e.get("id", "")))
