"""RandomSearch: a seeded sample of the grid, without replacement, each point repeated."""

from __future__ import annotations

import pytest
import yaml

from sweeper.errors import SpecError
from sweeper.plan import points, space
from sweeper.search import STRATEGIES, SearchOptions, search_options
from sweeper.search.random import point_at
from sweeper.sweepfile import dump_resolved, parse_sweep

SWEEP = {
    "name": "rnd",
    "model": {"name": "mlp", "batch_size": [1, 2, 4, 8], "max_batch_delay_ms": [1, 5, 50]},
    "env": {"OMP_NUM_THREADS": [1, 2]},
    "load": {"mode": "closed", "concurrency": [4, 16], "duration_s": 1},
    "settings": {"repeats": 2},
}


def drain(strategy) -> list:
    out = []
    while (trial := strategy.suggest()) is not None:
        out.append(trial)
    return out


def test_point_at_walks_the_grid_in_plan_order():
    axes = space(parse_sweep(SWEEP, "rnd.yaml"))
    assert [point_at(axes, i) for i in range(48)] == list(points(axes))


def test_a_seed_draws_the_budget_of_distinct_configurations_each_repeated():
    spec = parse_sweep(SWEEP, "rnd.yaml")
    trials = drain(STRATEGIES["random"](spec, space(spec), SearchOptions(seed=1, budget=10 * 2)))
    configs = {t.trial_id for t in trials}
    assert len(configs) == 10 and len(trials) == 20
    assert sorted(t.repeat for t in trials) == [0] * 10 + [1] * 10 and len({t.key for t in trials}) == 20
    again = drain(STRATEGIES["random"](spec, space(spec), SearchOptions(seed=1, budget=20)))
    other = drain(STRATEGIES["random"](spec, space(spec), SearchOptions(seed=2, budget=20)))
    assert [t.key for t in again] == [t.key for t in trials]  # what --resume relies on
    assert {t.trial_id for t in other} != configs


def test_a_budget_larger_than_the_grid_is_the_grid():
    spec = parse_sweep(SWEEP, "rnd.yaml")
    trials = drain(STRATEGIES["random"](spec, space(spec), SearchOptions(seed=0, budget=1000)))
    assert len({t.trial_id for t in trials}) == 48


def test_the_search_group_reaches_the_strategy_and_survives_resume():
    spec = parse_sweep({**SWEEP, "search": {"strategy": "random", "budget_trials": 5, "seed": 9}}, "rnd.yaml")
    assert search_options(spec) == SearchOptions(seed=9, budget=10)
    resumed = parse_sweep(yaml.safe_load(dump_resolved(spec)), "sweep.yaml")
    assert resumed.search == spec.search


@pytest.mark.parametrize(
    "search, message",
    [
        ({"strategy": "random"}, "search.budget_trials: required with strategy 'random'"),
        ({"strategy": "annealing", "budget_trials": 3}, "search.strategy"),
        ({"strategy": "random", "budget_trials": 0}, "search.budget_trials"),
    ],
)
def test_a_bad_search_group_is_one_line_naming_the_key(search, message):
    with pytest.raises(SpecError) as err:
        parse_sweep({**SWEEP, "search": search}, "rnd.yaml")
    text = str(err.value)
    assert "\n" not in text and text.startswith("rnd.yaml: ") and message in text


def test_the_search_group_takes_optuna_and_an_objective():
    spec = parse_sweep({**SWEEP, "search": {"strategy": "optuna", "budget_trials": 5, "objective": "latency"}}, "rnd.yaml")
    assert (spec.search.strategy, spec.search.objective) == ("optuna", "latency")
    assert parse_sweep(SWEEP, "rnd.yaml").search.objective == "throughput"
    with pytest.raises(SpecError, match="search.budget_trials: required with strategy 'optuna'"):
        parse_sweep({**SWEEP, "search": {"strategy": "optuna"}}, "rnd.yaml")
    with pytest.raises(SpecError, match="search.objective"):
        parse_sweep({**SWEEP, "search": {"objective": "cost"}}, "rnd.yaml")
