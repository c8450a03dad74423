"""The contract of every search strategy (every entry of sweeper.search.STRATEGIES):
each proposed trial is a point of the declared axes (made by plan.make_trial), failures
are observed like successes, and the search ends within its stated total. A deliberately
bad strategy shows that the check fails for a trial off the axes."""

from __future__ import annotations

import pytest

from sweeper.trialresult import TrialResult
from sweeper.plan import ORDERS, expand, make_trial, order, points, space
from sweeper.search import STRATEGIES, SearchOptions, Strategy
from sweeper.sweepfile import parse_sweep

SPEC = parse_sweep(
    {
        "name": "contract",
        "model": {"name": "mlp", "batch_size": [1, 8], "max_batch_delay_ms": [5, 50]},
        "env": {"OMP_NUM_THREADS": [1, 2]},
        "load": [{"mode": "closed", "concurrency": [1, 4], "duration_s": 1}, {"mode": "open", "rate_rps": 10, "duration_s": 1}],
        "settings": {"repeats": 2},
    },
    "contract.yaml",
)


def check_strategy(strategy, spec, axes) -> int:
    """Drive `strategy` to its end as the runner would (every other run fails); raise
    AssertionError on a broken contract. Returns how many trials it proposed."""
    assert isinstance(strategy, Strategy)
    on_axes = {make_trial(spec, point, r) for point in points(axes) for r in range(spec.settings.repeats)}
    proposed = 0
    while (trial := strategy.suggest()) is not None:
        assert trial in on_axes, f"trial {trial.key} is not a point of the declared axes: {trial}"
        proposed += 1
        assert proposed <= strategy.total, f"proposed more than its total of {strategy.total}"
        status = "ok" if proposed % 2 else "failed"
        row = {"status": status, "error": "" if status == "ok" else "it broke", "client_success_rate": 1.0,
               "client_throughput_rps": 10.0 * trial.model.batch_size, "client_latency_p99_ms": 5.0}
        strategy.observe(trial, TrialResult(trial, row, key=trial.key))
    assert strategy.suggest() is None, "a finished search must stay finished"
    return proposed


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_proposes_points_of_the_axes_only(name):
    axes = space(SPEC)
    strategy = STRATEGIES[name](SPEC, axes, SearchOptions(seed=7, budget=6))
    assert check_strategy(strategy, SPEC, axes) > 0


@pytest.mark.parametrize("how", ORDERS)
def test_the_grid_proposes_every_run_once_in_the_sweeps_order(how):
    spec = SPEC.model_copy(update={"settings": SPEC.settings.model_copy(update={"order": how, "seed": 3})})
    grid = STRATEGIES["grid"](spec, space(spec), SearchOptions())
    keys = []
    while (trial := grid.suggest()) is not None:
        keys.append(trial.key)
    expected = [t.key for t in order(expand(spec), how, 3)]
    assert keys == expected and grid.total == len(expected) == 2 * 2 * 2 * 3 * 2


class OffAxis:
    """Proposes one batch size the sweep never declared."""

    def __init__(self, spec, axes, options=None):
        first = next(points(axes))
        self._trials = [make_trial(spec, first, 0), make_trial(spec, {**first, "model.batch_size": 3}, 0)]

    @property
    def total(self):
        return 2

    def suggest(self):
        return self._trials.pop(0) if self._trials else None

    def observe(self, trial, result):
        pass


def test_the_contract_fails_for_a_strategy_that_proposes_off_its_axes():
    axes = space(SPEC)
    with pytest.raises(AssertionError, match="not a point of the declared axes"):
        check_strategy(OffAxis(SPEC, axes), SPEC, axes)
