"""analysis.objective.run_score / run_value: one run judged by each search objective."""

from __future__ import annotations

import math

import pytest

from sweeper.analysis.objective import RunScore, run_score, run_value

OK = {"status": "ok", "load_mode": "closed", "client_success_rate": 1.0,
      "client_throughput_rps": 200.0, "client_latency_p99_ms": 40.0}


@pytest.mark.parametrize(
    "row, slo, expected",
    [
        (OK, None, 200.0),
        (OK, 60, 200.0),
        (OK, 30, None),  # p99 above the SLO
        ({**OK, "status": "failed"}, None, None),
        ({**OK, "load_mode": "open"}, None, None),  # an open loop's throughput is its rate
        ({**OK, "client_success_rate": 0.985}, None, None),  # below the default floor, the schema's 0.99
        ({**OK, "client_throughput_rps": float("nan")}, None, None),
        ({**OK, "client_latency_p99_ms": None}, 60, None),
    ],
)
def test_throughput_keeps_its_behaviour(row, slo, expected):
    assert run_value(row, slo) == expected
    assert run_value(row, slo, "throughput") == expected


def test_min_success_rate_relaxes_the_every_request_rule():
    row = {**OK, "client_success_rate": 0.995}
    assert run_value(row, None, "throughput", min_success_rate=0.99) == 200.0
    assert run_value(row, None, "throughput", min_success_rate=0.999) is None


def test_latency_is_the_p99_of_any_load_within_the_slo():
    assert run_value(OK, 60, "latency") == 40.0
    assert run_value({**OK, "load_mode": "open"}, 60, "latency") == 40.0
    assert run_value(OK, 30, "latency") is None


@pytest.mark.parametrize("capacity, expected", [(150.0, 150.0), (0, None), (None, None), (float("nan"), None)])
def test_capacity_reads_capacity_rps_at_slo_and_zero_is_infeasible(capacity, expected):
    row = {**OK, "load_mode": "open", "capacity_rps_at_slo": capacity, "client_latency_p99_ms": 500.0}
    assert run_value(row, 60, "capacity") == expected
    score = run_score(row, 60, "capacity")
    assert score.feasible == (expected is not None) and score.value is not None  # infeasible, not failed


def test_constraints_rank_a_near_miss_above_a_far_one():
    near = run_score({**OK, "client_latency_p99_ms": 61.0}, 60)
    far = run_score({**OK, "client_latency_p99_ms": 90.0}, 60)
    assert not near.feasible and not far.feasible
    assert max(near.constraints) == pytest.approx(1.0) and max(far.constraints) == pytest.approx(30.0)
    assert run_score({**OK, "status": "failed"}, 60) == RunScore(None, ())


def test_an_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="objective must be one of"):
        run_score(OK, None, "cost")
    assert math.isfinite(run_score(OK, 60).constraints[-1])
