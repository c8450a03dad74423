"""The one objective of a sweep: the highest client throughput among eligible closed-loop
trials and, under a latency SLO, the highest throughput among those whose p99 is at most
the SLO. Only a closed loop measures what the server can do: an open loop's throughput is
the rate it was offered, so ranking it would rank the load, not the configuration.

The recommendation (sweeper.report.recommend) applies it to trials aggregated over their
repeats (sweeper.analysis.aggregate: `<column>_mean`, `eligible`); a search strategy
applies it to single runs as they finish (`run_value`). Eligible means: no repeat failed,
at least one is ok, and every ok repeat served every request.

A search may rank by another figure (search.objective): `throughput` (the above),
`latency` (the lowest p99) or `capacity` (capacity_rps_at_slo: the highest offered rate
whose p99 met the SLO). `run_score` judges one run by any of them, with its constraints
as values (<= 0 when met) so that a search can rank a near miss above a far one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import pandas as pd

from ..defaults import MIN_SUCCESS_RATE

if TYPE_CHECKING:  # pragma: no cover
    from ..plan import Axis

THROUGHPUT = "client_throughput_rps"
P99 = "client_latency_p99_ms"
# search.objective capacity: the highest open-loop rate with p99 <= SLO and success >=
# settings.min_success_rate, found per configuration by the rate search (sweeper.capacity)
CAPACITY = "capacity_rps_at_slo"


def candidates(trials: pd.DataFrame) -> pd.DataFrame:
    """The eligible trials with a measured throughput (rows of aggregate_trials)."""
    eligible = trials[trials["eligible"]] if "eligible" in trials.columns else trials.iloc[0:0]
    return eligible[eligible[f"{THROUGHPUT}_mean"].notna()] if len(eligible) else eligible


def closed_loop(trials: pd.DataFrame) -> pd.DataFrame:
    """Those measured under a closed loop: the only ones whose throughput ranks anything."""
    return trials[trials["load_mode"] == "closed"] if "load_mode" in trials.columns else trials


def within_slo(trials: pd.DataFrame, slo_p99_ms: float) -> pd.DataFrame:
    """Those whose mean p99 is at most the SLO."""
    return trials[trials[f"{P99}_mean"] <= slo_p99_ms]


def ranked(trials: pd.DataFrame) -> pd.DataFrame:
    """Best first: highest mean throughput; ties keep table order."""
    return trials.sort_values(f"{THROUGHPUT}_mean", ascending=False, kind="stable")


def capacity_candidates(trials: pd.DataFrame) -> pd.DataFrame:
    """Capacity trials that may win: no repeat failed, one at least is ok, and some rate met
    the SLO (a mean capacity above 0). Each passing step already met the success rate, so
    unlike `candidates` a request lost now and then (within min_success_rate) is allowed."""
    col = f"{CAPACITY}_mean"
    if col not in trials.columns or "n_ok" not in trials.columns:
        return trials.iloc[0:0]
    ok = (trials["n_failed"] == 0) & (trials["n_ok"] > 0) & (pd.to_numeric(trials[col], errors="coerce") > 0)
    return trials[ok]


def ranked_by_capacity(trials: pd.DataFrame) -> pd.DataFrame:
    """Best first: highest mean capacity_rps_at_slo; ties keep table order."""
    return trials.sort_values(f"{CAPACITY}_mean", ascending=False, kind="stable")


def best(trials: pd.DataFrame, slo_p99_ms: float | None = None, objective: str = "throughput") -> pd.Series | None:
    """The winning trial (a row of aggregate_trials), or None when no trial qualifies.
    objective capacity ranks by capacity_rps_at_slo (the SLO is already in it)."""
    if objective == "capacity":
        pool = capacity_candidates(trials)
        return ranked_by_capacity(pool).iloc[0] if len(pool) else None
    pool = closed_loop(candidates(trials))
    if slo_p99_ms is not None and len(pool):
        pool = within_slo(pool, slo_p99_ms)
    return ranked(pool).iloc[0] if len(pool) else None


# A search's objectives (the sweep's search.objective): the figure of a run it ranks by and
# whether more is better. capacity_rps_at_slo: 0 or missing means no rate met the SLO.
OBJECTIVES = ("throughput", "latency", "capacity")
METRIC = {"throughput": THROUGHPUT, "latency": P99, "capacity": CAPACITY}
MAXIMIZE = {"throughput": True, "latency": False, "capacity": True}


@dataclass(frozen=True)
class RunScore:
    """One run judged by an objective. `value` is the objective's figure (None: the run
    measured none - it failed, or its load cannot rank this objective); `constraints` are
    Optuna-style values, each <= 0 when met (p99 - SLO, min success rate - success rate),
    so a near miss is told apart from a far one."""

    value: float | None
    constraints: tuple[float, ...]

    @property
    def feasible(self) -> bool:
        return self.value is not None and all(c <= 0 for c in self.constraints)


def run_score(
    row: Mapping[str, object],
    slo_p99_ms: float | None,
    objective: str = "throughput",
    min_success_rate: float = MIN_SUCCESS_RATE,
) -> RunScore:
    """The objective's figure of one run and its constraints (see RunScore).

    throughput: client_throughput_rps of a closed loop (an open loop's throughput is the
    rate it was offered); latency: client_latency_p99_ms, any load; capacity:
    capacity_rps_at_slo, where 0 or missing is infeasible (no rate met the SLO) and the p99
    and success-rate constraints are already part of the figure. Every objective needs status ok and success
    rate >= min_success_rate, and throughput and latency p99 <= slo_p99_ms when set."""
    if objective not in METRIC:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if row.get("status") != "ok":
        return RunScore(None, ())
    if objective == "throughput" and row.get("load_mode") != "closed":
        return RunScore(None, ())
    value = _number(row.get(METRIC[objective]))
    if objective == "capacity":
        # the SLO and the success rate are part of the figure (each passing step met both);
        # 0 or none: infeasible, not failed (the configuration ran, no offered rate met them)
        return RunScore(0.0, (1.0,)) if value is None or value <= 0 else RunScore(value, (0.0,))
    success = _number(row.get("client_success_rate"))
    constraints = [min_success_rate - (success if success is not None else 0.0)]
    if value is None:
        return RunScore(None, ())
    if slo_p99_ms is not None:
        p99 = _number(row.get(P99))
        constraints.append(float("inf") if p99 is None else p99 - slo_p99_ms)
    return RunScore(value, tuple(constraints))


def run_value(
    row: Mapping[str, object],
    slo_p99_ms: float | None,
    objective: str = "throughput",
    min_success_rate: float = MIN_SUCCESS_RATE,
) -> float | None:
    """The objective of one run (a result row) for a search when the run is feasible: for
    throughput, its throughput when the run is a closed loop, ok, served at least
    min_success_rate of its requests (the schema's default, sweeper.defaults) and (with an SLO) kept
    p99 within it; for latency its p99 under the same conditions; for capacity its
    capacity_rps_at_slo when positive. None otherwise, so a failed or too slow run is an
    infeasible point, not a crash and not a zero."""
    score = run_score(row, slo_p99_ms, objective, min_success_rate)
    return score.value if score.feasible else None


def searchable(space: "list[Axis]", objective: str) -> "list[Axis]":
    """The axes a search varies for `objective`. Throughput ranks closed loops only (an
    open loop's throughput is the rate it was offered): with any closed-loop profile, the
    load axis keeps just those."""
    if objective != "throughput":
        return list(space)
    from ..plan import Axis

    out = []
    for axis in space:
        if axis.name == "load":
            closed = tuple(v for v in axis.values if getattr(v, "mode", None) == "closed")
            axis = Axis(axis.name, closed, axis.level) if closed else axis
        out.append(axis)
    return out


def config_score(
    rows: list[Mapping[str, object]],
    load_mode: str,
    slo_p99_ms: float | None,
    objective: str = "throughput",
    min_success_rate: float = MIN_SUCCESS_RATE,
) -> RunScore:
    """One configuration judged by an objective over its repeats (result rows): failed
    (value None) when a repeat failed; otherwise the mean of each figure over the repeats
    and the lowest success rate, judged as one run (run_score). A capacity of 0 in any
    repeat is no capacity."""
    if not rows or any(r.get("status") != "ok" for r in rows):
        return RunScore(None, ())

    def mean(column: str) -> float | None:
        values = [_number(r.get(column)) for r in rows]
        return None if any(v is None for v in values) else sum(values) / len(values)  # type: ignore[arg-type,misc]

    success = [_number(r.get("client_success_rate")) for r in rows]
    row: dict[str, object] = {
        "status": "ok",
        "load_mode": load_mode,
        "client_success_rate": None if None in success else min(success),  # type: ignore[type-var]
        THROUGHPUT: mean(THROUGHPUT),
        P99: mean(P99),
    }
    if objective == "capacity":
        values = [_number(r.get(CAPACITY)) for r in rows]
        ok = all(v is not None and v > 0 for v in values)
        row[CAPACITY] = sum(values) / len(values) if ok else 0.0  # type: ignore[arg-type,misc]
    return run_score(row, slo_p99_ms, objective, min_success_rate)


def _number(value: object) -> float | None:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x
