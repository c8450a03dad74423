"""Which plots the report shows and what goes in them (the figure making itself is in
``plotkit``). Each plot is an inline SVG string with a name, a title and a caption.

A plot is made only when the data supports it (its x axis takes at least two values);
otherwise it is skipped with a one-line reason. The number of plots and of lines per plot
is bounded so a 500-trial run renders in about the same time as a 20-trial one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd

from sweeper.errors import SweeperError
from sweeper.report import fmt
from sweeper.report import plotkit as kit
from sweeper.analysis.curves import KNEE_FRACTION, knee_rate, pareto_front
from sweeper.analysis.aggregate import column, param_columns, served_batch_column, varying

TPUT = "client_throughput_rps"
P50 = "client_latency_p50_ms"
P99 = "client_latency_p99_ms"
BATCH = "param_model_batch_size"
DELAY = "param_model_max_batch_delay_ms"
MAX_LINES = 6  # lines per plot: more is unreadable
_THREAD_AXIS = re.compile(r"(?i)worker|thread")

@dataclass(frozen=True)
class Plot:
    name: str  # stable id: data-plot attribute
    title: str
    caption: str
    svg: str
    notes: tuple[str, ...] = ()  # numbered points of the plot, spelled out under it


def make_plots(
    trials: pd.DataFrame,
    slo_p99_ms: float | None = None,
    heatmap_axes: tuple[str, str] | None = None,
) -> tuple[list[Plot], list[str]]:
    """All plots the data supports, and the reasons for the ones skipped."""
    measured = _measured(trials)
    if measured.empty:
        return [], ["no trial was measured"]
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
    # Artists read rcParams when they are created, so the style covers the whole drawing.
    with matplotlib.rc_context(kit.STYLE):
        for make in makers:
            result = make()
            (plots if isinstance(result, Plot) else skipped).append(result)
    return plots, skipped


# --- the plots ------------------------------------------------------------------------


def _throughput_vs_batch(df: pd.DataFrame) -> Plot | str:
    # Closed loop only: an open-loop trial's throughput is the rate we offered.
    lines = _batch_lines(_closed(df))
    if not lines:
        return "throughput vs batch size: no closed-loop load level was run at two or more batch sizes"
    fig, ax = kit.figure()
    for label, rows in lines:
        # Several trials on one point (other parameters varied): the best one, since the
        # question is what this batch size makes possible at this load.
        best = rows.loc[rows.groupby(BATCH)[f"{TPUT}_mean"].idxmax()].sort_values(BATCH)
        ax.errorbar(best[BATCH], best[f"{TPUT}_mean"], yerr=_err(best, TPUT), marker="o", capsize=3, label=label)
    _batch_axis(ax, df)
    ax.set_ylabel("throughput (req/s)")
    ax.set_ylim(bottom=0)
    return _plot(
        "throughput_vs_batch",
        "Throughput vs batch size",
        "Closed-loop trials (open-loop throughput is the offered rate: see latency vs offered "
        "rate). One line per max_batch_delay and load level; where other parameters varied, the "
        "best trial. Bars: 95% confidence interval (bootstrap over windows and repeats; min–max where none is known).",
        fig,
    )


def _latency_vs_concurrency(df: pd.DataFrame, slo: float | None) -> Plot | str:
    closed = df[column(df, "load_mode") == "closed"]
    lines = list(_config_lines(closed, "load_concurrency"))
    if not lines:
        return "latency vs concurrency: no configuration ran closed-loop at two or more concurrency levels"
    fig, ax = kit.figure()
    _latency_lines(ax, lines, "load_concurrency")
    kit.level_axis(ax, _levels(closed, "load_concurrency"))
    ax.set_xlabel("requests in flight (closed loop)")
    kit.slo_line(ax, slo, horizontal=True)
    return _plot(
        "latency_vs_concurrency",
        "Latency vs load (closed loop)",
        f"p99 (solid, bars: 95% confidence interval) and p50 (dashed), one line per "
        f"configuration (at most {MAX_LINES}, those with the highest throughput).",
        fig,
    )


def _achieved_vs_target(df: pd.DataFrame) -> Plot | str:
    opened = _open(df)
    lines = list(_config_lines(opened, "_target"))
    if not lines:
        return "achieved vs target rate: no configuration ran open-loop at two or more rates"
    fig, ax = kit.figure()
    for i, (label, line) in enumerate(lines):
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
    return _plot(
        "achieved_vs_target",
        "Achieved vs target rate (open loop)",
        "Solid: served (2xx) per second; dotted: rate the client actually sent at. A line "
        "below the diagonal means the server (solid) or the client (dotted) fell behind.",
        fig,
    )


def _latency_vs_rate(df: pd.DataFrame, slo: float | None) -> Plot | str:
    opened = _open(df)
    lines = list(_config_lines(opened, "_target"))
    if not lines:
        return "latency vs rate: no configuration ran open-loop at two or more rates"
    fig, ax = kit.figure()
    knees = _latency_lines(ax, lines, "_target", mark_knee=True)
    kit.level_axis(ax, _levels(opened, "_target"))
    ax.set_xlabel("target rate (req/s, open loop)")
    kit.slo_line(ax, slo, horizontal=True)
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
            df, a, b, _ctx_heatmap(df)[0], "heatmap_ctx_per_req", _ctx_heatmap(df)[1], "magma_r",
        ),
    )


def _ctx_heatmap(df: pd.DataFrame) -> tuple[str, str]:
    """Every thread's switches where the run has them; older runs: the main threads'."""
    if "proc_ctx_all_per_req_mean" in df and df["proc_ctx_all_per_req_mean"].notna().any():
        return "proc_ctx_all_per_req_mean", "Context switches per request (all threads)"
    return "proc_ctx_per_req_mean", "Context switches per request (main threads)"


def heatmap_axes(df: pd.DataFrame, override: tuple[str, str] | None = None) -> tuple[str, str] | None:
    """The two heatmap axes: the override, else the two varying worker/thread parameters
    with the most levels. A parameter that moves in lockstep with a chosen one (min and max
    workers, OMP and MKL threads set together) adds nothing and is passed over."""
    if override is not None:
        bad = [c for c in override if c not in df.columns or not c.startswith("param_")]
        if bad or len(set(override)) != 2:
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
    fig, ax = kit.figure(width=5.2, height=3.8)
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


def _pareto(df: pd.DataFrame, slo: float | None) -> Plot | str:
    # Closed loop only: there throughput is what the server did; in the open loop it is
    # the rate we offered, and those trials belong in the latency vs offered rate view.
    pts = _closed(df)
    pts = pts[pts[f"{P99}_mean"].notna()]
    if len(pts) < 3:
        return "Pareto front: fewer than three closed-loop trials with both throughput and p99"
    front = pareto_front(pts)
    fig, ax = kit.figure()
    rest = pts.drop(front.index)
    bound = rest[column(rest, "client_bound").fillna(False).astype(bool)]
    free = rest.drop(bound.index)
    ax.errorbar(free[f"{P99}_mean"], free[f"{TPUT}_mean"], xerr=_err(free, P99), yerr=_err(free, TPUT),
                fmt="o", color="0.65", ms=4, elinewidth=0.6, label="trial")
    if len(bound):
        ax.errorbar(bound[f"{P99}_mean"], bound[f"{TPUT}_mean"], fmt="o", mfc="none", color="C1", ms=5, label="client-bound trial")
    ax.errorbar(front[f"{P99}_mean"], front[f"{TPUT}_mean"], xerr=_err(front, P99), yerr=_err(front, TPUT),
                fmt="o-", color="C3", ms=5, capsize=3, label="Pareto front")
    # Numbers on the front, spelled out in the caption: labels on the points collide.
    labels = _label_columns(df)
    named = []
    if len(front) <= 10:
        for n, (_, r) in enumerate(front.iterrows(), start=1):
            ax.annotate(str(n), (r[f"{P99}_mean"], r[f"{TPUT}_mean"]), xytext=(5, -9),
                        textcoords="offset points", fontsize=8, color="C3")
            named.append(
                f"{_label(r, labels)}, {fmt.load_label(r)} "
                f"({fmt.num(r[f'{TPUT}_mean'])} req/s, p99 {fmt.num(r[f'{P99}_mean'])} ms)"
            )
    kit.log_x_if_wide(ax, pts[f"{P99}_mean"])
    kit.slo_line(ax, slo, horizontal=False)
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("throughput (req/s)")
    return _plot(
        "pareto",
        "Throughput vs p99 latency (Pareto front)",
        "Closed-loop trials only (open-loop ones are in the latency vs offered rate plot). "
        "Red: trials no other trial beats on both throughput and p99"
        + (" (numbered as in the list below)" if named else "")
        + ". Bars: 95% confidence interval (bootstrap over windows and repeats; min–max where none is known).",
        fig,
        notes=tuple(named),
    )


def _served_batch(df: pd.DataFrame) -> Plot | str:
    served = served_batch_column(df)
    if column(df, f"{served}_mean").notna().sum() == 0:
        return "served vs configured batch size: no served batch size measured (server log or X-Batch-Size)"
    lines = _batch_lines(df[df[f"{served}_mean"].notna()])
    if not lines:
        return "served vs configured batch size: no load level was run at two or more batch sizes"
    fig, ax = kit.figure()
    for label, rows in lines:
        g = rows.groupby(BATCH).agg(
            mean=(f"{served}_mean", "mean"), lo=(f"{served}_min", "min"), hi=(f"{served}_max", "max")
        )
        yerr = np.vstack([(g["mean"] - g["lo"]).fillna(0).clip(lower=0), (g["hi"] - g["mean"]).fillna(0).clip(lower=0)])
        ax.errorbar(g.index, g["mean"], yerr=yerr, marker="o", capsize=3, label=label)
    levels = _levels(df, BATCH)
    ax.plot(levels, levels, color="0.5", lw=0.8, ls="--", label="full batches (y = x)")
    _batch_axis(ax, df)
    ax.set_ylabel("served batch size (mean)")
    ax.set_ylim(bottom=0)
    return _plot(
        "served_batch",
        "Served vs configured batch size",
        "Mean size of the batches requests were served in (X-Batch-Size); bars: min–max "
        "over trials and repeats. Below the diagonal, batches left before they were full "
        "(max_batch_delay expired first, or fewer requests were waiting).",
        fig,
    )


# --- helpers --------------------------------------------------------------------------


def _measured(trials: pd.DataFrame) -> pd.DataFrame:
    if trials.empty or f"{TPUT}_mean" not in trials.columns:
        return trials.iloc[0:0]
    return trials[(trials["n_ok"] > 0) & trials[f"{TPUT}_mean"].notna()]


def _closed(df: pd.DataFrame) -> pd.DataFrame:
    return df[column(df, "load_mode") == "closed"]


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
    """Asymmetric error bars: the 95% bootstrap interval (sweeper.analysis.confidence)
    where one is known, else min–max where a trial has more than one ok repeat."""
    mean = df[f"{name}_mean"]
    ci_lo, ci_hi = column(df, f"{name}_ci_lo"), column(df, f"{name}_ci_hi")
    has_ci = ci_lo.notna() & ci_hi.notna()
    many = df["n_ok"] > 1 if "n_ok" in df.columns else pd.Series(False, index=df.index)
    if not has_ci.any() and (f"{name}_min" not in df.columns or not many.any()):
        return None
    lo_v = ci_lo.where(has_ci, column(df, f"{name}_min").where(many))
    hi_v = ci_hi.where(has_ci, column(df, f"{name}_max").where(many))
    lo = (mean - lo_v).fillna(0).clip(lower=0)
    hi = (hi_v - mean).fillna(0).clip(lower=0)
    return np.vstack([lo.to_numpy(float), hi.to_numpy(float)])


def _batch_lines(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Lines over the batch size: one per (max_batch_delay, load level) that was run at
    two or more batch sizes, so a line compares batch sizes under the same load. At most
    MAX_LINES * 2, those with the most points first."""
    if len(_levels(df, BATCH)) < 2:
        return []
    load = df.apply(fmt.load_label, axis=1) if len(df) else pd.Series(dtype=str)
    df = df.assign(_load=load)
    keys = [k for k in (DELAY, "_load") if k in df.columns]
    show_delay = DELAY in df.columns and df[DELAY].nunique() > 1
    out = []
    for key, rows in df.groupby(keys, dropna=False, sort=True):
        if rows[BATCH].nunique() < 2:
            continue
        delay, load_label = (key if len(keys) == 2 else (None, key[0]))
        label = f"delay {fmt.value(delay)} ms · {load_label}" if show_delay else load_label
        out.append((label, rows))
    out.sort(key=lambda item: -item[1][BATCH].nunique())
    return out[: MAX_LINES * 2]


def _config_lines(df: pd.DataFrame, x: str):
    """One line per configuration over x, for the MAX_LINES configurations whose best
    throughput is highest (and that were measured at two or more x values)."""
    labels = _label_columns(df)
    peak = df.groupby("config")[f"{TPUT}_mean"].max().sort_values(ascending=False)
    shown = 0
    for config in peak.index:
        line = df[df["config"] == config]
        # Several trials of one configuration at one x (e.g. other load_processes): keep
        # the best, as a line needs one point per x.
        line = line.sort_values(f"{TPUT}_mean", ascending=False).drop_duplicates(x)
        if len(line) < 2:
            continue
        first = df[df["config"] == config].iloc[0]
        yield kit.shorten(_label(first, labels), 60), line.sort_values(x)
        shown += 1
        if shown == MAX_LINES:
            return


def _latency_lines(ax, lines: list, x: str, mark_knee: bool = False) -> list[tuple[str, float]]:
    knees = []
    for i, (label, line) in enumerate(lines):
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
    values = pd.concat([line[c] for _, line in lines for c in (f"{P50}_mean", f"{P99}_mean")])
    kit.log_y_if_wide(ax, values)
    if ax.get_yscale() == "linear":
        ax.set_ylim(bottom=0)
    return knees


def _batch_axis(ax, df: pd.DataFrame) -> None:
    kit.level_axis(ax, _levels(df, BATCH))
    ax.set_xlabel("configured batch size")


# Short names for the parameters that sweeps vary most, for legends.
_ABBREV = {
    "param_model_batch_size": "bs",
    "param_model_max_batch_delay_ms": "delay",
    "param_model_min_workers": "workers",
    "param_model_max_workers": "max_workers",
    "param_server_number_of_netty_threads": "netty",
}


def _label_columns(df: pd.DataFrame) -> list[str]:
    """The varying parameters worth naming in a legend: one of each lockstep set (min and
    max workers, OMP and MKL threads set together)."""
    out: list[str] = []
    for c in varying(df, param_columns(df)):
        if not any(_lockstep(df, c, kept) for kept in out):
            out.append(c)
    return out


def _label(row: pd.Series, columns: list[str]) -> str:
    parts = [f"{_ABBREV.get(c, fmt.short_name(c))}={fmt.value(row[c])}" for c in columns]
    return " ".join(parts) or "(one configuration)"


def _plot(name: str, title: str, caption: str, fig, notes: tuple[str, ...] = ()) -> Plot:
    return Plot(name, title, caption, kit.to_svg(fig, name), notes)


def search_trace(summary) -> Plot | str:
    """The search trace (sweeper.analysis.search.SearchSummary): each configuration's
    objective in the order measured, the best feasible one so far as a step line, and
    TorchServe's default configuration as a level."""
    steps = [s for s in summary.steps if s.value is not None]
    if len(summary.steps) < 2 or not steps:
        return "search trace: fewer than two configurations measured"
    with matplotlib.rc_context(kit.STYLE):
        fig, ax = kit.figure()
        feasible = [s for s in steps if s.feasible]
        missed = [s for s in steps if not s.feasible]
        if feasible:
            ax.plot([s.n for s in feasible], [s.value for s in feasible], "o", color="C0", label="feasible configuration")
        if missed:
            ax.plot([s.n for s in missed], [s.value for s in missed], "x", color="C3", label="infeasible (SLO or success rate)")
        best = [(s.n, s.best) for s in summary.steps if s.best is not None]
        if best:
            ax.step([n for n, _ in best], [b for _, b in best], where="post", color="C1", lw=1.5, label="best feasible so far")
        if summary.default_value is not None:
            ax.axhline(summary.default_value, color="0.5", lw=0.8, ls="--", label="TorchServe's default configuration")
        ax.set_xlabel("configuration, in the order measured")
        ax.set_ylabel(f"{summary.objective} ({summary.unit})")
        return _plot(
            "search_trace",
            "Search trace",
            f"{summary.headline}. Each point is one configuration (the mean over its repeats); the step "
            "line is the best feasible value after each.",
            fig,
        )
