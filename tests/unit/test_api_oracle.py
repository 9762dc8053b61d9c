"""The API oracle's arithmetic: error windows from the requests' outcomes, and a verdict
that fails on too few answers or too long a window (its lab test breaks keystone)."""

from __future__ import annotations

from chaos.services.keystone import ApiVerdict, error_windows


def test_error_windows_run_from_a_first_failure_to_the_next_success() -> None:
    samples = [(0.0, True), (1.0, False), (2.0, False), (3.0, True), (4.0, False),
               (5.0, True)]
    assert error_windows(samples, end=6.0) == [2.0, 1.0]


def test_an_error_window_still_open_at_the_end_runs_to_the_end() -> None:
    assert error_windows([(0.0, True), (1.0, False), (2.0, False)], end=10.0) == [9.0]
    assert error_windows([(0.0, True), (1.0, True)], end=2.0) == []


def test_the_verdict_fails_on_a_long_window_or_a_low_success_rate() -> None:
    kept = ApiVerdict(30, 29, 1.0, "HTTP 500", min_success=0.9, max_window=30)
    assert kept.ok and kept.success_rate > 0.96
    assert "29/30 reads answered" in kept.summary()
    long_window = ApiVerdict(100, 95, 31.0, "HTTP 503", min_success=0.9, max_window=30)
    assert not long_window.ok
    too_few = ApiVerdict(10, 8, 2.0, "URLError", min_success=0.9, max_window=30)
    assert not too_few.ok
    assert not ApiVerdict(0, 0, 0.0, "").ok  # nothing asked proves nothing
