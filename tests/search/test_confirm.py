"""search.confirm: after a search, its best feasible configurations are measured again
(settings.repeats more repeats each, interleaved) before the recommendation ranks them;
it survives an interrupt like the search itself (fake executor, no TorchServe)."""

from __future__ import annotations

from collections import Counter

import pytest

from sweeper.analysis.objective import config_score
from sweeper.errors import Interrupted
from sweeper.plan import space
from sweeper.runner import run_sweep
from sweeper.search import Confirm, GridSearch, make_strategy, search_options
from sweeper.sweepfile import parse_sweep

from test_optuna import SWEEP, FakeExecutor, a_context, drive, surface

pytest.importorskip("optuna")


def a_spec(**search):
    return parse_sweep({**SWEEP, "search": {**SWEEP["search"], **search}}, "tpe.yaml")


def top_by_surface(runs, spec, k):
    """The k best feasible configurations among `runs` (repeats 0 and 1), computed here
    from the rows the fake produced, independently of Confirm."""
    by_id = {}
    for t in runs:
        if t.repeat < spec.settings.repeats:
            by_id.setdefault(t.trial_id, []).append(surface(t))
    scores = {i: config_score(rows, "closed", spec.settings.slo_p99_ms) for i, rows in by_id.items()}
    feasible = sorted((s.value, i) for i, s in scores.items() if s.feasible)
    return [i for _, i in reversed(feasible)][:k]


@pytest.mark.parametrize("strategy", ["optuna", "random"])
def test_the_top_feasible_configurations_get_more_repeats_interleaved(strategy):
    spec = a_spec(strategy=strategy, budget_trials=10)
    search = make_strategy(spec, space(spec), search_options(spec))
    assert isinstance(search, Confirm) and search.top == 3  # the default for a search
    runs = drive(search)
    assert search.total == 10 * 2 + 3 * 2 == len(runs)
    searched, confirmed = runs[:20], runs[20:]
    assert {t.repeat for t in searched} == {0, 1} and len({t.trial_id for t in searched}) == 10
    best = top_by_surface(searched, spec, 3)
    assert search.candidates == best
    assert Counter(t.trial_id for t in confirmed) == {i: 2 for i in best}
    # interleaved: every candidate's repeat 2 before any repeat 3; no key measured twice
    assert [t.repeat for t in confirmed] == [2, 2, 2, 3, 3, 3]
    assert len({t.key for t in runs}) == len(runs)
    assert "confirming the top 3" in search.status()


def test_the_search_itself_is_told_only_its_own_repeats():
    spec = a_spec(budget_trials=6)
    search = make_strategy(spec, space(spec), search_options(spec))
    drive(search)
    told = [t for t in search.inner.study.trials if "reused" not in t.user_attrs]
    assert len(told) == 6  # the confirmation runs are not new Optuna trials


def test_nothing_to_confirm_with_fewer_than_two_feasible_configurations():
    spec = a_spec(budget_trials=6)
    search = make_strategy(spec, space(spec), search_options(spec))

    def all_too_slow(trial):
        return {**surface(trial), "client_latency_p99_ms": 500.0}

    runs = drive(search, all_too_slow)
    assert len(runs) == 12 and search.candidates == []


def test_a_grid_confirms_nothing_unless_asked():
    spec = parse_sweep({**SWEEP, "search": {"strategy": "grid"}}, "g.yaml")
    assert isinstance(make_strategy(spec, space(spec), search_options(spec)), GridSearch)
    spec = parse_sweep({**SWEEP, "search": {"strategy": "grid", "confirm": 2}}, "g.yaml")
    search = make_strategy(spec, space(spec), search_options(spec))
    runs = drive(search)
    assert len(runs) == 60 * 2 + 2 * 2 and {t.repeat for t in runs[-4:]} == {2, 3}
    spec = a_spec(confirm=0)
    assert not isinstance(make_strategy(spec, space(spec), search_options(spec)), Confirm)


@pytest.mark.parametrize("interrupt_at", [21, 24])
def test_an_interrupted_confirmation_resumes_with_the_same_candidates_and_no_duplicates(tmp_path, interrupt_at):
    spec = a_spec(budget_trials=10)
    first = FakeExecutor(interrupt_at)
    with pytest.raises(Interrupted):
        run_sweep(a_context(tmp_path, spec), make_strategy(spec, space(spec), search_options(spec, tmp_path)), first)
    second = FakeExecutor()
    resumed = make_strategy(spec, space(spec), search_options(spec, tmp_path))
    outcome = run_sweep(a_context(tmp_path, spec), resumed, second)
    # only the run in flight at the interrupt ran twice
    assert set(first.submitted) & set(second.submitted) == {first.submitted[-1]}
    assert len(first.submitted) - 1 + len(second.submitted) == 26
    rows = [r for r in outcome.rows if r["status"] == "ok"]
    assert len(rows) == 26 and len({(r["trial_id"], r["repeat"]) for r in rows}) == 26
    extra = Counter(r["trial_id"] for r in rows if r["repeat"] >= 2)
    assert set(extra) == set(resumed.candidates) and set(extra.values()) == {2}


def test_a_negative_confirm_is_one_line_naming_the_key():
    with pytest.raises(Exception, match=r"search\.confirm"):
        a_spec(confirm=-1)
