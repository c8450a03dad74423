"""The one objective of a sweep: the highest client throughput among eligible closed-loop
trials and, under a latency SLO, the highest throughput among those whose p99 is at most
the SLO. Only a closed loop measures what the server can do: an open loop's throughput is
the rate it was offered, so ranking it would rank the load, not the configuration.

The recommendation (sweeper.report.recommend) applies it to trials aggregated over their
repeats (sweeper.analysis.aggregate: `<column>_mean`, `eligible`); a search strategy
applies it to single runs as they finish (`run_value`). Eligible means: no repeat failed,
at least one is ok, and every ok repeat served every request.
"""

from __future__ import annotations

import math
from typing import Mapping

import pandas as pd

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


def run_value(row: Mapping[str, object], slo_p99_ms: float | None) -> float | None:
    """The objective of one run (a result row) for a search: its throughput when the run
    is a closed loop, ok, served every request and (with an SLO) kept p99 within it; None
    otherwise, so a failed or too slow run is an infeasible point, not a crash and not a
    zero."""
    if row.get("load_mode") != "closed" or row.get("status") != "ok":
        return None
    if _number(row.get("client_success_rate")) != 1.0:
        return None
    throughput = _number(row.get(THROUGHPUT))
    if throughput is None:
        return None
    if slo_p99_ms is not None:
        p99 = _number(row.get(P99))
        if p99 is None or p99 > slo_p99_ms:
            return None
    return throughput


def _number(value: object) -> float | None:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x
