"""The duel's paired statistics (sweeper.analysis.paired), pure and table-driven: the
ABBA / BAAB schedule, the signed-rank interval, a drift common to both cancelling, a 3%
difference separated through 2% block noise, identical configurations not separated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweeper.analysis import paired as p

BLOCKS = 56


def _blocks(ratio: float, order, drift=lambda i: 1.0, noise: float = 0.0, seed: int = 0, base: float = 1000.0):
    """Per-block figures: A's are `ratio` times B's, both times the machine's `drift` of the
    block, each times its own lognormal noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i, target in enumerate(order):
        level = base * drift(i) * (ratio if target == p.A else 1.0)
        out.append(level * math.exp(noise * rng.standard_normal()))
    return out


# --- the schedule ----------------------------------------------------------------------


def test_every_quad_is_abba_or_baab_and_both_orders_occur():
    order = p.schedule(40, seed=3)
    quads = {order[i : i + 4] for i in range(0, len(order), 4)}
    assert len(order) == 160
    assert quads == {(p.A, p.B, p.B, p.A), (p.B, p.A, p.A, p.B)}


@pytest.mark.parametrize("quads", [1, 3, 14])
def test_each_quad_gives_both_the_same_mean_time(quads):
    """A linear drift over a quad falls on A and B alike: their blocks' mean positions agree."""
    order = p.schedule(quads, seed=1)
    for q in range(quads):
        quad = order[4 * q : 4 * q + 4]
        pos = {t: [4 * q + i for i, o in enumerate(quad) if o == t] for t in (p.A, p.B)}
        assert len(pos[p.A]) == len(pos[p.B]) == 2
        assert sum(pos[p.A]) == sum(pos[p.B])


def test_the_schedule_is_seeded():
    assert p.schedule(14, seed=7) == p.schedule(14, seed=7)
    assert p.schedule(14, seed=7) != p.schedule(14, seed=8)
    assert p.schedule(0) == ()
    with pytest.raises(ValueError):
        p.schedule(-1)


def test_every_pair_holds_one_block_of_each():
    values = [1.0, 2.0, 3.0, 4.0]
    assert p.pair_log_ratios(values, (p.A, p.B, p.B, p.A)) == pytest.approx([math.log(1 / 2), math.log(4 / 3)])
    with pytest.raises(ValueError, match="one block of each"):
        p.pair_log_ratios(values, (p.A, p.A, p.B, p.B))
    with pytest.raises(ValueError, match="pairs"):
        p.pair_log_ratios(values[:3], (p.A, p.B, p.B))


# --- the interval ------------------------------------------------------------------------


# The two-sided 5% critical values of the signed-rank statistic (T <= c rejects), from the
# published tables: the interval's bounds are the (c + 1)-th Walsh averages from each end.
@pytest.mark.parametrize("n, critical", [(6, 0), (7, 2), (8, 3), (10, 8), (12, 13), (15, 25), (20, 52), (25, 89), (30, 137)])
def test_signed_rank_critical_values_match_the_tables(n, critical):
    assert p._critical_rank(n, 0.95) == critical + 1


def test_five_pairs_are_too_few_for_a_95_percent_interval():
    est, lo, hi = p.signed_rank_interval([0.1, 0.2, 0.3, 0.4, 0.5])
    assert est == pytest.approx(0.3) and lo == -math.inf and hi == math.inf
    assert p.verdict(0.0, math.inf, True) == p.NOT_DISTINGUISHABLE


def test_the_normal_approximation_continues_the_exact_interval():
    exact = p._critical_rank(p.EXACT_MAX_PAIRS, 0.95)
    approx = p._critical_rank(p.EXACT_MAX_PAIRS + 1, 0.95)
    assert abs(approx - exact) / exact < 0.01


def test_one_wild_pair_does_not_move_the_estimate():
    d = [0.03, 0.031, 0.029, 0.03, 0.032, 0.028, 0.03, 0.031, 0.029, 0.03, 0.6, 0.03]
    est, lo, hi = p.signed_rank_interval(d)
    assert est == pytest.approx(0.03, abs=0.002) and lo > 0.025 and hi < 0.04


# --- the verdict, table-driven -------------------------------------------------------------


def _linear(i: int) -> float:
    return 1.0 + 0.5 * i / BLOCKS  # the machine gets 50% faster over the duel


def _step(i: int) -> float:
    return 1.4 if i >= BLOCKS // 2 + 1 else 1.0  # 40% faster from a block in mid-pair on


def _square(i: int) -> float:
    return 0.6 if (i // 10) % 2 == 0 else 1.0  # a burner on for 10 blocks, off for 10


@pytest.mark.parametrize("drift", [_linear, _step, _square], ids=["linear", "step", "square"])
@pytest.mark.parametrize("ratio, verdict", [(1.0, p.NOT_DISTINGUISHABLE), (1.05, p.A_BETTER), (1 / 1.05, p.B_BETTER)])
def test_a_drift_common_to_both_cancels(drift, ratio, verdict):
    order = p.schedule(BLOCKS // 4, seed=11)
    got = p.paired_ratio(_blocks(ratio, order, drift), order)
    assert got.verdict == verdict
    assert got.ratio == pytest.approx(ratio, rel=1e-3)  # a 50% drift leaves less than 0.1%
    assert got.ci_low * (1 - 1e-9) <= ratio <= got.ci_high * (1 + 1e-9)
    assert got.pairs == BLOCKS // 2 and got.dropped == 0


def test_unpaired_halves_are_fooled_by_the_same_drift():
    """The same blocks read as two sequential measurements (A's first half, B's second, as
    a sweep without repeats would) take the drift for the configurations'."""
    order = (p.A,) * (BLOCKS // 2) + (p.B,) * (BLOCKS // 2)
    values = _blocks(1.0, order, _linear)
    assert np.mean(values[BLOCKS // 2 :]) / np.mean(values[: BLOCKS // 2]) > 1.2


def test_a_3_percent_difference_with_2_percent_block_noise_is_separated():
    """Under a drift, 20 seeded duels of 56 one-second blocks: every one says A is better,
    and the interval covers the true ratio in all but its 5% share."""
    got = []
    for seed in range(20):
        order = p.schedule(BLOCKS // 4, seed=seed)
        got.append(p.paired_ratio(_blocks(1.03, order, _square, noise=0.02, seed=seed), order))
    assert [g.verdict for g in got] == [p.A_BETTER] * 20
    assert sum(g.ci_low <= 1.03 <= g.ci_high for g in got) >= 18


def test_identical_configurations_are_not_distinguishable():
    """No more than the interval's 5% miss rate: of 200 seeded duels with 2% block noise
    and a drift, at least 93% say "not distinguishable"."""
    said = []
    for seed in range(200):
        order = p.schedule(BLOCKS // 4, seed=seed)
        said.append(p.paired_ratio(_blocks(1.0, order, _square, noise=0.02, seed=1000 + seed), order).verdict)
    assert said.count(p.NOT_DISTINGUISHABLE) >= 186, said.count(p.NOT_DISTINGUISHABLE)


@pytest.mark.parametrize(
    "ratio, higher_is_better, verdict",
    [
        (0.9, False, p.A_BETTER),  # A's latency 10% lower
        (1.1, False, p.B_BETTER),
        (1.1, True, p.A_BETTER),  # A's throughput 10% higher
    ],
)
def test_the_verdict_follows_the_figure(ratio, higher_is_better, verdict):
    order = p.schedule(6, seed=0)
    got = p.paired_ratio(_blocks(ratio, order, noise=0.01, seed=4), order, higher_is_better)
    assert got.verdict == verdict


def test_a_block_that_served_nothing_drops_its_pair():
    order = p.schedule(6, seed=2)
    values = _blocks(1.05, order, noise=0.01, seed=5)
    values[3] = 0.0
    values[8] = math.nan
    got = p.paired_ratio(values, order)
    assert got.pairs == 10 and got.dropped == 2
    assert got.verdict == p.A_BETTER


# --- how many blocks would separate them ---------------------------------------------------


def test_blocks_to_separate_follows_the_sample_size_rule():
    # half-width 0.02941 on the log scale, effect 0.01980: (0.02941 * (1.960 + 0.842) / 1.960 / 0.01980)^2 = 4.508
    assert p.blocks_to_separate(1.02, 0.99, 1.05, 56) == 256  # 56 x 4.508 = 252.4, up to a whole quad
    assert p.blocks_to_separate(1 / 1.02, 1 / 1.05, 1 / 0.99, 56) == 256  # B better: the same
    assert p.blocks_to_separate(1.0, 0.97, 1.03, 56) is None  # nothing to separate
    assert p.blocks_to_separate(1.02, 0.0, math.inf, 56) is None  # too few pairs for an interval
    assert p.blocks_to_separate(1.02, 0.99, 1.05, 0) is None


def test_the_blocks_it_names_separate_the_difference_four_times_in_five():
    """With the true difference (3%) and the typical interval of 56-block duels at 6% block
    noise, the blocks it names separate it in about 80% of 300 seeded duels of that length
    (the exact power of a signed-rank interval is a little off the normal rule's)."""
    halves = []
    for seed in range(40):
        order = p.schedule(BLOCKS // 4, seed=seed)
        got = p.paired_ratio(_blocks(1.03, order, noise=0.06, seed=seed), order)
        halves.append((math.log(got.ci_high) - math.log(got.ci_low)) / 2)
    half = float(np.median(halves))
    need = p.blocks_to_separate(1.03, 1.03 * math.exp(-half), 1.03 * math.exp(half), BLOCKS)
    assert BLOCKS < need < 4 * BLOCKS
    separated = 0
    for seed in range(1000, 1300):
        order = p.schedule(need // 4, seed=seed)
        separated += p.paired_ratio(_blocks(1.03, order, noise=0.06, seed=seed), order).verdict == p.A_BETTER
    assert 0.70 <= separated / 300 <= 0.92, (need, separated)
