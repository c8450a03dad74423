"""The report's plots, as inline SVG strings made with matplotlib (no pyplot, no global
backend: each figure is a ``matplotlib.figure.Figure`` saved with format="svg").

A plot is made only when the data supports it (its x axis takes at least two values);
otherwise it is skipped with a one-line reason. The number of plots and of lines per plot
is bounded so a 500-trial run renders in about the same time as a 20-trial one.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweeper.errors import SweeperError
from sweeper.report import fmt
from sweeper.report.aggregate import column, param_columns, varying

TPUT = "client_throughput_rps"
P50 = "client_latency_p50_ms"
P99 = "client_latency_p99_ms"
BATCH = "param_model_batch_size"
DELAY = "param_model_max_batch_delay_ms"
MAX_LINES = 6  # lines per plot: more is unreadable
KNEE_FRACTION = 0.95  # served below 95% of the target rate: the server stopped keeping up
_THREAD_AXIS = re.compile(r"(?i)worker|thread")

_RC = {
    "svg.fonttype": "none",  # real <text>: small files, and no glyph ids repeated across SVGs
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


@dataclass(frozen=True)
class Plot:
    name: str  # stable id: data-plot attribute
    title: str
    caption: str
    svg: str


def make_plots(
    trials: pd.DataFrame,
    slo_p99_ms: float | None = None,
    heatmap_axes: tuple[str, str] | None = None,
) -> tuple[list[Plot], list[str]]:
    """All plots the data supports, and the reasons for the ones skipped."""
    measured = _measured(trials)
    plots: list[Plot] = []
    skipped: list[str] = []
    makers = (
        lambda: _throughput_vs_batch(measured),
        lambda: _latency_vs_concurrency(measured, slo_p99_ms),
        lambda: _achieved_vs_target(measured),
        lambda: _latency_vs_rate(measured, slo_p99_ms),
        *_heatmaps(measured, heatmap_axes),
        lambda: _pareto(measured, slo_p99_ms),
        lambda: _served_batch(measured),
    )
    for make in makers:
        result = make()
        (plots if isinstance(result, Plot) else skipped).append(result)
    return plots, skipped


# --- the plots ------------------------------------------------------------------------


def _throughput_vs_batch(df: pd.DataFrame) -> Plot | str:
    if len(_levels(df, BATCH)) < 2:
        return "throughput vs batch size: the batch size does not vary"
    keys = [c for c in (DELAY, "load_mode") if c in df.columns and df[c].nunique() > 1]
    # Each point is the best trial at that batch size in its line (over the other
    # parameters and load levels): the question is what the batch size makes possible.
    best = df.loc[df.groupby([BATCH, *keys], dropna=False)[f"{TPUT}_mean"].idxmax()]
    fig, ax = _figure()
    for label, line in _lines(best, keys, _delay_mode_label):
        line = line.sort_values(BATCH)
        ax.errorbar(line[BATCH], line[f"{TPUT}_mean"], yerr=_err(line, TPUT), marker="o", capsize=3, label=label)
    _batch_axis(ax, df)
    ax.set_ylabel("throughput (req/s)")
    ax.set_ylim(bottom=0)
    _legend(ax, keys)
    return _plot(
        "throughput_vs_batch",
        "Throughput vs batch size",
        "Each point is the best trial with that batch size on its line (over the other "
        "parameters and load levels); bars: min–max over repeats.",
        fig,
    )


def _latency_vs_concurrency(df: pd.DataFrame, slo: float | None) -> Plot | str:
    closed = df[column(df, "load_mode") == "closed"]
    if len(_levels(closed, "load_concurrency")) < 2:
        return "latency vs concurrency: no closed-loop load at two or more concurrency levels"
    fig, ax = _figure()
    _latency_lines(ax, closed, "load_concurrency")
    ax.set_xlabel("requests in flight (closed loop)")
    _log_x_if_wide(ax, closed["load_concurrency"])
    _slo_line(ax, slo, horizontal=True)
    return _plot(
        "latency_vs_concurrency",
        "Latency vs load (closed loop)",
        f"p99 (solid, bars min–max over repeats) and p50 (dashed) for the {MAX_LINES} "
        "configurations with the highest throughput.",
        fig,
    )


def _achieved_vs_target(df: pd.DataFrame) -> Plot | str:
    opened = _open(df)
    if len(_levels(opened, "_target")) < 2:
        return "achieved vs target rate: no open-loop load at two or more rates"
    fig, ax = _figure()
    for i, (label, line) in enumerate(_config_lines(opened, "_target")):
        color = f"C{i}"
        ax.errorbar(line["_target"], line[f"{TPUT}_mean"], yerr=_err(line, TPUT), marker="o", capsize=3, color=color, label=label)
        if line["client_achieved_rate_rps_mean"].notna().any():
            ax.plot(line["_target"], line["client_achieved_rate_rps_mean"], ls=":", color=color)
    top = float(opened["_target"].max())
    ax.plot([0, top], [0, top], color="0.5", lw=0.8, ls="--", label="target (y = x)")
    ax.set_xlabel("target rate (req/s)")
    ax.set_ylabel("req/s")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    _legend(ax, ["x"])
    return _plot(
        "achieved_vs_target",
        "Achieved vs target rate (open loop)",
        "Solid: served (2xx) per second; dotted: rate the client actually sent at. A line "
        "below the diagonal means the server (solid) or the client (dotted) fell behind.",
        fig,
    )


def _latency_vs_rate(df: pd.DataFrame, slo: float | None) -> Plot | str:
    opened = _open(df)
    if len(_levels(opened, "_target")) < 2:
        return "latency vs rate: no open-loop load at two or more rates"
    fig, ax = _figure()
    knees = _latency_lines(ax, opened, "_target", mark_knee=True)
    ax.set_xlabel("target rate (req/s, open loop)")
    _slo_line(ax, slo, horizontal=True)
    knee_text = "; ".join(f"{label}: {fmt.num(rate)} req/s" for label, rate in knees)
    return _plot(
        "latency_vs_rate",
        "Latency vs offered rate (open loop)",
        "p99 (solid) and p50 (dashed), measured from the scheduled send time. ✕ marks the "
        f"knee: the first rate the server served less than {KNEE_FRACTION:.0%} of. "
        + (f"Knees: {knee_text}." if knees else "No knee within the rates tried."),
        fig,
    )


def _heatmaps(df: pd.DataFrame, axes: tuple[str, str] | None):
    chosen = heatmap_axes(df, axes)
    if chosen is None:
        why = "heatmaps: fewer than two varying worker/thread parameters"
        return (lambda: why,)
    a, b = chosen
    return (
        lambda: _heatmap(df, a, b, f"{TPUT}_mean", "heatmap_throughput", "Throughput (req/s)", "viridis"),
        lambda: _heatmap(
            df, a, b, "proc_ctx_per_req_mean", "heatmap_ctx_per_req",
            "Context switches per request", "magma_r",
        ),
    )


def heatmap_axes(df: pd.DataFrame, override: tuple[str, str] | None = None) -> tuple[str, str] | None:
    """The two heatmap axes: the override, else the two varying worker/thread parameters
    with the most levels. A parameter that moves in lockstep with a chosen one (min and max
    workers, OMP and MKL threads set together) adds nothing and is passed over."""
    if override is not None:
        missing = [c for c in override if c not in df.columns]
        if missing or len(set(override)) != 2:
            choices = ", ".join(varying(df, param_columns(df))) or "none"
            raise SweeperError(f"heatmap axes {list(override)}: need two distinct param_* columns; varying here: {choices}")
        return override[0], override[1]
    candidates = [c for c in varying(df, param_columns(df)) if _THREAD_AXIS.search(c)]
    candidates.sort(key=lambda c: -df[c].nunique())
    chosen: list[str] = []
    for c in candidates:
        if not any(_lockstep(df, c, other) for other in chosen):
            chosen.append(c)
        if len(chosen) == 2:
            return chosen[0], chosen[1]
    return None


def _heatmap(df: pd.DataFrame, a: str, b: str, value: str, name: str, title: str, cmap: str) -> Plot | str:
    if column(df, value).notna().sum() == 0:
        return f"{name}: no {value.removesuffix('_mean')} measured"
    # Mean over everything else that varied (batch size, load, ...): a cell is the
    # typical value at that worker/thread combination.
    grid = df.pivot_table(index=b, columns=a, values=value, aggfunc="mean")
    grid = grid.sort_index().sort_index(axis=1)
    fig, ax = _figure(width=5.2, height=3.8)
    data = grid.to_numpy(dtype=float)
    mesh = ax.pcolormesh(np.ma.masked_invalid(data), cmap=cmap, edgecolors="white", linewidth=0.5)
    ax.grid(False)
    ax.set_xticks(np.arange(data.shape[1]) + 0.5, [fmt.value(v) for v in grid.columns])
    ax.set_yticks(np.arange(data.shape[0]) + 0.5, [fmt.value(v) for v in grid.index])
    ax.set_xlabel(fmt.short_name(a))
    ax.set_ylabel(fmt.short_name(b))
    fig.colorbar(mesh, ax=ax, label=title)
    if data.size <= 100:
        mid = np.nanmean(data)
        for (i, j), v in np.ndenumerate(data):
            if not np.isnan(v):
                dark = (v < mid) == (not cmap.endswith("_r"))
                ax.text(j + 0.5, i + 0.5, fmt.num(v), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    return _plot(
        name,
        f"{title} by {fmt.short_name(a)} × {fmt.short_name(b)}",
        "Each cell: mean over the trials with those two values (the other parameters and "
        "load levels averaged); blank: not measured.",
        fig,
    )


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


def _pareto(df: pd.DataFrame, slo: float | None) -> Plot | str:
    pts = df[df[f"{P99}_mean"].notna()]
    if len(pts) < 3:
        return "Pareto front: fewer than three trials with both throughput and p99"
    front = pareto_front(pts)
    fig, ax = _figure()
    rest = pts.drop(front.index)
    bound = rest[column(rest, "client_bound").fillna(False).astype(bool)]
    free = rest.drop(bound.index)
    ax.errorbar(free[f"{P99}_mean"], free[f"{TPUT}_mean"], xerr=_err(free, P99), yerr=_err(free, TPUT),
                fmt="o", color="0.65", ms=4, elinewidth=0.6, label="trial")
    if len(bound):
        ax.errorbar(bound[f"{P99}_mean"], bound[f"{TPUT}_mean"], fmt="o", mfc="none", color="C1", ms=5, label="client-bound trial")
    ax.errorbar(front[f"{P99}_mean"], front[f"{TPUT}_mean"], xerr=_err(front, P99), yerr=_err(front, TPUT),
                fmt="o-", color="C3", ms=5, capsize=3, label="Pareto front")
    labels = [c for c in varying(df, param_columns(df))]
    if len(front) <= 8:
        for _, r in front.iterrows():
            text = _shorten(fmt.params_label(r, labels) + " · " + fmt.load_label(r), 40)
            ax.annotate(text, (r[f"{P99}_mean"], r[f"{TPUT}_mean"]), xytext=(4, 4), textcoords="offset points", fontsize=7)
    _log_x_if_wide(ax, pts[f"{P99}_mean"])
    _slo_line(ax, slo, horizontal=False)
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("throughput (req/s)")
    _legend(ax, ["x"])
    return _plot(
        "pareto",
        "Throughput vs p99 latency (Pareto front)",
        "Red: trials no other trial beats on both throughput and p99. Bars: min–max over repeats.",
        fig,
    )


def _served_batch(df: pd.DataFrame) -> Plot | str:
    if len(_levels(df, BATCH)) < 2:
        return "served vs configured batch size: the batch size does not vary"
    if column(df, "client_batch_size_mean_mean").notna().sum() == 0:
        return "served vs configured batch size: no served batch size measured (X-Batch-Size)"
    keys = [c for c in (DELAY, "load_mode") if c in df.columns and df[c].nunique() > 1]
    served = "client_batch_size_mean"
    groups = df.groupby([BATCH, *keys], dropna=False).agg(
        mean=(f"{served}_mean", "mean"), lo=(f"{served}_min", "min"), hi=(f"{served}_max", "max")
    ).reset_index()
    fig, ax = _figure()
    for label, line in _lines(groups, keys, _delay_mode_label):
        line = line.sort_values(BATCH)
        yerr = np.vstack([(line["mean"] - line["lo"]).fillna(0), (line["hi"] - line["mean"]).fillna(0)])
        ax.errorbar(line[BATCH], line["mean"], yerr=yerr, marker="o", capsize=3, label=label)
    top = float(df[BATCH].max())
    ax.plot([1, top], [1, top], color="0.5", lw=0.8, ls="--", label="full batches (y = x)")
    _batch_axis(ax, df)
    ax.set_ylabel("served batch size (mean)")
    ax.set_ylim(bottom=0)
    _legend(ax, ["x"])
    return _plot(
        "served_batch",
        "Served vs configured batch size",
        "Mean size of the batches requests were served in (X-Batch-Size), over the trials "
        "on each line; bars: min–max over trials and repeats. Below the diagonal, batches "
        "left before they were full (max_batch_delay expired).",
        fig,
    )


# --- helpers --------------------------------------------------------------------------


def _measured(trials: pd.DataFrame) -> pd.DataFrame:
    if trials.empty or f"{TPUT}_mean" not in trials.columns:
        return trials.iloc[0:0].assign(**{f"{TPUT}_mean": []})
    return trials[(trials["n_ok"] > 0) & trials[f"{TPUT}_mean"].notna()]


def _open(df: pd.DataFrame) -> pd.DataFrame:
    opened = df[column(df, "load_mode") == "open"]
    target = column(opened, "client_target_rate_rps_mean").fillna(column(opened, "load_rate_rps"))
    return opened.assign(_target=pd.to_numeric(target, errors="coerce"))


def _levels(df: pd.DataFrame, name: str) -> list:
    return sorted(df[name].dropna().unique()) if name in df.columns else []


def _lockstep(df: pd.DataFrame, a: str, b: str) -> bool:
    pairs = df[[a, b]].drop_duplicates()
    return len(pairs) == df[a].nunique() == df[b].nunique()


def _err(df: pd.DataFrame, name: str) -> np.ndarray | None:
    """Asymmetric min–max bars where a trial has more than one ok repeat."""
    if f"{name}_min" not in df.columns or not (df["n_ok"] > 1).any():
        return None
    many = df["n_ok"] > 1
    mean = df[f"{name}_mean"]
    lo = (mean - df[f"{name}_min"]).where(many, 0).fillna(0).clip(lower=0)
    hi = (df[f"{name}_max"] - mean).where(many, 0).fillna(0).clip(lower=0)
    return np.vstack([lo.to_numpy(float), hi.to_numpy(float)])


def _delay_mode_label(key: tuple, keys: list[str]) -> str:
    parts = []
    for name, v in zip(keys, key):
        parts.append(f"delay {fmt.value(v)} ms" if name == DELAY else f"{v} loop" if name == "load_mode" else f"{fmt.short_name(name)}={fmt.value(v)}")
    return " · ".join(parts)


def _lines(df: pd.DataFrame, keys: list[str], label_fn):
    """(label, rows) per line; at most MAX_LINES*2 lines (the groups with most points)."""
    if not keys:
        yield "all trials", df
        return
    groups = list(df.groupby(keys, dropna=False, sort=True))
    groups = groups[: MAX_LINES * 2]
    for key, rows in groups:
        yield label_fn(key if isinstance(key, tuple) else (key,), keys), rows


def _config_lines(df: pd.DataFrame, x: str):
    """One line per configuration over x, for the MAX_LINES configurations whose best
    throughput is highest (and that were measured at two or more x values)."""
    labels = varying(df, param_columns(df))
    peak = df.groupby("config")[f"{TPUT}_mean"].max().sort_values(ascending=False)
    shown = 0
    for config in peak.index:
        line = df[df["config"] == config]
        # Several trials of one configuration at one x (e.g. two load_processes): average.
        line = line.groupby(x, as_index=False).agg(
            {c: "mean" for c in line.columns if c.endswith(("_mean", "_min", "_max")) and c != x}
            | {"n_ok": "min", "client_success_rate_min": "min"}
        ) if line[x].duplicated().any() else line.sort_values(x)
        if line[x].nunique() < 2:
            continue
        first = df[df["config"] == config].iloc[0]
        yield _shorten(fmt.params_label(first, labels), 48), line.sort_values(x)
        shown += 1
        if shown == MAX_LINES:
            return


def knee_rate(line: pd.DataFrame) -> float | None:
    """The first target rate the server did not keep up with (served < 95% of target, or
    requests failed), or None if it kept up at every rate tried."""
    for _, r in line.sort_values("_target").iterrows():
        served, target = r[f"{TPUT}_mean"], r["_target"]
        failed = not fmt.is_missing(r.get("client_success_rate_min")) and r["client_success_rate_min"] < 1.0
        if failed or (target > 0 and served < KNEE_FRACTION * target):
            return float(target)
    return None


def _latency_lines(ax, df: pd.DataFrame, x: str, mark_knee: bool = False) -> list[tuple[str, float]]:
    knees = []
    for i, (label, line) in enumerate(_config_lines(df, x)):
        color = f"C{i}"
        ax.errorbar(line[x], line[f"{P99}_mean"], yerr=_err(line, P99), marker="o", capsize=3, color=color, label=label)
        ax.plot(line[x], line[f"{P50}_mean"], ls="--", marker=".", color=color)
        if mark_knee:
            knee = knee_rate(line)
            if knee is not None:
                y = line.loc[line[x] == knee, f"{P99}_mean"].iloc[0]
                ax.plot([knee], [y], marker="X", ms=10, color=color, mec="black", ls="none")
                knees.append((label, knee))
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    _legend(ax, ["x"])
    return knees


def _batch_axis(ax, df: pd.DataFrame) -> None:
    levels = _levels(df, BATCH)
    if levels and levels[-1] / max(levels[0], 1) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [fmt.value(v) for v in levels])
    ax.minorticks_off()
    ax.set_xlabel("configured batch size")


def _log_x_if_wide(ax, values: pd.Series) -> None:
    v = values[values > 0]
    if len(v) and v.max() / v.min() >= 16:
        ax.set_xscale("log")


def _slo_line(ax, slo: float | None, horizontal: bool) -> None:
    if slo is None:
        return
    draw = ax.axhline if horizontal else ax.axvline
    draw(slo, color="C3", lw=1, ls=":", label=f"SLO p99 {fmt.num(slo)} ms")
    _legend(ax, ["x"])


def _legend(ax, keys: list) -> None:
    if keys and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False, loc="best")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _figure(width: float = 6.4, height: float = 3.6):
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        ax = fig.add_subplot()
    return fig, ax


def _plot(name: str, title: str, caption: str, fig: Figure) -> Plot:
    # Ids inside an SVG (clip paths, markers) are hashes; a per-plot salt keeps them
    # unique when several SVGs share one HTML document.
    buf = io.StringIO()
    with matplotlib.rc_context({**_RC, "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    return Plot(name, title, caption, svg)
