"""Stability windows: the pure window arithmetic on synthetic records, and the engine
against the fake server (one that speeds up after a while is measured until it is stable;
one that never settles ends at max_duration_s marked unstable)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sweeper.load import LoadProfile, Target, run_load
from sweeper.load import windows as win
from sweeper.load.types import RECORD_DTYPE, LoadRun, Outcome, Stability

from fakeserver import FakeServer


def _records(rows):
    return np.array(rows, dtype=RECORD_DTYPE)


def test_requests_count_in_the_window_they_were_scheduled_in():
    # scheduled at 0.1 (ends at 1.5, after its window closed), 0.9, 1.2; one 503 at 1.4
    rec = _records([(0.1, 0.1, 1.5, 200, -1, 0), (0.9, 0.9, 0.95, 200, -1, 0),
                    (1.2, 1.2, 1.3, 200, -1, 0), (1.4, 1.4, 1.41, 503, -1, 0)])
    w0, w1 = win.cut(rec, 1.0, 2.0)
    assert (w0.requests, w0.ok, w0.rps) == (2, 2, 2.0)
    assert w0.p99_ms == pytest.approx(np.percentile([1400.0, 50.0], 99))
    assert (w1.requests, w1.ok, w1.rps) == (2, 1, 1.0)
    assert win.cut(rec, 1.0, 1.5) == [w0]  # only complete windows


@pytest.mark.parametrize(
    "rps, p99, n, max_cv, stable",
    [
        ([100, 100, 100], [10, 10, 10], 3, 0.05, True),
        ([50, 100, 101, 99], [30, 10, 10.2, 9.9], 3, 0.05, True),  # a slow start is left behind
        ([100, 100, 130], [10, 10, 10], 3, 0.05, False),
        ([100, 100, 100], [10, 10, 14], 3, 0.05, False),  # latency must settle too
        ([100, 100], [10, 10], 3, 0.05, False),  # not enough windows yet
        ([100, 100, 0], [10, 10, math.nan], 3, 0.5, False),  # a window that served nothing
    ],
)
def test_stability_rule(rps, p99, n, max_cv, stable):
    """The same table for either latency figure the rule may judge."""
    for latency in ("p99", "mean"):
        ws = [win.Window(i, 1, 1, r, p, p) for i, (r, p) in enumerate(zip(rps, p99))]
        assert win.is_stable(ws, Stability(1.0, n, max_cv, 10.0, latency)) is stable


def test_the_rule_judges_the_mean_by_default_and_the_p99_when_asked():
    """Windows whose p99s (a few slow requests each) disagree while their means agree:
    stable on the mean (the default), not on the p99."""
    ws = [win.Window(i, 300, 300, 150.0, p99, mean) for i, (p99, mean) in enumerate([(21.0, 9.0), (35.0, 9.4), (14.0, 8.8)])]
    assert win.is_stable(ws, Stability(2.0, 3, 0.10, 12.0)) is True
    assert win.is_stable(ws, Stability(2.0, 3, 0.10, 12.0, "p99")) is False
    assert win.window_stats(0, 4, np.array([0.010, 0.020, 0.030, 0.100]), 2.0).mean_ms == pytest.approx(40.0)


def test_columns_mark_used_windows_and_the_unstable_reason():
    rec = _records([(t / 10, t / 10, t / 10 + 0.01 * (1 + t % 3), 200, -1, 0) for t in range(40)])
    run = LoadRun(LoadProfile("closed", concurrency=1, duration_s=4.0), rec, 4.01, 0.4)
    rule = Stability(1.0, 2, 0.01, 4.0)
    cols = win.columns(run, Outcome(1.0, 2, 3, False), rule)
    cells = json.loads(cols["client_windows"])
    assert [c["used"] for c in cells] == [False, False, True, True]
    assert [c["rps"] for c in cells] == [10.0] * 4
    assert cols["client_unstable"] is True and "did not agree within 1%" in cols["client_unstable_reason"]
    assert "mean latency CV" in cols["client_unstable_reason"]  # the figure the rule judged
    assert cells[0]["mean_ms"] == pytest.approx(19.0) and cols["client_window_mean_cv"] >= 0
    cut = win.measured(run, Outcome(1.0, 2, 3, False))
    assert len(cut.records) == 20 and cut.wall_s == 2.0 and cut.profile.duration_s == 2.0
    assert win.columns(run, None)["client_windows"] == ""


def _run(server, stability, mode="closed"):
    profile = (LoadProfile("closed", concurrency=16, duration_s=1.0) if mode == "closed"
               else LoadProfile("open", rate_rps=400.0, duration_s=1.0))
    return run_load(Target(server.url("/p"), b"x"), profile, stability=stability)


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_server_that_speeds_up_is_measured_until_stable(mode):
    # warms up: 300 ms per request at first, 20 ms from 1.12 s on (linear in between); no
    # three 0.4 s windows agree before 1.2 s (their p99s differ by 2x and more)
    with FakeServer(delay_fn=lambda t: max(0.02, 0.3 - 0.25 * t)) as server:
        rule = Stability(window_s=0.4, windows=3, max_cv=0.25, max_duration_s=8.0)
        run = _run(server, rule, mode)
    out = run.windows
    assert out.stable is True
    assert out.start_s >= 1.0  # every used window is after the speed-up
    assert out.end_s < 6.0  # and it stopped well before max_duration_s
    assert run.records["scheduled_s"].max() < out.end_s + 1.0  # the engines stopped sending
    cols = win.columns(run, out, rule)
    assert cols["client_window_cv"] <= 0.25 and not cols["client_unstable"]
    p99s = [c["p99_ms"] for c in json.loads(cols["client_windows"]) if c["used"]]
    assert all(15 < p < 80 for p in p99s)


def test_a_server_that_never_settles_ends_at_max_duration_marked_unstable():
    # alternates 5 ms and 60 ms every 0.3 s: no three 0.3 s windows ever agree
    with FakeServer(delay_fn=lambda t: 0.005 if int(t / 0.3) % 2 else 0.06) as server:
        run = _run(server, Stability(window_s=0.3, windows=3, max_cv=0.1, max_duration_s=2.4))
    out = run.windows
    assert out.stable is False
    assert out.end_s == pytest.approx(2.4) and out.last - out.first == 2
    assert 2.3 < run.records["scheduled_s"].max() < 2.45
    cols = win.columns(run, out, Stability(0.3, 3, 0.1, 2.4))
    assert cols["client_unstable"] is True and cols["client_window_cv"] > 0.1
