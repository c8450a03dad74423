"""Aggregation over repeats: one row per trial (trial_id) from the per-repeat rows of
results.csv (used by results.md, the report and sweeper compare), plus the helpers that say which parameters vary and what a "configuration"
is (the param_* values, without the load). Throughput and p99 also get their 95% bootstrap
interval (sweeper.analysis.confidence).

Only repeats with status "ok" are measurements, and of those a repeat measured under host
CPU steal above sweeper.hoststat.STEAL_NOTE_PCT is left out of its trial's figures when the
trial has a repeat without (`n_stolen` counts them; see used_repeats). A trial is *eligible* for a recommendation
when none of its repeats failed, at least one is ok, and every ok repeat's success rate is
at least `min_success_rate`: the run's settings.min_success_rate, the same floor its search
objective and capacity steps use (1.0, every request served, where no run is known).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..defaults import MIN_SUCCESS_RATE
from ..hoststat import STEAL_NOTE_PCT
from .confidence import add_intervals

PARAM_PREFIX = "param_"

# Metrics aggregated over the ok repeats: (column, statistics).
_SPREAD = ("mean", "min", "max", "std")
METRICS: dict[str, tuple[str, ...]] = {
    "client_throughput_rps": _SPREAD,
    "client_latency_p50_ms": ("mean", "min", "max"),
    "client_latency_p90_ms": ("mean",),
    "client_latency_p99_ms": _SPREAD,
    "client_latency_mean_ms": ("mean",),
    "client_success_rate": ("mean", "min"),
    "client_achieved_rate_rps": ("mean", "min", "max"),
    "client_target_rate_rps": ("mean",),
    "client_batch_size_mean": ("mean", "min", "max"),
    "server_batch_size_mean": ("mean", "min", "max"),
    "server_batch_size_per_request_mean": ("mean", "min", "max"),
    "client_cpu_pct": ("mean",),
    "proc_cpu_pct": ("mean",),
    "proc_ctx_per_req": ("mean", "min", "max"),  # main threads only (psutil)
    "proc_ctx_all_per_req": ("mean", "min", "max"),  # every thread
    "server_queue_latency_mean_ms": ("mean",),
    "efficiency": ("mean", "min", "max"),
    "client_minus_server_mean_ms": ("mean", "min", "max"),
    "client_window_cv": ("mean", "max"),
    "host_steal_pct": ("mean", "max"),  # the hypervisor gave the CPU to another guest (sweeper.hoststat)
    "host_speed": ("mean", "min", "max"),  # how fast the CPUs ran (sweeper.hostspeed)
    # search.objective capacity (sweeper.capacity): the rate search's result per repeat
    "capacity_rps_at_slo": ("mean", "min", "max"),
    "capacity_steps_n": ("mean",),
    "capacity_precision": ("mean",),
}


def served_batch_column(df: pd.DataFrame) -> str:
    """The served batch size per request (README, Definitions): from the X-Batch-Size
    header of the sweeper's own handlers when the run has it, else from TorchServe's own
    per-batch records (server_batch_size_per_request_mean: every handler)."""
    for name in ("client_batch_size_mean", "server_batch_size_per_request_mean"):
        if column(df, f"{name}_mean").notna().any() or column(df, name).notna().any():
            return name
    return "client_batch_size_mean"


def column(df: pd.DataFrame, name: str) -> pd.Series:
    """The column, or an all-NaN one: older or partial runs may lack a column."""
    if name in df.columns:
        return df[name]
    return pd.Series(np.nan, index=df.index, name=name, dtype="float64")


def param_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(PARAM_PREFIX)]


def varying(df: pd.DataFrame, columns: list[str]) -> list[str]:
    """Those of ``columns`` that take more than one value (NaN counts as a value)."""
    return [c for c in columns if c in df.columns and df[c].nunique(dropna=False) > 1]


def aggregate_trials(results: pd.DataFrame, min_success_rate: float = MIN_SUCCESS_RATE) -> pd.DataFrame:
    """One row per trial_id, in first-seen order. `min_success_rate`: see the module
    docstring (kept in the table's attrs["min_success_rate"]).

    Columns: every param_* and load_* column (first value: they are the same for all
    repeats of a trial), ``repeats`` (rows), ``n_ok``, ``n_failed``, ``n_stolen`` (ok
    repeats left out for host steal), ``eligible``,
    ``status`` (ok | failed | "failed 1/3" | interrupted), ``error`` (distinct errors),
    ``client_bound`` (any repeat), ``client_bound_reason``, ``config`` (a hashable key of
    the param_* values) and ``<metric>_<stat>`` for each metric in METRICS over ok repeats.
    """
    if results.empty or "trial_id" not in results.columns:
        return pd.DataFrame(columns=["trial_id", "repeats", "n_ok", "n_failed", "eligible", "status"])
    df = results.copy()
    df["_ok"] = column(df, "status").astype("string").fillna("") == "ok"
    df["_failed"] = column(df, "status").astype("string").fillna("") == "failed"
    keys = df["trial_id"].astype(str)
    groups = df.groupby(keys, sort=False)

    fixed = [c for c in df.columns if c.startswith(PARAM_PREFIX) or c.startswith("load_")]
    for name in ("sweep", "group_id"):
        if name in df.columns:
            fixed.append(name)
    out = groups[fixed].first() if fixed else pd.DataFrame(index=groups.size().index)
    out["repeats"] = groups.size()
    out["n_ok"] = groups["_ok"].sum().astype(int)
    out["n_failed"] = groups["_failed"].sum().astype(int)

    ok = used_repeats(df[df["_ok"]])
    out["n_stolen"] = (
        (df["_ok"] & ~df.index.isin(ok.index)).groupby(keys, sort=False).sum().astype(int)
    )
    for name, stats in METRICS.items():
        values = pd.to_numeric(column(ok, name), errors="coerce")
        agg = values.groupby(ok["trial_id"].astype(str), sort=False).agg(list(stats))
        for stat in stats:
            out[f"{name}_{stat}"] = agg[stat].reindex(out.index) if len(agg) else np.nan
    # std of one sample is NaN; that is what "no spread known" should be.
    add_intervals(out, ok)  # <figure>_ci_lo/_ci_hi/_samples: bootstrap over windows and repeats

    # True/False from the CSV, NaN where a trial never measured: only a real True counts
    bound = column(df, "client_bound").map(lambda v: v is True or str(v).lower() == "true").astype(bool)
    out["client_bound"] = bound.groupby(keys, sort=False).any()
    reasons = column(df, "client_bound_reason").astype("string").fillna("")
    out["client_bound_reason"] = reasons.where(bound, "").groupby(keys, sort=False).agg(_distinct)
    disagree = column(df, "client_server_disagree").map(lambda v: v is True or str(v).lower() == "true").astype(bool)
    out["client_server_disagree"] = (disagree & df["_ok"]).groupby(keys, sort=False).any()
    # A repeat that never measured stable windows (settings.stability) marks its trial.
    unstable = column(df, "client_unstable").map(lambda v: v is True or str(v).lower() == "true").astype(bool)
    out["client_unstable"] = unstable.groupby(keys, sort=False).any()
    if "capacity_limited_by" in df.columns:  # what ended each repeat's rate search
        limited = column(df, "capacity_limited_by").astype("string").fillna("")
        out["capacity_limited_by"] = limited.where(df["_ok"], "").groupby(keys, sort=False).agg(_distinct)
    errors = column(df, "error").astype("string").fillna("")
    out["error"] = errors.where(df["_failed"], "").groupby(keys, sort=False).agg(_distinct)

    out["status"] = [_status(r, k, f) for r, k, f in zip(out["repeats"], out["n_ok"], out["n_failed"])]
    success_ok = out["client_success_rate_min"].fillna(0.0) >= min_success_rate
    out["eligible"] = (out["n_failed"] == 0) & (out["n_ok"] > 0) & success_ok
    params = param_columns(out)
    out["config"] = list(zip(*(out[c].astype(str) for c in params))) if params else [()] * len(out)
    out = out.reset_index(names="trial_id")
    out.attrs["min_success_rate"] = float(min_success_rate)
    return out


def used_repeats(ok: pd.DataFrame) -> pd.DataFrame:
    """The ok repeats a trial's figures come from: those measured while the hypervisor
    took at most STEAL_NOTE_PCT of the machine (host_steal_pct), when the trial has one;
    every ok repeat when it has none, or when the run did not measure steal. A repeat
    measured while another guest had the CPU (throughput far below its twin's:
    docs/measurements.md#code-steal-repeats) is left out, not averaged in."""
    if ok.empty or "host_steal_pct" not in ok.columns:
        return ok
    steal = pd.to_numeric(ok["host_steal_pct"], errors="coerce")
    stolen = steal > STEAL_NOTE_PCT
    clean_in_trial = (~stolen).groupby(ok["trial_id"].astype(str)).transform("sum")
    return ok[~stolen | (clean_in_trial == 0)]


def _distinct(values: pd.Series) -> str:
    seen = dict.fromkeys(v for v in values if v)
    return "; ".join(seen)


def _status(repeats: int, n_ok: int, n_failed: int) -> str:
    if n_failed == 0:
        return "ok" if n_ok == repeats else ("interrupted" if n_ok == 0 else f"ok {n_ok}/{repeats}")
    return "failed" if n_failed == repeats else f"failed {n_failed}/{repeats}"
