"""The host's CPU speed over a run (sweeper.hostspeed's `host_speed` per repeat), and how much
of the repeat-to-repeat noise of closed-loop throughput moved with it.

A diagnostic: the sweeper's figures stay what the server served. What this says is how
far the machine itself moved during the run, so that a reader can tell a difference
between configurations from a difference between moments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class SpeedSummary:
    runs: int  # ok repeats with a host_speed
    min_rel: float  # slowest repeat's speed / the run's median
    max_rel: float
    # closed loop, trials with 2+ ok repeats: Pearson r between each repeat's throughput and
    # its CPU speed, both as deviations from the trial's own mean (nan below 3 such repeats)
    r: float
    paired_repeats: int
    # median over those trials of the repeat-to-repeat CV of throughput, as served and with
    # each repeat divided by its relative CPU speed
    cv_raw_pct: float
    cv_adjusted_pct: float
    worst_raw_pct: float
    worst_adjusted_pct: float


def repeat_cv_pct(ok: pd.DataFrame, column: str) -> pd.Series:
    """Per trial with 2+ rows in `ok`: sample std / mean of `column`, in percent."""
    grouped = ok.groupby("trial_id")[column]
    stats = pd.DataFrame({"n": grouped.count(), "mean": grouped.mean(), "std": grouped.std(ddof=1)})
    stats = stats[stats["n"] >= 2]
    return (100.0 * stats["std"] / stats["mean"]).dropna()


def summarize(df: pd.DataFrame) -> SpeedSummary | None:
    """None when the run has no host_speed (older runs, or not Linux-like timing)."""
    if "host_speed" not in df or "status" not in df:
        return None
    ok = df[(df["status"] == "ok")].copy()
    ok["host_speed"] = pd.to_numeric(ok["host_speed"], errors="coerce")
    ok = ok[ok["host_speed"] > 0]
    if ok.empty:
        return None
    median = float(ok["host_speed"].median())
    ok["rel_speed"] = ok["host_speed"] / median
    closed = ok[ok.get("load_mode", pd.Series("closed", index=ok.index)) == "closed"].copy()
    closed = closed[closed.groupby("trial_id")["trial_id"].transform("size") >= 2]
    r = math.nan
    raw = adjusted = pd.Series(dtype=float)
    if not closed.empty:
        closed["adjusted_rps"] = closed["client_throughput_rps"] / closed["rel_speed"]
        dev = closed.groupby("trial_id")[["client_throughput_rps", "rel_speed"]].transform(lambda c: c / c.mean() - 1)
        if len(dev) >= 3 and dev["rel_speed"].std() > 0 and dev["client_throughput_rps"].std() > 0:
            r = float(dev["client_throughput_rps"].corr(dev["rel_speed"]))
        raw = repeat_cv_pct(closed, "client_throughput_rps")
        adjusted = repeat_cv_pct(closed, "adjusted_rps")

    def stat(series: pd.Series, how: str) -> float:
        return float(getattr(series, how)()) if len(series) else math.nan

    return SpeedSummary(
        runs=len(ok),
        min_rel=float(ok["rel_speed"].min()),
        max_rel=float(ok["rel_speed"].max()),
        r=r,
        paired_repeats=len(closed),
        cv_raw_pct=stat(raw, "median"),
        cv_adjusted_pct=stat(adjusted, "median"),
        worst_raw_pct=stat(raw, "max"),
        worst_adjusted_pct=stat(adjusted, "max"),
    )


def sentence(s: SpeedSummary) -> str:
    """One paragraph for results.md."""
    text = (
        f"Host CPU speed (host_speed: a fixed piece of work timed in CPU time during every window) "
        f"ranged from {s.min_rel:.2f}x to {s.max_rel:.2f}x of this run's median over its {s.runs} runs. "
        "A CPU's speed can move by itself (on a virtual machine, for example, when another guest "
        "shares its physical core), and none of that shows as steal."
    )
    if s.r == s.r:
        text += (
            f" Between repeats of the same closed-loop trial, throughput moved with it by Pearson r = {s.r:.2f} "
            f"(over {s.paired_repeats} repeats; near 0, the CPUs' speed at this probe's resolution does not explain "
            "how far the repeats differ). The figures above are as served; differences between configurations "
            "smaller than the CPUs' own movement may be the machine's, not the settings'."
        )
    return text
