"""Issue 14: measurement defects found in a code review, each pinned by a test that failed
before its fix (the message it failed with is in the commit that fixed it)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweeper import results
from sweeper.load import RECORD_DTYPE, LoadProfile, LoadRun, summarize
from sweeper.load.launch import wall_time

NAN = math.nan


def load_run(profile: LoadProfile, rows, cpu_s: float = 0.0) -> LoadRun:
    """rows: (scheduled_s, sent_s, end_s, status[, batch_size, handler_ms])"""
    full = [tuple(r) + (-1, NAN)[len(r) - 4:] for r in rows]
    rec = np.array(full, dtype=RECORD_DTYPE) if full else np.zeros(0, RECORD_DTYPE)
    return LoadRun(profile, rec, wall_time(rec), cpu_s)


# --- 14.1: one timeout must not halve throughput ---------------------------------------------


def closed_30s_last_times_out() -> LoadRun:
    """Closed loop, one in flight, 30 s at 10 ms a request; the last one hangs to the 30 s
    timeout (status 0)."""
    profile = LoadProfile("closed", concurrency=1, duration_s=30.0, timeout_s=30.0)
    rows = [(i * 0.01, i * 0.01, (i + 1) * 0.01, 200) for i in range(2999)]
    rows.append((29.99, 29.99, 59.99, 0))
    return load_run(profile, rows)


def test_one_timeout_does_not_stretch_the_window():
    got = summarize(closed_30s_last_times_out())
    assert got["client_throughput_rps"] == pytest.approx(2999 / 30.0)  # was 50.0 (2999 / 59.99)
    assert got["client_window_s"] == pytest.approx(30.0)


def test_open_loop_window_is_the_schedule_not_the_drain_of_the_last_request():
    # 100 req/s for 1 s; the last request is served after 500 ms.
    profile = LoadProfile("open", rate_rps=100.0, duration_s=1.0)
    rows = [(i / 100, i / 100, i / 100 + 0.005, 200) for i in range(99)] + [(0.99, 0.99, 1.49, 200)]
    got = summarize(load_run(profile, rows))
    assert got["client_window_s"] == pytest.approx(1.0)
    assert got["client_throughput_rps"] == pytest.approx(100.0)  # was 100 / 1.49 = 67


def test_closed_loop_counted_by_requests_ends_when_the_last_request_was_issued():
    # 4 requests, one in flight, 10 ms each, the last one hangs for 10 s (a timeout).
    profile = LoadProfile("closed", concurrency=1, requests=4)
    rows = [(0.00, 0.00, 0.01, 200), (0.01, 0.01, 0.02, 200), (0.02, 0.02, 0.03, 200), (0.03, 0.03, 10.03, 0)]
    got = summarize(load_run(profile, rows))
    assert got["client_throughput_rps"] == pytest.approx(3 / 0.03)


def test_a_success_rate_below_one_never_prints_as_one_and_is_marked(tmp_path):
    from test_results import put, row

    put(tmp_path, row("a", 0, client_success_rate=0.9997, client_errors=1))
    put(tmp_path, row("b", 0, seq=1, param_model_batch_size=8))
    from sweeper.report.markdown import markdown

    md = markdown(results.table(tmp_path))
    line_a = next(line for line in md.splitlines() if line.startswith("| ") and "99.97" in line)
    assert "1.000" not in line_a
    assert "✖" in line_a
    assert "1 trial(s) had failed requests" in md
