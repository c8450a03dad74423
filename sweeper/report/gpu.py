"""The report's GPU section: for each trial, where its workers served (client_device) and
what its GPUs did (the gpu_* columns of sweeper.gpu, over the ok repeats), and two plots:
served throughput against GPU utilization, and each trial's peak GPU memory with its mean
power. Only for a run whose trials used GPUs (gpu_count > 0 somewhere): a run without GPUs
shows nothing about them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd

from sweeper.analysis.aggregate import column, param_columns, varying
from sweeper.report import fmt
from sweeper.report import plotkit as kit
from sweeper.report.plots import Plot

MAX_BARS = 30  # trials in the memory plot, best throughput first: more is unreadable

# (heading, column of the per-trial table, how repeats combine, unit)
_FIGURES = (
    ("GPU util % (mean)", "gpu_util_pct_mean", "mean", "%"),
    ("GPU util % (peak)", "gpu_util_pct_max", "max", "%"),
    ("memory MiB (peak)", "gpu_mem_used_mb_max", "max", "MiB"),
    ("power W (mean)", "gpu_power_w_mean", "mean", "W"),
    ("SM clock MHz (mean)", "gpu_sm_clock_mhz_mean", "mean", "MHz"),
    ("temp °C (peak)", "gpu_temp_c_max", "max", "°C"),
)


@dataclass(frozen=True)
class GpuRow:
    trial_id: str
    label: str  # the trial's varying parameters
    device: str  # client_device over its repeats
    throughput: str
    cells: tuple[str, ...]  # one per _FIGURES entry
    throttle: str


@dataclass(frozen=True)
class GpuSection:
    headings: tuple[str, ...]
    rows: list[GpuRow]
    plots: list[Plot]
    skipped: list[str]  # plots not made, and why
    notes: list[str]  # the runs' gpu_note lines, distinct


def has_gpus(results: pd.DataFrame) -> bool:
    """Whether some trial of the run used a GPU (gpu_count > 0)."""
    return bool((pd.to_numeric(column(results, "gpu_count"), errors="coerce") > 0).any())


def _distinct(values: pd.Series) -> str:
    """The distinct devices of a trial's repeats ("cuda:0,cuda:1" each), in order seen."""
    seen = dict.fromkeys(part.strip() for v in values.dropna().astype(str) for part in v.split(","))
    return ", ".join(d for d in seen if d)


def per_trial(results: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial that used a GPU: its label, throughput (the trial table's mean),
    device and GPU figures over its ok repeats, best throughput first."""
    ok = results[column(results, "status").astype("string").fillna("") == "ok"]
    ok = ok[pd.to_numeric(column(ok, "gpu_count"), errors="coerce") > 0]
    if ok.empty:
        return pd.DataFrame()
    keys = ok["trial_id"].astype(str)
    out = pd.DataFrame(index=pd.Index(keys.unique(), name="trial_id"))
    for _, name, how, _ in _FIGURES:
        values = pd.to_numeric(column(ok, name), errors="coerce")
        out[name] = values.groupby(keys, sort=False).agg(how)
    out["device"] = column(ok, "client_device").groupby(keys, sort=False).agg(_distinct)
    out["throttle"] = column(ok, "gpu_throttle_reasons").astype("string").groupby(keys, sort=False).agg(
        lambda v: "; ".join(dict.fromkeys(x for x in v.dropna() if x)))
    labels = varying(trials, param_columns(trials))
    info = trials.set_index(trials["trial_id"].astype(str)) if "trial_id" in trials else pd.DataFrame()
    out["label"] = [
        " ".join(f"{fmt.short_name(c)}={fmt.value(info.at[t, c])}" for c in labels) if t in info.index else ""
        for t in out.index
    ]
    out["label"] = out["label"].replace("", "(one configuration)")
    out["throughput"] = [
        info.at[t, "client_throughput_rps_mean"] if t in info.index and "client_throughput_rps_mean" in info else math.nan
        for t in out.index
    ]
    return out.sort_values("throughput", ascending=False, na_position="last")


def gpu_section(results: pd.DataFrame, trials: pd.DataFrame) -> GpuSection | None:
    """The section, or None when no trial used a GPU."""
    if not has_gpus(results):
        return None
    table = per_trial(results, trials)
    rows = [
        GpuRow(
            str(t), str(r["label"]), str(r["device"]) or "not reported", fmt.num(r["throughput"]),
            tuple(fmt.num(r[name]) for _, name, _, _ in _FIGURES), str(r["throttle"]),
        )
        for t, r in table.iterrows()
    ]
    notes = list(dict.fromkeys(str(n) for n in column(results, "gpu_note").dropna() if str(n)))
    plots, skipped = [], []
    with matplotlib.rc_context(kit.STYLE):
        for make in (_throughput_vs_util, _memory_and_power):
            got = make(table)
            (plots if isinstance(got, Plot) else skipped).append(got)
    return GpuSection(tuple(h for h, _, _, _ in _FIGURES), rows, plots, skipped, notes)


def _throughput_vs_util(table: pd.DataFrame) -> Plot | str:
    data = table[table["gpu_util_pct_mean"].notna() & table["throughput"].notna()] if not table.empty else table
    if len(data) < 2:
        return "throughput vs GPU utilization: fewer than two trials with both figures"
    fig, ax = kit.figure()
    ax.scatter(data["gpu_util_pct_mean"], data["throughput"], color="C0", zorder=3)
    for k, (_, r) in enumerate(data.head(5).iterrows(), start=1):
        ax.annotate(str(k), (r["gpu_util_pct_mean"], r["throughput"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("GPU utilization, mean over the window (%)")
    ax.set_ylabel("served throughput (req/s)")
    ax.set_xlim(0, 100)
    ax.set_ylim(bottom=0)
    notes = tuple(kit.shorten(str(r["label"]), 80) for _, r in data.head(5).iterrows())
    return Plot(
        "gpu_util",
        "Throughput vs GPU utilization",
        "One point per trial (the mean over its repeats), the five best numbered as listed below. Far right: "
        "the GPU is busy and bounds the throughput; far left with low throughput: the GPU waits on the rest "
        "(request parsing, batching, the workers' Python).",
        kit.to_svg(fig, "gpu_util"),
        notes,
    )


def _memory_and_power(table: pd.DataFrame) -> Plot | str:
    data = table[table["gpu_mem_used_mb_max"].notna()].head(MAX_BARS) if not table.empty else table
    if len(data) < 2:
        return "GPU memory and power: fewer than two trials with a memory figure"
    fig, ax = kit.figure(height=max(2.4, 0.28 * len(data) + 1.0))
    y = np.arange(len(data))
    ax.barh(y, data["gpu_mem_used_mb_max"], color="C0")
    ax.set_yticks(y, [kit.shorten(str(v), 40) for v in data["label"]], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("peak GPU memory used (MiB)")
    power = data["gpu_power_w_mean"]
    if power.notna().any():
        twin = ax.twiny()
        twin.plot(power, y, "o", color="C3")
        twin.set_xlabel("mean power (W)", color="C3")
        twin.set_xlim(left=0)
        twin.grid(False)
    return Plot(
        "gpu_memory",
        "GPU memory and power by trial",
        "Bars: the most memory used on one GPU (every process on it: each worker holds its own copy of the "
        "model and its CUDA context). Dots: mean board power. Best throughput first"
        + (f", the first {MAX_BARS}" if len(table) > MAX_BARS else "") + ".",
        kit.to_svg(fig, "gpu_memory"),
    )
