"""How sure a run is of its figures: bootstrap confidence intervals. Pure (numpy only).

A configuration's figure (throughput, p99) is measured as *repeats*, each made of
*windows* (settings.stability; an older run or a trial without windows has one value per
repeat). The bootstrap resamples both levels: draw the repeats with replacement, then,
within each drawn repeat, its windows with replacement, and take the mean of what was
drawn. Repeats carry the drift between runs (another tenant, a JIT, thermal state);
windows carry the noise within a run. The 2.5th and 97.5th percentiles of N_BOOT such
means are the 95% interval.

Everything that compares (winner vs runner-up, best/worst ratio, the effect of
oversubscribing the cores, a rank correlation) is computed on the same resampled means,
so each comparison gets its own interval and says plainly when the effect cannot be told
from noise.

Limits, said where they show: with two repeats and no windows the bootstrap can only
return the range of the two values (it understates the spread); with one value there is
no interval at all (`Interval.known` is False). A fixed seed makes every report
reproducible.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

LEVEL = 0.95
# Resamples per interval: the Monte Carlo error of a 2.5th/97.5th percentile of 2000
# bootstrap means is about 1% of the interval's width, well below what a reader compares,
# and a whole report's intervals take well under a second.
N_BOOT = 2000
# A fixed seed: the same results give the same intervals in results.md and report.html,
# and a rebuilt report does not move its bounds. Any value does; this one is arbitrary.
SEED = 12
# Beyond this many repeats "more repeats" is no advice: the two are about equal.
MAX_REPEATS_ADVICE = 50

BETTER = "better, with 95% confidence"
NOT_DISTINGUISHABLE = "not distinguishable; measure longer or add repeats"
UNKNOWN = "cannot tell: one measurement each, no spread known (add repeats or stability windows)"

Group = Sequence[Sequence[float]]  # one configuration: repeats, each a list of window values


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% bootstrap interval and how much data is behind it."""

    estimate: float
    lo: float
    hi: float
    repeats: int = 0  # repeats behind it (the smallest of the configurations compared)
    values: int = 0  # window values (or repeat values) behind it, the smallest likewise

    @property
    def known(self) -> bool:
        """An interval exists: at least two values and finite bounds."""
        return self.values >= 2 and math.isfinite(self.lo) and math.isfinite(self.hi)

    def excludes(self, value: float) -> bool:
        return self.known and (self.lo > value or self.hi < value)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0

    def text(self, digits: int = 1, unit: str = "") -> str:
        """'812.3 [790.1, 830.0]' or '812.3 (no interval: one value)'."""
        est = _f(self.estimate, digits)
        if not self.known:
            return f"{est}{unit} (no interval: one value)"
        return f"{est}{unit} [95% CI {_f(self.lo, digits)}–{_f(self.hi, digits)}{unit}]"


@dataclass(frozen=True)
class Comparison:
    """a minus b (a: the winner), with the verdict in words."""

    diff: Interval  # a - b, in the figure's unit
    relative: Interval  # a / b - 1
    verdict: str  # BETTER | NOT_DISTINGUISHABLE | UNKNOWN
    more_repeats: int | None  # likely extra repeats of each to separate them; None: unknown
    advice: str  # one sentence on what to do about it


# --- samples --------------------------------------------------------------------------


def window_values(windows_json: object, key: str) -> list[float]:
    """The per-window values of `key` from a client_windows cell (JSON list of objects;
    only the windows the trial's figures come from, marked "used", when marked)."""
    if windows_json is None or (isinstance(windows_json, float) and math.isnan(windows_json)):
        return []
    data = windows_json
    if isinstance(windows_json, str):
        if not windows_json.strip():
            return []
        try:
            data = json.loads(windows_json)
        except ValueError:
            return []
    if not isinstance(data, list):
        return []
    used = [w for w in data if isinstance(w, dict) and w.get("used", True)]
    out = []
    for w in used:
        v = w.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def repeat_samples(rows: Sequence[dict], figure: str, window_key: str) -> list[list[float]]:
    """One configuration's samples of `figure`: per repeat (row), its window values when the
    row has client_windows, else the row's own figure as one value. Rows without a finite
    figure (failed repeats) are left out."""
    out = []
    for row in rows:
        values = window_values(row.get("client_windows"), window_key)
        if not values:
            v = row.get(figure)
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(v):
                continue
            values = [v]
        out.append(values)
    return out


# --- the bootstrap --------------------------------------------------------------------


def resample_means(groups: Sequence[Group], n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """(n_boot, len(groups)) bootstrap means, two levels (repeats, then windows within each
    drawn repeat). A group without values gives a NaN column; one value, a constant one."""
    rng = np.random.default_rng(seed)
    out = np.full((n_boot, len(groups)), np.nan)
    for c, group in enumerate(groups):
        reps = [np.asarray(r, dtype=float) for r in group if len(r)]
        if not reps:
            continue
        n_rep = len(reps)
        width = max(len(r) for r in reps)
        values = np.full((n_rep, width), np.nan)
        counts = np.array([len(r) for r in reps])
        for i, r in enumerate(reps):
            values[i, : len(r)] = r
        pick = rng.integers(0, n_rep, size=(n_boot, n_rep))  # drawn repeats
        n = counts[pick]  # windows of each drawn repeat
        u = rng.random((n_boot, n_rep, width))
        idx = np.minimum((u * n[..., None]).astype(int), n[..., None] - 1)
        take = np.arange(width)[None, None, :] < n[..., None]  # draw n windows, not width
        drawn = values[pick[..., None], idx]
        out[:, c] = np.where(take, drawn, 0.0).sum(axis=(1, 2)) / take.sum(axis=(1, 2))
    return out


def point_mean(group: Group) -> float:
    """The estimate the bootstrap is centred on: the mean over all window values."""
    flat = [v for r in group for v in r]
    return float(np.mean(flat)) if flat else math.nan


def _interval(estimate: float, draws: np.ndarray, repeats: int, values: int) -> Interval:
    draws = draws[np.isfinite(draws)]
    if values < 2 or len(draws) == 0:
        return Interval(estimate, math.nan, math.nan, repeats, values)
    alpha = (1.0 - LEVEL) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return Interval(estimate, float(lo), float(hi), repeats, values)


def _size(group: Group) -> tuple[int, int]:
    reps = [r for r in group if len(r)]
    return len(reps), sum(len(r) for r in reps)


def intervals(groups: Sequence[Group], n_boot: int = N_BOOT, seed: int = SEED) -> list[Interval]:
    """The 95% interval of each configuration's mean."""
    draws = resample_means(groups, n_boot, seed)
    return [_interval(point_mean(g), draws[:, c], *_size(g)) for c, g in enumerate(groups)]


def compare(a: Group, b: Group, higher_is_better: bool = True, n_boot: int = N_BOOT, seed: int = SEED) -> Comparison:
    """Is configuration a (the winner) better than b (the runner-up)?"""
    draws = resample_means([a, b], n_boot, seed)
    ea, eb = point_mean(a), point_mean(b)
    ra, va = _size(a)
    rb, vb = _size(b)
    reps, values = min(ra, rb), min(va, vb)
    diff = _interval(ea - eb, draws[:, 0] - draws[:, 1], reps, values)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_draws = draws[:, 0] / draws[:, 1] - 1.0
    relative = _interval(ea / eb - 1.0 if eb else math.nan, rel_draws, reps, values)
    if not diff.known:
        return Comparison(diff, relative, UNKNOWN, None, "Run 3 or more repeats, or measure with stability windows, to know.")
    favourable = diff.lo > 0 if higher_is_better else diff.hi < 0
    if favourable:
        return Comparison(diff, relative, BETTER, 0, "")
    more = more_repeats(diff, reps)
    return Comparison(diff, relative, NOT_DISTINGUISHABLE, more, _advice(more, reps))


def more_repeats(diff: Interval, repeats: int) -> int | None:
    """Extra repeats of each configuration that would likely make the interval of the
    difference exclude zero, if the difference stayed what it is: the half-width shrinks
    as 1/sqrt(repeats). None when it cannot be estimated (fewer than two repeats: the
    between-run spread is unknown) or when it is beyond MAX_REPEATS_ADVICE."""
    if repeats < 2 or not diff.known:
        return None
    d = abs(diff.estimate)
    h = diff.half_width
    if h <= 0:
        return 0
    if d == 0:
        return None
    needed = math.ceil(repeats * (h / d) ** 2)
    if needed > MAX_REPEATS_ADVICE:
        return None
    return max(needed - repeats, 1)


def _advice(more: int | None, repeats: int) -> str:
    if repeats < 2:
        return "One repeat only: the spread between runs is unknown. Run 3 or more repeats."
    if more is None:
        return (
            f"Even {MAX_REPEATS_ADVICE} repeats would likely not separate them at this run's "
            "noise: treat them as equally good."
        )
    return f"About {more} more repeat{'s' if more != 1 else ''} of each would likely separate them."


# --- findings -------------------------------------------------------------------------


def statistic_interval(
    groups: Sequence[Group],
    statistic: Callable[[np.ndarray], float],
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> Interval:
    """Interval of any statistic of the configurations' means (a ratio, an effect, a
    correlation): `statistic` takes one vector of means (one per configuration) and is
    applied to the point means and to every bootstrap draw. Only the measurement noise is
    resampled; the set of configurations is what the sweep chose."""
    draws = resample_means(groups, n_boot, seed)
    estimate = statistic(np.array([point_mean(g) for g in groups]))
    values = np.array([statistic(row) for row in draws])
    sizes = [_size(g) for g in groups if _size(g)[1]]
    spread = any(v >= 2 for _, v in sizes)
    reps = min((r for r, _ in sizes), default=0)
    return _interval(estimate, values, reps, 2 if spread else min((v for _, v in sizes), default=0))


def ratio(i: int, j: int) -> Callable[[np.ndarray], float]:
    return lambda m: float(m[i] / m[j]) if m[j] else math.nan


def mean_change(above: Sequence[int], within: Sequence[int]) -> Callable[[np.ndarray], float]:
    """mean over `above` relative to the mean over `within`, minus 1."""
    a, w = list(above), list(within)
    return lambda m: float(np.mean(m[a]) / np.mean(m[w]) - 1.0) if np.mean(m[w]) else math.nan


def spearman_with(fixed: Sequence[float]) -> Callable[[np.ndarray], float]:
    """Spearman rank correlation of the means with a fixed vector (e.g. context switches
    per request, taken at their point values)."""
    x = np.asarray(fixed, dtype=float)

    def rho(m: np.ndarray) -> float:
        ok = np.isfinite(x) & np.isfinite(m)
        if ok.sum() < 3:
            return math.nan
        rx, rm = _ranks(x[ok]), _ranks(m[ok])
        if rx.std() == 0 or rm.std() == 0:
            return math.nan
        return float(np.corrcoef(rx, rm)[0, 1])

    return rho


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as pandas' rank() does."""
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        same = v == value
        if same.sum() > 1:
            ranks[same] = ranks[same].mean()
    return ranks


def effect_verdict(interval: Interval, null: float) -> str:
    """'' when the effect is told from noise; otherwise the sentence that says it is not."""
    if not interval.known:
        return "no spread known (one measurement per configuration): this may be noise; add repeats"
    if interval.excludes(null):
        return ""
    return "cannot be told from noise (the 95% interval includes no effect)"


def _f(v: float, digits: int) -> str:
    return "nan" if not math.isfinite(v) else f"{v:,.{digits}f}"


# --- onto the aggregated table --------------------------------------------------------

# (figure column, key in a client_windows entry, short name of the added columns)
FIGURES = (("client_throughput_rps", "rps"), ("client_latency_p99_ms", "p99_ms"))


def add_intervals(trials, ok_rows) -> None:
    """Add, in place, to the per-trial table `trials` (indexed by trial_id): for each of
    FIGURES, ``<figure>_ci_lo`` / ``<figure>_ci_hi`` (NaN when unknown) and
    ``<figure>_samples`` (per repeat, the window values: what compare() takes).
    `ok_rows`: the per-repeat rows with status ok (a DataFrame with trial_id)."""
    records: dict[str, list[dict]] = {str(t): [] for t in trials.index}
    for row in ok_rows.to_dict("records"):
        records.setdefault(str(row.get("trial_id")), []).append(row)
    keys = [str(t) for t in trials.index]
    for figure, window_key in FIGURES:
        groups = [repeat_samples(records.get(k, []), figure, window_key) for k in keys]
        found = intervals(groups)
        trials[f"{figure}_ci_lo"] = [iv.lo for iv in found]
        trials[f"{figure}_ci_hi"] = [iv.hi for iv in found]
        trials[f"{figure}_samples"] = groups
