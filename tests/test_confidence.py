"""sweeper.analysis.confidence on synthetic data: intervals cover what they should, the
winner/runner-up verdict and the repeats advice, and the findings' statistics."""

import json
import math

import numpy as np
import pytest

from sweeper.analysis import confidence as ci


def _noisy(mean, sd, repeats, windows, seed):
    rng = np.random.default_rng(seed)
    return [list(rng.normal(mean, sd, windows)) for _ in range(repeats)]


@pytest.mark.parametrize(
    "group, known, lo_below, hi_above",
    [
        ([[100.0]], False, None, None),  # one value: no interval
        ([[100.0], [110.0]], True, 100.0, 110.0),  # two repeats: about their range
        ([[100.0, 101.0, 99.0], [100.5, 99.5, 100.0]], True, 99.2, 100.8),
        ([[], [5.0, 5.0]], True, 5.0, 5.0),  # an empty repeat (failed) is left out
    ],
)
def test_interval_table(group, known, lo_below, hi_above):
    (iv,) = ci.intervals([group])
    assert iv.known is known
    assert iv.estimate == pytest.approx(ci.point_mean(group))
    if known:
        assert iv.lo <= iv.estimate <= iv.hi
        assert iv.lo >= lo_below - 1e-9 and iv.hi <= hi_above + 1e-9


def test_interval_covers_the_true_mean_about_95_percent():
    # 5 repeats x 6 windows, between-repeat drift sd 3 and window noise sd 5 around 100
    hits = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        group = [list(100 + rng.normal(0, 3) + rng.normal(0, 5, 6)) for _ in range(5)]
        (iv,) = ci.intervals([group], n_boot=400, seed=seed)
        hits += iv.lo <= 100 <= iv.hi
    assert hits >= 45  # the bootstrap is a little optimistic with 5 repeats; not absurdly


def test_interval_narrows_with_more_repeats():
    few = ci.intervals([_noisy(100, 10, 2, 5, 1)])[0]
    many = ci.intervals([_noisy(100, 10, 12, 5, 1)])[0]
    assert many.hi - many.lo < few.hi - few.lo


@pytest.mark.parametrize(
    "a, b, higher, verdict",
    [
        (_noisy(120, 2, 4, 5, 1), _noisy(100, 2, 4, 5, 2), True, ci.BETTER),
        (_noisy(100, 8, 3, 5, 3), _noisy(99, 8, 3, 5, 4), True, ci.NOT_DISTINGUISHABLE),
        ([[120.0]], [[100.0]], True, ci.UNKNOWN),  # one value each
        (_noisy(10, 0.2, 3, 5, 5), _noisy(20, 0.2, 3, 5, 6), False, ci.BETTER),  # p99: lower wins
        (_noisy(20, 0.2, 3, 5, 5), _noisy(10, 0.2, 3, 5, 6), False, ci.NOT_DISTINGUISHABLE),
    ],
)
def test_compare_verdicts(a, b, higher, verdict):
    c = ci.compare(a, b, higher_is_better=higher)
    assert c.verdict == verdict
    if verdict == ci.BETTER:
        assert c.more_repeats == 0 and c.diff.excludes(0.0)
    if verdict == ci.NOT_DISTINGUISHABLE:
        assert not c.diff.excludes(0.0) or not higher
        assert c.advice


def test_more_repeats_estimate_follows_the_square_root_law():
    # difference 5, half-width 10 at 2 repeats: (10/5)^2 * 2 = 8 needed, 6 more
    assert ci.more_repeats(ci.Interval(5.0, -5.0, 15.0, repeats=2, values=10), 2) == 6
    assert ci.more_repeats(ci.Interval(5.0, -5.0, 15.0, repeats=1, values=5), 1) is None
    assert ci.more_repeats(ci.Interval(0.1, -10.0, 10.2, repeats=3, values=15), 3) is None  # ~equal
    # and the advice holds up: with that many repeats the same effect separates
    rng = np.random.default_rng(7)
    a = [[100 + rng.normal(0, 4)] for _ in range(3)]
    b = [[97 + rng.normal(0, 4)] for _ in range(3)]
    first = ci.compare(a, b)
    if first.verdict == ci.NOT_DISTINGUISHABLE and first.more_repeats:
        n = 3 + first.more_repeats
        a2 = [[100 + rng.normal(0, 4)] for _ in range(4 * n)]
        b2 = [[97 + rng.normal(0, 4)] for _ in range(4 * n)]
        assert ci.compare(a2, b2).verdict == ci.BETTER


def test_findings_statistics():
    best, mid, worst = _noisy(1000, 20, 3, 4, 1), _noisy(600, 20, 3, 4, 2), _noisy(120, 10, 3, 4, 3)
    r = ci.statistic_interval([best, mid, worst], ci.ratio(0, 2))
    assert r.known and r.lo > 1.0 and r.lo <= r.estimate <= r.hi and ci.effect_verdict(r, 1.0) == ""
    change = ci.statistic_interval([best, mid, worst], ci.mean_change([2], [0, 1]))
    assert change.hi < 0 and ci.effect_verdict(change, 0.0) == ""
    rho = ci.statistic_interval([best, mid, worst], ci.spearman_with([2.5, 3.0, 4.9]))
    assert rho.estimate == pytest.approx(-1.0)


def test_findings_noise_is_called_noise():
    # six configurations 1 req/s apart, each measured 400 and 600: the order is noise
    groups = [[[400.0 + k], [600.0 + k]] for k in range(6)]
    change = ci.statistic_interval(groups, ci.mean_change([0, 1, 2], [3, 4, 5]))
    assert "noise" in ci.effect_verdict(change, 0.0)
    rho = ci.statistic_interval(groups, ci.spearman_with([1, 2, 3, 4, 5, 6]))
    assert rho.lo < 0 < rho.hi and "noise" in ci.effect_verdict(rho, 0.0)
    one = ci.statistic_interval([[[1.0]], [[2.0]], [[3.0]]], ci.ratio(2, 0))
    assert not one.known and "add repeats" in ci.effect_verdict(one, 1.0)


@pytest.mark.parametrize(
    "cell, expected",
    [
        (None, []),
        (math.nan, []),
        ("", []),
        ("not json", []),
        (json.dumps([{"rps": 10.0, "p99_ms": 5.0}, {"rps": 12.0, "p99_ms": None}]), [10.0, 12.0]),
        (json.dumps([{"rps": 1.0, "used": False}, {"rps": 2.0, "used": True}]), [2.0]),
    ],
)
def test_window_values(cell, expected):
    assert ci.window_values(cell, "rps") == expected


def test_repeat_samples_fall_back_to_the_row_figure():
    rows = [
        {"client_windows": json.dumps([{"rps": 10.0}, {"rps": 11.0}]), "client_throughput_rps": 10.5},
        {"client_windows": None, "client_throughput_rps": 9.0},
        {"client_windows": None, "client_throughput_rps": None},  # a failed repeat
    ]
    assert ci.repeat_samples(rows, "client_throughput_rps", "rps") == [[10.0, 11.0], [9.0]]
