"""plan.order: grouped / interleaved / random run orders, and what each costs in server
starts and model registrations (plan.costs)."""

from __future__ import annotations

import pytest

from sweeper.plan import costs, default_order, order

from test_plan import plan  # the 4-group grid: 2 netty x 2 threads, 6 model settings, 3 loads

GROUPS, MODELS, LOADS = 4, 6, 3


def _runs(trials):
    return [(t.trial_id, t.repeat) for t in trials]


@pytest.mark.parametrize("repeats", [1, 2, 3])
@pytest.mark.parametrize("how", ["grouped", "interleaved", "random"])
def test_every_order_runs_every_trial_and_repeat_once(how, repeats):
    trials = plan(settings={"repeats": repeats})
    ordered = order(trials, how, seed=1)
    assert sorted(_runs(ordered)) == sorted(_runs(trials))


@pytest.mark.parametrize(
    "how, repeats, starts, registrations",
    [
        ("grouped", 2, GROUPS, GROUPS * MODELS),  # repeats back to back
        ("interleaved", 1, GROUPS, GROUPS * MODELS),  # one repeat: the grouped order
        ("interleaved", 2, 2 * GROUPS - 1, 2 * GROUPS * MODELS - 1),  # a pass starts where the last ended
        ("interleaved", 3, 3 * GROUPS - 2, 3 * GROUPS * MODELS - 2),
        ("random", 2, 2 * GROUPS - 1, None),
        ("random", 3, 3 * GROUPS - 2, None),
    ],
)
def test_costs_of_each_order(how, repeats, starts, registrations):
    got = costs(order(plan(settings={"repeats": repeats}), how, seed=3))
    assert got[0] == starts
    if registrations is not None:
        assert got[1] == registrations
    else:  # blocks keep registrations to one per model setting per pass, at most
        assert got[1] <= repeats * GROUPS * MODELS


def test_interleaved_runs_every_trial_before_any_second_repeat():
    ordered = order(plan(), "interleaved")
    n = len(ordered) // 2
    assert {t.repeat for t in ordered[:n]} == {0} and {t.repeat for t in ordered[n:]} == {1}
    # and repeats of one trial are never back to back
    assert all(a.trial_id != b.trial_id for a, b in zip(ordered, ordered[1:]))


def test_random_is_seeded_and_differs_between_passes():
    trials = plan(settings={"repeats": 2})
    a, b = order(trials, "random", seed=7), order(trials, "random", seed=7)
    assert _runs(a) == _runs(b)
    assert _runs(order(trials, "random", seed=8)) != _runs(a)
    n = len(a) // 2
    assert [t.trial_id for t in a[:n]] != [t.trial_id for t in a[n:]]


def test_default_order_and_bad_name():
    assert default_order(1) == "grouped" and default_order(2) == "interleaved"
    with pytest.raises(ValueError, match="order must be one of"):
        order(plan(), "shuffled")


@pytest.mark.parametrize(
    "changes",
    [
        {"load": [{"mode": "closed", "concurrency": 4, "duration_s": 1}]},  # one load
        {"load": [{"mode": "closed", "concurrency": 4, "duration_s": 1}], "model": {"batch_size": 1, "max_batch_delay_ms": 5}},
        {"load": [{"mode": "closed", "concurrency": 4, "duration_s": 1}], "model": {"batch_size": 1, "max_batch_delay_ms": 5},
         "server": {"number_of_netty_threads": 1}, "env": {}},  # one trial: back to back is all there is
    ],
)
def test_interleaved_avoids_back_to_back_repeats_when_it_can(changes):
    trials = plan(settings={"repeats": 3}, **changes)
    ordered = order(trials, "interleaved")
    same = sum(a.trial_id == b.trial_id for a, b in zip(ordered, ordered[1:]))
    assert same == (2 if len({t.trial_id for t in trials}) == 1 else 0)


@pytest.mark.parametrize("how, repeats", [("grouped", 2), ("interleaved", 2), ("interleaved", 3), ("random", 2)])
def test_kept_registrations_register_each_setting_once_per_server(how, repeats):
    """settings.keep_registered: a setting registers the first time it runs on a server;
    a later pass on the same server uses the kept registration. Interleaving across
    server groups restarts servers, so there only the stint a pass continues gains."""
    trials = order(plan(settings={"repeats": repeats}), how, seed=3)
    starts, registrations, _ = costs(trials, keep_registered=True)
    assert starts == costs(trials)[0]
    stints = []
    for t in trials:
        if not stints or stints[-1][0] != t.group_id:
            stints.append((t.group_id, set()))
        stints[-1][1].add(t.model)
    assert registrations == sum(len(models) for _, models in stints)
    assert registrations <= costs(trials)[1]
    if how == "interleaved":  # the group a pass continues on registers its settings once
        assert registrations == (repeats * GROUPS - (repeats - 1)) * MODELS
