"""summarize() on hand-built records, records files, and merging records of processes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweeper.load import RECORD_DTYPE, LoadProfile, LoadRun, read_records, summarize, write_records
from sweeper.load.launch import merge, split, wall_time
from sweeper.load.summary import CLIENT_BOUND_SEND_LAG_P99_MS

NAN = math.nan
CLOSED = LoadProfile("closed", concurrency=2, requests=4)
OPEN_100 = LoadProfile("open", rate_rps=100.0, duration_s=0.04)


def records(rows) -> np.ndarray:
    """rows: (scheduled_s, sent_s, end_s, status[, batch_size, handler_ms])"""
    full = [tuple(r) + (-1, NAN)[len(r) - 4 :] for r in rows]
    return np.array(full, dtype=RECORD_DTYPE)


def run_of(profile, rows, cpu_s=0.0) -> LoadRun:
    rec = records(rows)
    return LoadRun(profile, rec, wall_time(rec), cpu_s)


def same(a, b) -> bool:
    if isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and math.isnan(a)
    return a == pytest.approx(b) if isinstance(b, float) else a == b


# Four requests: 2xx latencies 10, 20, 30 ms; one 503 (excluded from latency).
MIXED = [
    (0.000, 0.000, 0.010, 200, 8, 2.0),
    (0.000, 0.001, 0.020, 200, 4, 4.0),
    (0.010, 0.011, 0.040, 200),  # no X-Batch-Size / X-Handler-Ms
    (0.020, 0.020, 0.100, 503),
]
# Open loop at 100 req/s: due every 10 ms, each 1 ms late, 5 ms of latency.
ON_TIME = [(i / 100, i / 100 + 0.001, i / 100 + 0.005, 200) for i in range(5)]

CASES = [
    (
        "mixed closed loop",
        run_of(CLOSED, MIXED, cpu_s=0.05),
        {
            "client_requests": 4,
            "client_ok": 3,
            "client_errors": 1,
            "client_status_counts": "200:3 503:1",
            "client_success_rate": 0.75,
            # the window ends when the last request was issued (0.020): 2 served by then
            "client_throughput_rps": 2 / 0.020,
            "client_window_s": 0.020,
            "client_latency_mean_ms": 20.0,
            "client_latency_p50_ms": 20.0,
            "client_latency_p90_ms": 28.0,  # linear interpolation between 20 and 30
            "client_latency_max_ms": 30.0,
            "client_target_rate_rps": NAN,
            "client_achieved_rate_rps": 3 / 0.020,
            "client_send_lag_max_ms": 1.0,
            "client_cpu_pct": 50.0,
            "client_bound": False,
            "client_bound_reason": "",
            "client_batch_size_mean": 6.0,
            "client_handler_ms_mean": 3.0,
        },
    ),
    (
        "open loop on time",
        run_of(OPEN_100, ON_TIME, cpu_s=0.001),
        {
            "client_target_rate_rps": 100.0,
            "client_achieved_rate_rps": 100.0,
            "client_send_lag_p50_ms": 1.0,
            "client_send_lag_p99_ms": 1.0,
            "client_latency_p99_ms": 5.0,
            "client_throughput_rps": 5 / 0.05,  # the schedule: 5 requests at 100 req/s
            "client_window_s": 0.05,
            "client_bound": False,
            "client_batch_size_mean": NAN,
            "client_handler_ms_mean": NAN,
        },
    ),
    (
        "errors only: no latency, status 0 first",
        run_of(CLOSED, [(0, 0, 0.5, 0), (0, 0, 0.2, 500)]),
        {
            "client_ok": 0,
            "client_status_counts": "0:1 500:1",
            "client_success_rate": 0.0,
            "client_throughput_rps": 0.0,
            "client_latency_mean_ms": NAN,
            "client_latency_p99_ms": NAN,
            "client_latency_max_ms": NAN,
        },
    ),
    (
        "no records at all",
        run_of(CLOSED, []),
        {
            "client_requests": 0,
            "client_status_counts": "",
            "client_success_rate": NAN,
            "client_throughput_rps": NAN,
            "client_achieved_rate_rps": NAN,
            "client_cpu_pct": NAN,
            "client_bound": False,
        },
    ),
]


@pytest.mark.parametrize("name, run, expected", CASES, ids=[c[0] for c in CASES])
def test_summarize_math(name, run, expected):
    got = summarize(run)
    wrong = {k: (got[k], v) for k, v in expected.items() if not same(got[k], v)}
    assert not wrong


def test_summarize_returns_exactly_the_client_columns_as_plain_python():
    got = summarize(run_of(CLOSED, MIXED))
    assert list(got) == [
        "client_requests", "client_ok", "client_errors", "client_status_counts",
        "client_refused", "client_timeouts", "client_connection_errors",
        "client_success_rate", "client_throughput_rps", "client_window_s", "client_latency_mean_ms",
        "client_latency_p50_ms", "client_latency_p90_ms", "client_latency_p99_ms",
        "client_latency_max_ms", "client_target_rate_rps", "client_achieved_rate_rps",
        "client_send_lag_p50_ms", "client_send_lag_p99_ms", "client_send_lag_max_ms",
        "client_cpu_pct", "client_sched_wait_pct", "client_sched_wait_ms_mean", "client_bound",
        "client_bound_reason", "client_batch_size_mean", "client_batch_size_per_batch_mean",
        "client_handler_ms_mean",
    ]
    assert all(type(v) in (int, float, str, bool) for v in got.values())


def test_open_loop_latency_counts_from_the_schedule_not_from_the_send():
    # Sent 50 ms late (the client stalled): the wait is the request's latency too.
    got = summarize(run_of(OPEN_100, [(0.0, 0.050, 0.055, 200)]))
    assert got["client_latency_max_ms"] == pytest.approx(55.0)
    assert got["client_send_lag_max_ms"] == pytest.approx(50.0)


BOUND_CASES = [
    ("on time", OPEN_100, ON_TIME, 0.0, ""),
    (
        "too slow",  # every request 2 ms later than the last: 10 ms intervals become 12 ms
        OPEN_100,
        [(i / 100, i * 0.012, i * 0.012 + 0.001, 200) for i in range(5)],
        0.0,
        "achieved rate 83.3 req/s < 99% of target 100 req/s",
    ),
    (
        "late but at rate",  # every request 20 ms late: right rate, too much lag
        OPEN_100,
        [(i / 100, i / 100 + 0.020, i / 100 + 0.021, 200) for i in range(5)],
        0.0,
        f"send lag p99 20.0 ms > {CLIENT_BOUND_SEND_LAG_P99_MS:g} ms",
    ),
    (
        "engine CPU saturated",
        CLOSED,
        [(0, 0, 1.0, 200), (0, 0, 1.0, 200)],
        0.95,
        "engine CPU 95% >= 90% of 1 core",
    ),
    (
        "two processes get two cores",
        LoadProfile("closed", concurrency=2, requests=2, processes=2),
        [(0, 0, 1.0, 200), (0, 0, 1.0, 200)],
        0.95,
        "",
    ),
    (
        "affinity to one CPU: two processes share one core",
        LoadProfile("closed", concurrency=2, requests=2, processes=2, cpu_affinity=(0,)),
        [(0, 0, 1.0, 200), (0, 0, 1.0, 200)],
        0.95,
        "engine CPU 95% >= 90% of 1 core",
    ),
]


@pytest.mark.parametrize("name, profile, rows, cpu_s, reason", BOUND_CASES, ids=[c[0] for c in BOUND_CASES])
def test_client_bound_rules(name, profile, rows, cpu_s, reason):
    got = summarize(run_of(profile, rows, cpu_s))
    assert got["client_bound_reason"] == reason
    assert got["client_bound"] is bool(reason)


def test_records_file_round_trip(tmp_path):
    run = run_of(CLOSED, MIXED)
    path = tmp_path / "requests.csv.gz"
    write_records(run, path)
    back = read_records(path)
    assert back.dtype == RECORD_DTYPE
    for field in ("scheduled_s", "sent_s", "end_s", "handler_ms"):
        np.testing.assert_allclose(back[field], run.records[field], atol=1e-6)
    np.testing.assert_array_equal(back["status"], run.records["status"])
    np.testing.assert_array_equal(back["batch_size"], run.records["batch_size"])
    assert not list(tmp_path.glob("*.tmp"))


def test_records_file_of_an_empty_run(tmp_path):
    path = tmp_path / "requests.csv.gz"
    write_records(run_of(CLOSED, []), path)
    assert len(read_records(path)) == 0


def test_merge_sorts_records_of_several_processes_by_schedule():
    a = records([(0.00, 0.00, 0.5, 200), (0.02, 0.02, 0.1, 200)])
    b = records([(0.01, 0.01, 0.2, 503), (0.03, 0.03, 0.3, 200)])
    merged = merge([a, b])
    assert list(merged["scheduled_s"]) == [0.00, 0.01, 0.02, 0.03]
    assert list(merged["status"]) == [200, 503, 200, 200]
    assert wall_time(merged) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "profile, field, expected",
    [
        (LoadProfile("closed", concurrency=5, requests=11, processes=2), "concurrency", [3, 2]),
        (LoadProfile("closed", concurrency=5, requests=11, processes=2), "requests", [6, 5]),
        (LoadProfile("open", rate_rps=1000, duration_s=10, processes=3), "requests", [3334, 3333, 3333]),
        (LoadProfile("open", rate_rps=30, duration_s=1, requests=7, processes=2), "requests", [4, 3]),
        (LoadProfile("open", rate_rps=10, duration_s=1, concurrency=9, processes=2), "concurrency", [5, 4]),
    ],
)
def test_split_shares_the_profile_over_processes(profile, field, expected):
    assert [getattr(part, field) for part in split(profile)] == expected


@pytest.mark.parametrize(
    "profile, message",
    [
        (LoadProfile("closed", concurrency=1, requests=5, processes=2), "concurrency .1. must be >= processes"),
        (LoadProfile("closed", concurrency=None, requests=5), "concurrency must be >= 1"),
        (LoadProfile("closed", concurrency=2), "give duration_s or requests"),
        (LoadProfile("open", rate_rps=0, duration_s=1), "rate_rps must be > 0"),
        (LoadProfile("open", rate_rps=1, duration_s=1, processes=2), "cannot be split over 2"),
        (LoadProfile("sideways", duration_s=1), "mode must be"),  # type: ignore[arg-type]
    ],
)
def test_split_rejects_unusable_profiles(profile, message):
    from sweeper.errors import LoadError

    with pytest.raises(LoadError, match=message):
        split(profile)
