"""OptunaSearch: TPE over the sweep's axes, ask-and-tell, constraints, the default first,
no configuration measured twice, and a study that survives an interrupted run (fake
executor and recorded rows, no TorchServe)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweeper.errors import Interrupted
from sweeper.trialresult import TrialResult
from sweeper.machine import machine_cores
from sweeper.plan import costs, default_point, make_trial, points, space
from sweeper.rundir import RunDir
from sweeper.context import SweepContext
from sweeper.runner import run_sweep
from sweeper.search import STRATEGIES, SearchOptions, search_options
from sweeper.sweepfile import parse_sweep

optuna = pytest.importorskip("optuna")

SWEEP = {
    "name": "tpe",
    "model": {"name": "mlp", "batch_size": [1, 2, 4, 8, 16], "max_batch_delay_ms": [1, 10, 50], "min_workers": [1, 2]},
    "env": {"OMP_NUM_THREADS": [1, 2]},
    "load": {"mode": "closed", "concurrency": 16, "duration_s": 1},
    "search": {"strategy": "optuna", "budget_trials": 12, "seed": 3},
    "settings": {"repeats": 2, "slo_p99_ms": 60},
}


def a_spec(**search):
    return parse_sweep({**SWEEP, "search": {**SWEEP["search"], **search}}, "tpe.yaml")


def surface(trial) -> dict:
    """A recorded-looking row: throughput grows with batch size and workers, p99 with
    batch size and delay (the big batches miss the 60 ms SLO)."""
    m = trial.model
    threads = int(dict(trial.env).get("OMP_NUM_THREADS", "1"))
    rps = 100.0 * math.log2(2 * m.batch_size) * (1 + 0.3 * (m.min_workers or 1)) / (1 + 0.2 * (threads - 1))
    p99 = 4.0 * m.batch_size + 0.6 * m.max_batch_delay_ms
    return {"status": "ok", "error": "", "load_mode": trial.load.mode, "client_success_rate": 1.0,
            "client_throughput_rps": rps + trial.repeat, "client_latency_p99_ms": p99, "wall_s": 0.1,
            "proc_ctx_per_req": 1.0}


def drive(strategy, outcome=surface) -> list:
    proposed = []
    while (trial := strategy.suggest()) is not None:
        proposed.append(trial)
        strategy.observe(trial, TrialResult(trial, outcome(trial), key=trial.key))
    return proposed


def test_it_measures_the_budget_of_distinct_configurations_each_repeated_default_first():
    spec = a_spec()
    search = STRATEGIES["optuna"](spec, space(spec), search_options(spec))
    runs = drive(search)
    configs = Counter(t.trial_id for t in runs)
    assert len(configs) == 12 and set(configs.values()) == {2} and search.total == 24 == len(runs)
    first = runs[0]
    # TorchServe's default: batch 1, delay 100 ms (50 is the nearest), workers = CPUs, threads = cores
    point, notes = default_point(space(spec), cpus=2)
    assert (first.model.batch_size, first.model.max_batch_delay_ms) == (1, 50)
    assert first == make_trial(spec, default_point(space(spec), machine_cores())[0], 0)
    assert any("max_batch_delay_ms" in n and "100" in n and "50" in n for n in notes)
    study = search.study
    assert len([t for t in study.trials if "reused" not in t.user_attrs]) == 12
    assert study.trials[0].user_attrs.get("default") is True


def test_infeasible_is_told_with_its_miss_and_failed_as_failed():
    spec = a_spec(budget_trials=40)  # the whole grid of 60 is not needed: 40 configurations
    failing = {4}  # batch size 4 breaks

    def outcome(trial):
        row = surface(trial)
        return {**row, "status": "failed", "error": "it broke"} if trial.model.batch_size in failing else row

    search = STRATEGIES["optuna"](spec, space(spec), SearchOptions(seed=1, budget=80))
    drive(search, outcome)
    state = optuna.trial.TrialState
    told = [t for t in search.study.trials if "reused" not in t.user_attrs]
    assert len(told) == 40 and all(t.state.is_finished() for t in search.study.trials)
    for t in told:
        batch = [1, 2, 4, 8, 16][t.params["model.batch_size"]]
        if batch in failing:
            assert t.state == state.FAIL and t.user_attrs["error"] == "it broke"
        else:
            assert t.state == state.COMPLETE
            miss = t.constraints["p99_over_slo_ms"]
            assert (miss > 0) == (surface(make_trial(spec, search._point(search._key(t.params)), 0))["client_latency_p99_ms"] > 60)
    best = search.best()
    assert best is not None and best.constraints["p99_over_slo_ms"] <= 0
    assert "best feasible:" in search.status()


def test_a_configuration_is_never_measured_twice_even_when_tpe_proposes_it_again():
    spec = parse_sweep({**SWEEP, "model": {"name": "mlp", "batch_size": [1, 2], "max_batch_delay_ms": [1, 10]},
                        "env": {}, "search": {"strategy": "optuna", "budget_trials": 4, "seed": 0}}, "tpe.yaml")
    search = STRATEGIES["optuna"](spec, space(spec), search_options(spec))
    runs = drive(search)
    assert len({t.trial_id for t in runs}) == 4 and len(runs) == 8 and len({t.key for t in runs}) == 8
    # a budget beyond the grid is the grid
    search = STRATEGIES["optuna"](spec, space(spec), SearchOptions(seed=0, budget=100))
    assert search.total == 8 and len({t.trial_id for t in drive(search)}) == 4


def test_each_batch_runs_server_groups_contiguously():
    spec = a_spec(budget_trials=20)
    search = STRATEGIES["optuna"](spec, space(spec), search_options(spec))
    runs = drive(search)
    starts = costs(runs).starts
    # one start per server group per batch at most: start-up batch + ceil(rest / BATCH)
    from sweeper.search.optuna import BATCH

    batches = 1 + math.ceil((20 - search.startup) / BATCH)
    assert starts <= 2 * batches
    assert starts < len({t.trial_id for t in runs})  # fewer restarts than configurations


class FakeExecutor:
    def __init__(self, interrupt_at=None):
        self.submitted, self.queue, self.interrupt_at = [], [], interrupt_at

    slots = 1

    def submit(self, trial):
        self.queue.append(trial)
        self.submitted.append(trial.key)

    def wait(self):
        done, self.queue = self.queue, []
        if self.interrupt_at is not None and len(self.submitted) == self.interrupt_at:
            raise KeyboardInterrupt
        return [TrialResult(t, surface(t), {}, t.key) for t in done]

    def close(self):
        pass


def a_context(tmp_path, spec):
    return SweepContext(spec=spec, run_dir=tmp_path, run_id="tpe-run", model_store=tmp_path, request_body=b"[]")


def test_the_last_part_of_the_budget_measures_the_neighbours_of_the_best():
    spec = a_spec(budget_trials=20)
    search = STRATEGIES["optuna"](spec, space(spec), search_options(spec))
    runs = drive(search)
    assert len({t.trial_id for t in runs}) == 20
    # batch 2 steps + delay 2 + workers 1 + threads 1 = 6 neighbours; a quarter of 20 = 5
    assert search.polish == 5
    trials = search.study.trials
    polished = [t for t in trials if "polish" in t.user_attrs and "reused" not in t.user_attrs]
    assert polished and all(t.number >= 15 for t in polished)  # after TPE's 15
    first = polished[0]
    centre = trials[first.user_attrs["polish"]]
    before = [u for u in trials[: first.number] if u.value is not None]
    feasible = [u for u in before if u.constraints["p99_over_slo_ms"] <= 0]
    assert centre.value == max(u.value for u in feasible)  # the best feasible one then
    sizes = {name: dim.high + 1 for name, dim in search._dims.items()}
    around = set()
    for name in centre.params:
        for step in (-1, 1):
            value = centre.params[name] + step
            if 0 <= value < sizes[name]:
                around.add(tuple(sorted({**centre.params, name: value}.items())))
    unmeasured = around - {tuple(sorted(u.params.items())) for u in before}
    from_centre = [t for t in polished if t.user_attrs["polish"] == centre.number]
    assert len(from_centre) == min(5, len(unmeasured)) > 0
    assert {tuple(sorted(t.params.items())) for t in from_centre} <= unmeasured  # one step, one axis


@pytest.mark.parametrize("interrupt_at", [1, 2, 7, 12, 17])
def test_resume_after_ctrl_c_continues_the_study_told_equals_measured_no_duplicates(tmp_path, interrupt_at):
    spec = a_spec(budget_trials=10)
    first = FakeExecutor(interrupt_at)
    with pytest.raises(Interrupted):
        run_sweep(a_context(tmp_path, spec), STRATEGIES["optuna"](spec, space(spec), search_options(spec, tmp_path)), first)
    assert RunDir(tmp_path).search_journal.exists()
    second = FakeExecutor()
    resumed = STRATEGIES["optuna"](spec, space(spec), search_options(spec, tmp_path))
    outcome = run_sweep(a_context(tmp_path, spec), resumed, second)
    # only the run in flight at the interrupt ran twice
    assert set(first.submitted) & set(second.submitted) == {first.submitted[-1]}
    assert len(second.submitted) == 20 - (interrupt_at - 1)
    rows = [r for r in outcome.rows if r["status"] == "ok"]
    measured = {r["trial_id"] for r in rows}
    assert len(rows) == 20 and len(measured) == 10
    study = optuna.load_study(study_name=spec.name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(RunDir(tmp_path).search_journal))))
    told = [t for t in study.trials if "reused" not in t.user_attrs]
    assert all(t.state.is_finished() for t in study.trials)
    assert len(told) == len(measured) == 10  # told == measured
    assert sorted(t.user_attrs["trial_id"] for t in told) == sorted(measured)  # no duplicates
    assert len({tuple(sorted(t.params.items())) for t in told}) == 10


def test_a_finished_study_resumes_to_nothing_more(tmp_path):
    spec = a_spec(budget_trials=5)
    run_sweep(a_context(tmp_path, spec), STRATEGIES["optuna"](spec, space(spec), search_options(spec, tmp_path)), FakeExecutor())
    again = FakeExecutor()
    run_sweep(a_context(tmp_path, spec), STRATEGIES["optuna"](spec, space(spec), search_options(spec, tmp_path)), again)
    assert again.submitted == []


def test_open_loop_profiles_are_no_throughput_dimension_but_latency_keeps_them():
    doc = {**SWEEP, "load": [{"mode": "closed", "concurrency": [4, 16], "duration_s": 1},
                             {"mode": "open", "rate_rps": 50, "duration_s": 1}]}
    spec = parse_sweep(doc, "tpe.yaml")
    runs = drive(STRATEGIES["optuna"](spec, space(spec), SearchOptions(seed=0, budget=40)))
    assert {t.load.mode for t in runs} == {"closed"}
    spec = parse_sweep({**doc, "search": {**doc["search"], "objective": "latency", "budget_trials": 60}}, "tpe.yaml")
    runs = drive(STRATEGIES["optuna"](spec, space(spec), SearchOptions(seed=0, budget=120)))
    assert {t.load.mode for t in runs} == {"closed", "open"}


# --- hypothesis: every proposal is a point of the declared axes -------------------------

AXES = st.fixed_dictionaries({
    "batch_size": st.lists(st.sampled_from([1, 2, 3, 4, 8, 16, 32]), min_size=1, max_size=4, unique=True),
    "max_batch_delay_ms": st.lists(st.integers(1, 200), min_size=1, max_size=3, unique=True),
    "min_workers": st.lists(st.integers(1, 4), min_size=1, max_size=2, unique=True),
    "threads": st.lists(st.sampled_from(["1", "2", "4"]), min_size=1, max_size=2, unique=True),
    "concurrency": st.lists(st.integers(1, 64), min_size=1, max_size=2, unique=True),
    "open": st.booleans(),
    "objective": st.sampled_from(["throughput", "latency", "capacity"]),
    "budget": st.integers(1, 8),
    "seed": st.integers(0, 3),
})


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(axes=AXES, rnd=st.randoms(use_true_random=False))
def test_every_proposed_trial_is_a_point_of_the_declared_axes(name, axes, rnd):
    load = [{"mode": "closed", "concurrency": axes["concurrency"], "duration_s": 1}]
    if axes["open"]:
        load.append({"mode": "open", "rate_rps": 20, "duration_s": 1})
    if axes["objective"] == "capacity":  # the rate search replaces the load
        load = None
    doc = {
        "name": "hyp",
        "model": {"name": "mlp", "batch_size": axes["batch_size"], "max_batch_delay_ms": axes["max_batch_delay_ms"],
                  "min_workers": axes["min_workers"]},
        "env": {"OMP_NUM_THREADS": axes["threads"]},
        "load": load,
        "search": {"strategy": name, "budget_trials": axes["budget"], "seed": axes["seed"], "objective": axes["objective"]},
        "settings": {"repeats": 1, "slo_p99_ms": 50},
    }
    spec = parse_sweep({k: v for k, v in doc.items() if v is not None}, "hyp.yaml")
    declared = space(spec)
    on_axes = {make_trial(spec, p, 0) for p in points(declared)}
    search = STRATEGIES[name](spec, declared, search_options(spec))

    def outcome(trial):
        status = rnd.choice(["ok", "ok", "ok", "failed"])
        return {**surface(trial), "status": status, "capacity_rps_at_slo": rnd.choice([0, None, 120.0])}

    runs = drive(search, outcome)
    assert runs and all(t in on_axes for t in runs)
    assert len({t.key for t in runs}) == len(runs) <= search.total  # no run twice
    if name == "optuna":  # the budget of distinct configurations (open loops cannot rank throughput)
        searchable = [t for t in on_axes if axes["objective"] != "throughput" or t.load.mode == "closed"]
        assert len({t.trial_id for t in runs}) == len(runs) == min(axes["budget"], len(searchable))
    assert search.suggest() is None


def test_default_point_takes_torchserves_defaults_or_the_nearest_value_and_says_so():
    spec = parse_sweep({**SWEEP, "model": {"name": "mlp", "batch_size": [2, 4], "max_batch_delay_ms": [5, 100],
                                           "min_workers": [1, 3]},
                        "env": {"OMP_NUM_THREADS+MKL_NUM_THREADS": [1, 4]},
                        "load": {"mode": "closed", "concurrency": [8, 32], "duration_s": 1}}, "tpe.yaml")
    point, notes = default_point(space(spec), cpus=4)
    assert point["model.batch_size"] == 2 and point["model.max_batch_delay_ms"] == 100
    assert point["model.min_workers"] == 3 and str(point["env.OMP_NUM_THREADS+MKL_NUM_THREADS"]) == "4"
    assert point["load"].concurrency == 8
    text = " ".join(notes)
    assert "model.batch_size: TorchServe's default 1 is not on the axis; 2 is the nearest value" in text
    assert "model.min_workers: TorchServe's default 4 is not on the axis; 3" in text
    assert "load has no TorchServe default; its first value, closed c=8, stands in for it" in text
    assert "max_batch_delay_ms" not in text
