"""Shapes of a sweep's results that the report draws: the throughput/latency Pareto front
of closed-loop trials, and the knee of a latency-vs-offered-rate line."""

from __future__ import annotations

import numpy as np
import pandas as pd

TPUT = "client_throughput_rps"
P99 = "client_latency_p99_ms"
# a server keeps up with an offered rate while it serves at least this share of it
KNEE_FRACTION = 0.95


def pareto_front(df: pd.DataFrame) -> pd.DataFrame:
    """Trials no other trial beats on both throughput (higher) and p99 (lower)."""
    pts = df[df[f"{TPUT}_mean"].notna() & df[f"{P99}_mean"].notna()]
    pts = pts.sort_values([f"{P99}_mean", f"{TPUT}_mean"], ascending=[True, False], kind="stable")
    keep, best = [], -np.inf
    for idx, t in zip(pts.index, pts[f"{TPUT}_mean"]):
        if t > best:
            keep.append(idx)
            best = t
    return pts.loc[keep]


def knee_rate(line: pd.DataFrame) -> float | None:
    """The first target rate the server did not keep up with (served < 95% of target, or
    requests failed), or None if it kept up at every rate tried."""
    for _, r in line.sort_values("_target").iterrows():
        served, target = r[f"{TPUT}_mean"], r["_target"]
        rate = r.get("client_success_rate_min")
        failed = rate is not None and not pd.isna(rate) and rate < 1.0
        if failed or (target > 0 and served < KNEE_FRACTION * target):
            return float(target)
    return None
