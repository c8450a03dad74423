"""Two configurations measured head to head (`sweeper duel`): the order of their blocks,
the paired ratio with its confidence interval, and the verdict. Pure (numpy only).

**The schedule.** The load alternates between the two targets in blocks of equal length,
four at a time: ABBA or BAAB, chosen at random for each quad (seeded, so a duel can be
replayed). Each quad gives both the same mean time, so a drift of the machine that is
linear over a quad falls on both alike; the random choice turns what is left (a step, a
burst, a periodic load whose period lines up with the quads) into noise of either sign
instead of a bias towards one of them.

**The unit.** Each quad holds two adjacent pairs of blocks, one of each target (AB then
BA, or BA then AB); each pair gives log(A) - log(B) of the figure (throughput, or latency
at a rate). Within a quad the two pairs' share of a linear drift is equal and opposite,
so it cancels in their median; a step of the machine lands in one pair, not in a whole
quad.

**The interval.** The Hodges-Lehmann estimate of the pairs' log ratios (the median of all
their pairwise means) with the exact 95% interval of the Wilcoxon signed-rank test,
back-transformed to a ratio A/B. Why not a t-interval over quads or a bootstrap: a
drift that changes inside a block (a burner switching on, a neighbour's burst) makes a
few pairs far off, of either sign; one such pair inflates the standard deviation that a
t-interval rests on, and a bootstrap over 10-30 units undercovers. The signed-rank
interval only assumes the pairs' values are symmetric around the true log ratio, which
the random quad order provides; it is distribution-free and loses little against the
t-interval when there are no outliers. In 2,000 simulated duels of 56 one-second blocks
under a 20 s on / 20 s off drift (benchmarks/bench_duel.py --simulate), it separated a 3%
difference with 2% block noise in 97% of them against 50% for a t-interval over quads
(4% noise: 59% against 38%), and both covered the true ratio in 94-96%.

**The verdict.** "A better" or "B better" when the interval excludes a ratio of 1 (for
throughput higher is better, for latency lower), otherwise "not distinguishable at this
budget": more blocks would narrow it as about 1/sqrt(blocks). `blocks_to_separate` says
how many: the usual sample-size rule for a paired test, with the spread the pairs had and
the estimate taken as the true difference, at 80% power (an interval that just excludes 1
at the estimate would do so only half the time).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np

A, B = 0, 1
LEVEL = 0.95
A_BETTER = "A better"
B_BETTER = "B better"
NOT_DISTINGUISHABLE = "not distinguishable at this budget"
VERDICTS = (A_BETTER, B_BETTER, NOT_DISTINGUISHABLE)
QUAD = 4
# A duel's first quad is a lead-in, not measured: the engine's connections and the
# server's queues reach their steady state with both targets (sweeper.duel).
LEAD_IN_QUADS = 1
# Above this many pairs the signed-rank statistic's normal approximation is used
# (the exact distribution would need n^2/4 terms; at this size the two agree to a rank).
EXACT_MAX_PAIRS = 600


def schedule(quads: int, seed: int = 0) -> tuple[int, ...]:
    """Which target each block serves (A = 0, B = 1): `quads` quads, each ABBA or BAAB at
    random (seeded)."""
    if quads < 0:
        raise ValueError(f"quads must be >= 0, got {quads}")
    rng = random.Random(seed)
    out: list[int] = []
    for _ in range(quads):
        out += (A, B, B, A) if rng.random() < 0.5 else (B, A, A, B)
    return tuple(out)


def pair_log_ratios(values: Sequence[float], order: Sequence[int]) -> np.ndarray:
    """log(A) - log(B) of each adjacent pair of blocks (blocks 0-1, 2-3, ...), from the
    blocks' figures (`values`) and which target each served (`order`). A pair with a
    figure that is not a positive number (nothing served in a block) gives NaN."""
    v = np.asarray(values, dtype=float)
    o = np.asarray(order, dtype=int)
    if len(v) != len(o):
        raise ValueError(f"{len(v)} block values for {len(o)} blocks")
    if len(v) % 2:
        raise ValueError(f"blocks come in pairs, got {len(v)}")
    v, o = v.reshape(-1, 2), o.reshape(-1, 2)
    if np.any(o[:, 0] == o[:, 1]):
        raise ValueError("every pair of blocks must hold one block of each target")
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)
    a_first = o[:, 0] == A
    return np.where(a_first, logs[:, 0] - logs[:, 1], logs[:, 1] - logs[:, 0])


def _signed_rank_cdf(n: int) -> np.ndarray:
    """P(T <= t), t = 0..n(n+1)/2, for the Wilcoxon signed-rank statistic of n pairs under
    the null hypothesis (every sign equally likely)."""
    total = n * (n + 1) // 2
    p = np.zeros(total + 1)
    p[0] = 1.0
    for r in range(1, n + 1):
        shifted = np.zeros_like(p)
        shifted[r:] = p[: total + 1 - r]
        p = (p + shifted) / 2.0
    return np.cumsum(p)


def _critical_rank(n: int, level: float) -> int | None:
    """The 1-based index c of the Walsh averages that bounds the signed-rank interval:
    [W_(c), W_(M + 1 - c)]. None when n pairs cannot give an interval at this level."""
    alpha = (1.0 - level) / 2.0
    if n <= EXACT_MAX_PAIRS:
        cdf = _signed_rank_cdf(n)
        below = np.nonzero(cdf <= alpha + 1e-12)[0]
        return int(below[-1]) + 1 if len(below) else None
    mean = n * (n + 1) / 4.0
    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
    z = _normal_quantile(1.0 - alpha)
    return max(1, int(math.floor(mean - z * sd + 0.5)))


def _normal_quantile(p: float) -> float:
    """The standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - 0.02425:
        return -_normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (
        ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def signed_rank_interval(d: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(Hodges-Lehmann estimate, low, high) of the centre of `d`: the median of the Walsh
    averages (d_i + d_j) / 2, i <= j, and the exact signed-rank interval between two of
    them. NaN values are left out; with too few values for an interval at `level` the
    bounds are -inf and +inf."""
    x = np.asarray(d, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return math.nan, -math.inf, math.inf
    i, j = np.triu_indices(n)
    walsh = np.sort((x[i] + x[j]) / 2.0)
    estimate = float(np.median(walsh))
    c = _critical_rank(n, level)
    if c is None:
        return estimate, -math.inf, math.inf
    return estimate, float(walsh[c - 1]), float(walsh[len(walsh) - c])


POWER_Z = 0.8416  # the normal quantile at 80%: the power blocks_to_separate aims at


def blocks_to_separate(ratio: float, ci_low: float, ci_high: float, blocks: int, level: float = LEVEL) -> int | None:
    """About how many measured blocks (whole quads) a duel of the same pairs' spread needs
    to tell a true ratio of `ratio` from 1 in 4 duels of 5: the interval's half-width on
    the log scale shrinks as 1/sqrt(blocks), and the interval must clear 1 by the power
    margin. None when the ratio is 1 or the interval is not a finite one."""
    values = (ratio, ci_low, ci_high)
    if blocks <= 0 or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
        return None
    effect = abs(math.log(ratio))
    half = (math.log(ci_high) - math.log(ci_low)) / 2.0
    if effect == 0.0 or half <= 0.0:
        return None
    z = _normal_quantile(1.0 - (1.0 - level) / 2.0)
    need = blocks * (half * (z + POWER_Z) / z / effect) ** 2
    return QUAD * max(1, math.ceil(need / QUAD))


def verdict(ci_low: float, ci_high: float, higher_is_better: bool) -> str:
    """The verdict on a ratio A/B from its interval: the interval above 1 means A's figure
    is higher (better for throughput, worse for latency)."""
    if ci_low > 1.0:
        return A_BETTER if higher_is_better else B_BETTER
    if ci_high < 1.0:
        return B_BETTER if higher_is_better else A_BETTER
    return NOT_DISTINGUISHABLE


@dataclass(frozen=True)
class Paired:
    """The ratio A/B of a figure over paired blocks, its interval and the verdict."""

    ratio: float  # exp(Hodges-Lehmann estimate of the pairs' log ratios)
    ci_low: float
    ci_high: float
    pairs: int  # pairs behind it (pairs with a block that served nothing are left out)
    dropped: int  # pairs left out
    verdict: str
    level: float = LEVEL


def paired_ratio(
    values: Sequence[float], order: Sequence[int], higher_is_better: bool = True, level: float = LEVEL
) -> Paired:
    """The paired comparison of the blocks' figures `values` (the targets in `order`)."""
    d = pair_log_ratios(values, order)
    kept = d[np.isfinite(d)]
    est, lo, hi = signed_rank_interval(kept, level)
    ratio, ci_low, ci_high = (math.exp(v) if math.isfinite(v) else (0.0 if v < 0 else math.inf) for v in (est, lo, hi))
    if math.isnan(est):
        ratio = math.nan
    return Paired(ratio, ci_low, ci_high, len(kept), len(d) - len(kept), verdict(ci_low, ci_high, higher_is_better), level)
