"""The HTML report as a person sees it: rendered by headless Chromium (Debian's), the
screenshot must show the timeline lanes, and a failing scenario must be visibly red."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np

from chaos import report
from tests.unit.test_report import JUNIT, events

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def screenshot(html: Path, png: Path, profile: Path) -> np.ndarray:
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--window-size=1200,1400",
         "--virtual-time-budget=3000", f"--screenshot={png}", html.as_uri()],
        capture_output=True, timeout=120, check=True)
    image: np.ndarray = matplotlib.image.imread(png)
    return image


def share_of(image: np.ndarray, rgb: tuple[int, int, int], tolerance: float = 0.03) -> float:
    target = np.array(rgb) / 255
    close = np.all(np.abs(image[..., :3] - target) < tolerance, axis=-1)
    return float(close.mean())


def reddish(image: np.ndarray) -> float:
    """Share of clearly red pixels, whatever translucent band lies over them."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return float(((r > 0.7) & (g < 0.35) & (b < 0.45)).mean())


def test_chromium_shows_the_timeline_and_the_failure(tmp_path: Path) -> None:
    (tmp_path / "junit.xml").write_text(JUNIT)
    lines = events("scenarios/test_galera.py::test_kill_one[ctl1]", 1000.0)
    lines += events("scenarios/test_galera.py::test_full_outage", 2000.0)
    (tmp_path / "journal.jsonl").write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    html = report.build(tmp_path)
    image = screenshot(html, tmp_path / "shot.png", tmp_path / "profile")
    # the FAILED badges: the verdict red
    assert share_of(image, (0xc6, 0x28, 0x28)) > 0.001
    # a passing-only report: no verdict red, but the timeline is there — healthy lanes
    # green, and the killed node's lane red while it was down
    (tmp_path / "junit.xml").write_text(JUNIT.replace(
        '<failure message="AssertionError: DATA LOST: galera: 10 acknowledged">trace</failure>',
        ""))
    image = screenshot(report.build(tmp_path), tmp_path / "shot2.png", tmp_path / "profile2")
    assert share_of(image, (0xc6, 0x28, 0x28)) < 0.0001
    assert share_of(image, (0x66, 0xbb, 0x6a), tolerance=0.06) > 0.01
    assert reddish(image) > 0.0005
