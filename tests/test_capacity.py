"""search.objective capacity: the schema, the rate search against a fake step with a known
knee and against a fake server with a known capacity, the trials it plans, and the ranking."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from sweeper.analysis.aggregate import aggregate_trials
from sweeper.analysis.objective import best
from sweeper.capacity import CapacityRule, Step, find_capacity, judge
from sweeper.errors import SpecError
from sweeper.load import LoadProfile, Target
from sweeper.measure import capacity_step
from sweeper.plan import expand, make_trial, space
from sweeper.report.markdown import markdown
from sweeper.report.recommend import recommend
from sweeper.search import STRATEGIES, search_options
from sweeper.sweepfile import parse_sweep

from fakeserver import FakeServer

CAPACITY_SWEEP = {
    "name": "cap",
    "model": {"batch_size": [1, 8]},
    "search": {"objective": "capacity", "capacity": {"start_rps": 50, "max_rps": 4000, "step_s": 2}},
    "settings": {"slo_p99_ms": 50},
}


def rule(**kw) -> CapacityRule:
    base = dict(slo_p99_ms=50.0, min_success_rate=0.99, start_rps=50.0, max_rps=20000.0, growth=2.0,
                precision=0.05, step_s=1.0, warmup_s=0.0, max_steps=16)
    return CapacityRule(**{**base, **kw})


def knee_at(knee: float, calls: list[float]):
    """A server that meets the SLO up to `knee` req/s and not above."""

    def step(rate: float) -> Step:
        calls.append(rate)
        p99 = 10.0 if rate <= knee else 500.0
        return judge(rate, p99, 1.0, rate, rate, rule())

    return step


# --- the search ------------------------------------------------------------------------


def test_exponential_growth_then_binary_search_to_the_precision():
    calls: list[float] = []
    found = find_capacity(knee_at(730.0, calls), rule())
    # x2 from 50 until 800 fails (twice: a failure is confirmed), then halving between 400
    # and 800 until (fail-pass)/pass <= 5%
    assert calls == [50, 100, 200, 400, 800, 800, 600, 700, 750, 750, 725]
    assert found.rps == 725 and found.limited_by == "p99"
    assert (730 - found.rps) / found.rps <= 0.05 and found.rps <= 730
    cols = found.columns()
    assert cols["capacity_rps_at_slo"] == 725 and cols["capacity_steps_n"] == 11
    assert cols["capacity_first_fail_rps"] == 750 and cols["capacity_precision"] == pytest.approx(25 / 725)
    steps = json.loads(cols["capacity_steps"])
    assert [s["passed"] for s in steps] == [True] * 4 + [False, False, True, True, False, False, True]
    assert steps[4]["reason"] == "p99 500.0 ms > 50 ms"
    assert found.best == 10  # the step at 725 req/s


def test_one_failing_step_is_run_again_and_a_pass_then_counts():
    calls: list[float] = []
    knee = knee_at(730.0, calls)
    noisy = {375.0: 1}  # the first step at 375 req/s fails (noise), the second passes

    def step(rate: float) -> Step:
        if noisy.get(rate):
            noisy[rate] -= 1
            calls.append(rate)
            return judge(rate, 135.0, 1.0, rate, rate, rule())
        return knee(rate)

    found = find_capacity(step, rule(start_rps=375.0 / 4))
    assert calls[:4] == [93.75, 187.5, 375.0, 375.0]  # the failure at 375 was not believed
    assert 700 <= found.rps <= 730 and found.columns()["capacity_first_fail_rps"] == 750


@pytest.mark.parametrize("knee", [55.0, 130.0, 999.0, 3333.0, 15000.0])
@pytest.mark.parametrize("precision", [0.01, 0.05, 0.2])
def test_the_capacity_is_below_the_knee_and_within_the_precision(knee, precision):
    found = find_capacity(knee_at(knee, []), rule(precision=precision, max_steps=100))
    assert found.rps <= knee
    assert (found.columns()["capacity_first_fail_rps"] - found.rps) / found.rps <= precision
    assert (knee - found.rps) / found.rps <= precision


def test_the_steps_are_bounded_by_max_steps():
    calls: list[float] = []
    found = find_capacity(knee_at(730.0, calls), rule(max_steps=6))
    assert calls == [50, 100, 200, 400, 800, 800] and found.rps == 400
    assert found.limited_by == "p99+steps"  # the precision was not reached
    calls.clear()
    found = find_capacity(knee_at(math.inf, calls), rule(max_steps=3))
    assert calls == [50, 100, 200] and found.rps == 200 and found.limited_by == "steps"


def test_max_rps_ends_the_growth():
    calls: list[float] = []
    found = find_capacity(knee_at(math.inf, calls), rule(max_rps=300))
    assert calls == [50, 100, 200, 300] and found.rps == 300 and found.limited_by == "max_rps"


def test_a_failing_start_gives_capacity_zero():
    calls: list[float] = []
    found = find_capacity(knee_at(10.0, calls), rule())
    assert calls == [50, 50] and found.rps == 0.0 and found.best == 0
    assert found.columns()["capacity_rps_at_slo"] == 0.0
    assert math.isnan(found.columns()["capacity_precision"])


@pytest.mark.parametrize(
    "p99, success, achieved, limit, reason",
    [
        (10.0, 1.0, 100.0, "", ""),
        (50.0, 0.99, 99.0, "", ""),  # at the limits: passes
        (50.1, 1.0, 100.0, "p99", "p99 50.1 ms > 50 ms"),
        (math.nan, 0.0, 100.0, "success", "success 0.0000 < 0.99; p99 nan ms > 50 ms"),
        (10.0, 0.98, 100.0, "success", "success 0.9800 < 0.99"),
        (10.0, 1.0, 90.0, "client", "engine kept 90.0 of 100 req/s"),
    ],
)
def test_the_verdict_on_one_step(p99, success, achieved, limit, reason):
    s = judge(100.0, p99, success, achieved, achieved, rule())
    assert (s.passed, s.limit, s.reason) == (not limit, limit, reason)


def test_against_a_fake_server_with_a_known_capacity():
    # one FIFO server, 10 ms a request: 100 req/s; beyond it the queue grows for the whole
    # step (at 1.5x, 50 requests behind after 1 s: 500 ms). The SLO is wide because the
    # fake server shares this process (and a loaded machine) with the test: a stall of a
    # few hundred ms must not fail a step below the knee.
    knee = 100.0
    r = rule(start_rps=25.0, step_s=1.0, warmup_s=0.25, precision=0.1, max_steps=10, slo_p99_ms=300.0)
    with FakeServer(service_s=1.0 / knee) as server:
        target = Target(server.url("/predict"), b"x")
        load = LoadProfile(mode="open", rate_rps=r.start_rps, duration_s=r.step_s, timeout_s=10.0)
        found = find_capacity(lambda rate: capacity_step(target, load, rate, r, 200)[0], r)
    assert found.limited_by.startswith(("p99", "client")), found
    # the queue makes every step well above the knee late; noise may fail one below it early
    assert 0.4 * knee <= found.rps <= 1.3 * knee, found
    assert all(not s.passed for s in found.steps if s.rate_rps >= 1.5 * knee), found


# --- the schema ------------------------------------------------------------------------


def error(data: dict) -> SpecError:
    with pytest.raises(SpecError) as e:
        parse_sweep(data, "x.yaml")
    return e.value


def with_(**groups) -> dict:
    out = json.loads(json.dumps(CAPACITY_SWEEP))
    for k, v in groups.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


@pytest.mark.parametrize(
    "data, key, rule_start",
    [
        (with_(settings={}), "settings.slo_p99_ms", "required with search.objective capacity"),
        (with_(load={"mode": "open", "rate_rps": 10, "duration_s": 1}), "load", "not used with search.objective capacity"),
        (with_(settings={"slo_p99_ms": 50, "stability": {}}), "settings.stability", "not used with search.objective capacity"),
        (with_(search={"capacity": {"step_s": 2}}, load={"mode": "closed", "concurrency": 1, "duration_s": 1}), "search.capacity", "only with objective capacity"),
        (with_(search={"objective": "capacity", "capacity": {"start_rps": 100, "max_rps": 50}}), "search.capacity.max_rps", "must be >= start_rps (100), got 50"),
        (with_(search={"objective": "capacity", "capacity": {"step_s": 1, "warmup_s": 1}}), "search.capacity.warmup_s", "must be < step_s"),
        (with_(search={"objective": "capacity", "capacity": {"precision": 0}}), "search.capacity.precision", "must be > 0"),
        (with_(search={"objective": "capacity", "capacity": {"growth": 1}}), "search.capacity.growth", "must be > 1"),
        (with_(search={"objective": "capacity", "capacity": {"max_steps": 1}}), "search.capacity.max_steps", "must be >= 2"),
        (with_(search={"objective": "capacity", "capacity": {"step": 1}}), "search.capacity.step", "unknown key"),
        (with_(search={"objective": "cap"}), "search.objective", "must be 'throughput', 'latency' or 'capacity'"),
        (with_(search=None), "load", "required"),
    ],
)
def test_schema_errors_name_the_key_and_the_rule(data, key, rule_start):
    e = error(data)
    assert e.key == key and e.rule.startswith(rule_start), (e.key, e.rule)
    assert "\n" not in str(e)


def test_defaults_and_resolved_dump():
    import yaml

    from sweeper.sweepfile import dump_resolved

    s = parse_sweep({**CAPACITY_SWEEP, "search": {"objective": "capacity"}}, "x.yaml")
    c = s.search.rate_search
    assert (c.start_rps, c.max_rps, c.growth, c.precision, c.step_s, c.warmup_s, c.max_steps) == (50, 20000, 2, 0.05, 3, 0.5, 16)
    dumped = yaml.safe_load(dump_resolved(s))
    assert "load" not in dumped and dumped["search"]["capacity"]["max_steps"] == 16
    again = parse_sweep(dumped, "sweep.yaml")  # what --resume reads: the same trials
    assert again.search.rate_search == c and [t.trial_id for t in expand(again)] == [t.trial_id for t in expand(s)]


# --- plan, strategies, ranking -----------------------------------------------------------


def test_capacity_replaces_the_load_axis_for_every_strategy():
    spec = parse_sweep(CAPACITY_SWEEP, "x.yaml")
    axes = space(spec)
    load = [a for a in axes if a.name == "load"][0]
    assert len(load.values) == 1
    assert load.values[0] == LoadProfile(mode="open", rate_rps=50.0, duration_s=2.0, processes=1, timeout_s=30.0)
    trials = expand(spec)
    assert len(trials) == 2 and all(t.capacity is not None for t in trials)
    assert trials[0].capacity.slo_p99_ms == 50 and trials[0].capacity.max_rps == 4000
    assert trials[0].params()["load_mode"] == "capacity"
    for name, factory in STRATEGIES.items():
        spec_s = parse_sweep({**CAPACITY_SWEEP, "search": {**CAPACITY_SWEEP["search"], "strategy": name, **({"budget_trials": 1} if name != "grid" else {})}}, "x.yaml")
        strategy = factory(spec_s, space(spec_s), search_options(spec_s))
        t = strategy.suggest()
        assert t is not None and t.capacity is not None, name


def test_the_search_settings_are_part_of_the_trial_id():
    a = parse_sweep(CAPACITY_SWEEP, "x.yaml")
    b = parse_sweep({**CAPACITY_SWEEP, "search": {"objective": "capacity", "capacity": {"start_rps": 50, "max_rps": 4000, "step_s": 2, "precision": 0.1}}}, "x.yaml")
    point = {"model.batch_size": 1, "load": space(a)[-1].values[0]}
    assert make_trial(a, point, 0).trial_id != make_trial(b, point, 0).trial_id


def _rows() -> pd.DataFrame:
    rows = []
    for trial, batch, caps in (("t1", 1, [300.0, 320.0]), ("t8", 8, [700.0, 650.0]), ("t0", 32, [0.0, 0.0])):
        for r, cap in enumerate(caps):
            rows.append({
                "trial_id": trial, "repeat": r, "status": "ok", "param_model_batch_size": batch,
                "load_mode": "capacity", "load_rate_rps": 50.0, "capacity_rps_at_slo": cap,
                "capacity_steps_n": 9, "capacity_precision": 0.04, "capacity_limited_by": "p99",
                "client_throughput_rps": cap, "client_success_rate": 0.995, "client_latency_p99_ms": 40.0,
                "client_latency_p50_ms": 10.0,
            })
    return pd.DataFrame(rows)


def test_capacity_ranks_the_recommendation_and_the_tables():
    trials = aggregate_trials(_rows())
    assert best(trials, 50.0, "capacity")["trial_id"] == "t8"
    # success 0.995 keeps every trial out of the throughput ranking, not out of capacity's
    assert best(trials, 50.0) is None
    rec = recommend(trials, 50.0, "sweep", "capacity")
    assert rec.capacity is not None and rec.throughput is None and rec.latency is None
    assert rec.capacity.winner["trial_id"] == "t8" and rec.capacity.runner_up["trial_id"] == "t1"
    assert rec.capacity.within_noise is False and "do not overlap" in rec.capacity.confidence
    md = markdown(_rows(), "cap")
    assert "capacity req/s at SLO" in md
    table = [line for line in md.splitlines() if line.startswith("| ")][1:]
    assert [line.split("|")[1].strip(" ✖") for line in table] == ["8", "1", "32"]  # by capacity


def test_nothing_to_recommend_when_no_rate_met_the_slo():
    rows = _rows()
    rows["capacity_rps_at_slo"] = 0.0
    rec = recommend(aggregate_trials(rows), 50.0, "sweep", "capacity")
    assert rec.capacity is None and "even at search.capacity.start_rps" in rec.notes[0]
