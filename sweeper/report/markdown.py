"""results.md: the aggregated results table (repeats as mean with the 95% bootstrap
interval, or (min-max)), the client-bound warning, the thread finding in words and the failed trials, in Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field

import math

import pandas as pd

from ..defaults import MIN_SUCCESS_RATE
from ..analysis.aggregate import aggregate_trials, served_batch_column
from ..analysis.findings import thread_findings
from ..analysis import speed
from ..hoststat import STEAL_NOTE_PCT
from . import fmt


def varying_columns(df: pd.DataFrame) -> list[str]:
    """The param_*/load_* columns that vary in this run (plus the model name)."""
    cols = [c for c in df.columns if c.startswith(("param_", "load_"))]
    varying = [c for c in cols if df[c].astype(str).nunique(dropna=False) > 1]
    return varying or [c for c in cols if c == "param_model_name"]


def _fmt(value: object, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _short(col: str) -> str:
    for prefix in ("param_model_", "param_server_", "param_env_", "param_", "load_"):
        if col.startswith(prefix):
            return col[len(prefix) :]
    return col


def _mean(row: pd.Series, col: str, digits: int = 1) -> str:
    return _fmt(float(row.get(col + "_mean", math.nan)), digits)


def _success(row: pd.Series) -> str:
    """The lowest success rate over the repeats, never rounded up to 100%."""
    rate = row.get("client_success_rate_min", math.nan)
    return "" if rate is None or (isinstance(rate, float) and math.isnan(rate)) else fmt.success(rate)


def _had_errors(row: pd.Series) -> bool:
    rate = row.get("client_success_rate_min", math.nan)
    return rate is not None and not (isinstance(rate, float) and math.isnan(rate)) and float(rate) < 1.0


def _spread(row: pd.Series, col: str, digits: int = 1) -> str:
    """mean, with (min-max) when more than one repeat was measured."""
    mean = _mean(row, col, digits)
    if row.get("n_ok", 1) > 1:
        return f"{mean} ({_fmt(float(row[col + '_min']), digits)}-{_fmt(float(row[col + '_max']), digits)})"
    return mean


def _with_ci(row: pd.Series, col: str, digits: int = 1) -> str:
    """mean [95% CI lo-hi] when an interval is known, else mean (min-max) as before."""
    lo, hi = float(row.get(col + "_ci_lo", math.nan)), float(row.get(col + "_ci_hi", math.nan))
    if math.isnan(lo) or math.isnan(hi):
        return _spread(row, col, digits)
    return f"{_mean(row, col, digits)} [{_fmt(lo, digits)}-{_fmt(hi, digits)}]"


INTRO = (
    "Figures are means over repeats; throughput and p99 show [the 95% bootstrap confidence "
    "interval] over stability windows and repeats where there is a spread, p50 (min-max) "
    "over repeats; latency is client-side, ms. "
    "A percentile over repeats is the mean of each repeat's own percentile, not a percentile "
    "of the repeats' requests pooled. Served batch: the batch size a served request was in, "
    "averaged per request (a batch of 8 counts 8 times)."
)
CAPACITY_INTRO = (
    "Ranked by capacity at the SLO: the highest open-loop rate whose step met p99 ≤ settings.slo_p99_ms "
    "and settings.min_success_rate (search.objective capacity; 0: even search.capacity.start_rps failed). "
    "The other figures are those of the step at that rate."
)


@dataclass
class _Marks:
    """The trials each mark of the table's first column was given, for the notes below it."""

    bound: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    disagree: list = field(default_factory=list)
    unstable: list = field(default_factory=list)
    steal: list = field(default_factory=list)


def markdown(df: pd.DataFrame, title: str = "", cores: int | None = None, search=None, min_success_rate: float = MIN_SUCCESS_RATE) -> str:
    """results.md: the aggregated table (repeats as mean (min-max)), the search (when
    `search`, a sweeper.analysis.search.SearchSummary) and failed trials.
    `min_success_rate`: the run's settings.min_success_rate (sweeper.analysis.aggregate)."""
    lines = [f"# {title}" if title else "# Results", ""]
    if df.empty:
        return "\n".join(lines + ["No trials finished.", ""])
    n_ok = int((df["status"] == "ok").sum())
    lines.append(f"{len(df)} trial runs: {n_ok} ok, {len(df) - n_ok} failed or interrupted.")
    lines.append(INTRO)
    lines.append("")
    agg = aggregate_trials(df, min_success_rate)
    agg = agg[agg["n_ok"] > 0]
    # search.objective capacity: the capacity column first after the parameters, best first
    has_capacity = "capacity_rps_at_slo_mean" in agg and agg["capacity_rps_at_slo_mean"].notna().any()
    if has_capacity:
        agg = agg.sort_values("capacity_rps_at_slo_mean", ascending=False, na_position="last", kind="stable")
        lines.insert(len(lines) - 1, CAPACITY_INTRO)
    if not agg.empty:
        marks = _Marks()
        lines += _table(df, agg, has_capacity, marks)
        lines += _notes(marks, min_success_rate)
        host_speed = speed.summarize(df)
        if host_speed is not None:
            lines += ["", speed.sentence(host_speed)]
    if cores:
        found = thread_findings(df, cores, min_success_rate)
        if found:
            lines += ["", "## Finding (computed from this run)", ""] + [f"- {s}" for s in found]
    if search is not None:
        lines += [""] + search_markdown(search)
    lines += _failed(df)
    return "\n".join(lines) + "\n"


def _table(df: pd.DataFrame, agg: pd.DataFrame, has_capacity: bool, marks: _Marks) -> list[str]:
    """The aggregated table, one row per trial, its first cell marked (see _mark)."""
    has_efficiency = "efficiency" in df
    has_agreement = "client_minus_server_mean_ms" in df
    has_all_ctx = "proc_ctx_all_per_req" in df
    params = [c for c in varying_columns(df) if not (has_capacity and c.startswith("load_"))]
    head = [_short(c) for c in params] + (["capacity req/s at SLO", "steps"] if has_capacity else []) + [
        "throughput req/s",
        "success",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "served batch",
        "ctx sw/req" + (" (main)" if has_all_ctx else ""),
    ] + (["ctx sw/req (all threads)"] if has_all_ctx else []) + (["client − server ms"] if has_agreement else []) + (["efficiency"] if has_efficiency else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in agg.iterrows():
        cells = [f"{r[c]:g}" if isinstance(r[c], float) and not math.isnan(r[c]) else _fmt(r[c]) for c in params]
        if has_capacity:
            cells += [_spread(r, "capacity_rps_at_slo"), _mean(r, "capacity_steps_n", 0)]
        cells += [
            _with_ci(r, "client_throughput_rps"),
            _success(r),
            _spread(r, "client_latency_p50_ms"),
            _mean(r, "client_latency_p90_ms"),
            _with_ci(r, "client_latency_p99_ms"),
            _mean(r, served_batch_column(agg)),
            _mean(r, "proc_ctx_per_req"),
        ] + ([_mean(r, "proc_ctx_all_per_req")] if has_all_ctx else []) + ([_mean(r, "client_minus_server_mean_ms", 2)] if has_agreement else []) + (
            [_mean(r, "efficiency", 2)] if has_efficiency else []
        )
        cells[0] = _mark(r, marks) + cells[0]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _mark(r: pd.Series, marks: _Marks) -> str:
    """The marks of a trial's first cell (✖ failed requests, ⚠ client-bound, ≠ client and
    server disagree, ≈ unstable, ⧗ steal), innermost first, noted in `marks`."""
    out = ""
    if _had_errors(r):
        out = "✖ " + out
        marks.errors.append(r["trial_id"])
    if bool(r.get("client_bound", False)):
        out = "⚠ " + out
        marks.bound.append(r["trial_id"])
    if bool(r.get("client_server_disagree", False)):
        out = "≠ " + out
        marks.disagree.append(r["trial_id"])
    if bool(r.get("client_unstable", False)):
        out = "≈ " + out
        marks.unstable.append(r["trial_id"])
    steal, stolen = r.get("host_steal_pct_max"), int(r.get("n_stolen", 0) or 0)
    if stolen:
        out = "⧗ " + out
        marks.steal.append(f"{r['trial_id']} ({stolen} left out)")
    elif steal is not None and not pd.isna(steal) and steal > STEAL_NOTE_PCT:
        out = "⧗ " + out
        marks.steal.append(f"{r['trial_id']} (every repeat; up to {steal:.0f}%)")
    return out


def _notes(marks: _Marks, min_success_rate: float) -> list[str]:
    """What each mark in the table means, with the trials that have it."""
    lines: list[str] = []
    if marks.disagree:
        from ..analysis.agreement import CLIENT_SERVER_BOUND_FRACTION, CLIENT_SERVER_BOUND_MS

        lines.append("")
        lines.append(
            f"≠ {len(marks.disagree)} trial(s) where client and server disagree: the client's mean "
            f"latency exceeds TorchServe's by more than {CLIENT_SERVER_BOUND_MS:g} ms + "
            f"{CLIENT_SERVER_BOUND_FRACTION:.0%} (loopback and parsing; see sweeper.analysis.agreement): "
            f"{', '.join(marks.disagree)}. The client measured time that is not the server's "
            "(a busy load engine, or requests waiting before TorchServe's timer starts)."
        )
    if marks.errors:
        lines.append("")
        lines.append(
            f"✖ {len(marks.errors)} trial(s) had failed requests (HTTP errors, timeouts, refused or "
            f"connection errors; see client_status_counts): {', '.join(marks.errors)}. "
            "Throughput counts served requests only; "
            + (
                "such a trial cannot be recommended."
                if min_success_rate >= 1.0
                else f"such a trial is recommended only when every repeat served at least "
                f"settings.min_success_rate ({min_success_rate:.2%}) of its requests."
            )
        )
    if marks.bound:
        lines.append("")
        lines.append(
            f"⚠ WARNING: {len(marks.bound)} trial(s) were client-bound (the load engine, not the "
            f"server, set the pace): {', '.join(marks.bound)}. Their figures understate the server."
        )
    if marks.unstable:
        lines.append("")
        lines.append(
            f"≈ UNSTABLE: {len(marks.unstable)} trial(s) never measured stable windows "
            f"(settings.stability) before max_duration_s: {', '.join(marks.unstable)}. Their figures "
            "come from their last windows, which did not agree; rerun or measure longer."
        )
    if marks.steal:
        lines.append("")
        lines.append(
            f"⧗ STEAL: in {len(marks.steal)} trial(s) the hypervisor gave more than {STEAL_NOTE_PCT:g}% of "
            f"this machine's CPU to another guest during a repeat (host_steal_pct): {', '.join(marks.steal)}. "
            "Such a repeat is left out of its trial's figures when the trial has one without; a trial "
            "with every repeat under steal keeps them, and its figures carry noise from outside the server."
        )
    return lines


def _failed(df: pd.DataFrame) -> list[str]:
    failed = df[df["status"] != "ok"]
    if failed.empty:
        return []
    lines = ["", "## Failed or interrupted trials", "", "| trial | repeat | status | error |", "|---|---|---|---|"]
    for _, r in failed.iterrows():
        err = str(r.get("error", "")).replace("|", "\\|")
        lines.append(f"| {r['trial_id']} | {r['repeat']} | {r['status']} | {err} |")
    return lines


def search_markdown(summary) -> list[str]:
    """The search section (sweeper.analysis.search.SearchSummary) as Markdown lines: the
    headline, the trace (best feasible value after each configuration measured, each
    relative to TorchServe's default) and which axes mattered."""
    unit = summary.unit
    lines = ["## Search", "", summary.headline + ".", ""]
    default = next((s for s in summary.steps if s.default), None)
    if default is None:
        lines.append(f"TorchServe's default configuration (trial {summary.default_trial_id}) was not measured; "
                     "figures are not relative to it.")
    elif summary.default_value is None:
        lines.append(f"TorchServe's default configuration (configuration {default.n}, {default.label}) "
                     "failed or missed a constraint; figures are not relative to it.")
    else:
        lines.append(f"Relative to TorchServe's default configuration (configuration {default.n}, {default.label}): "
                     f"{summary.default_value:.1f} {unit}.")
    for note in summary.default_notes:
        lines.append(f"- {note}")
    lines += ["", f"Restarts: {summary.server_starts} server start(s) and {summary.registrations} model registration(s) "
              f"for {summary.measured} configurations ({summary.server_starts / max(summary.measured, 1):.2f} starts per configuration).", ""]
    lines += ["### Search trace", "",
              f"Each configuration in the order measured: its objective (mean over repeats, {unit}), and the best feasible "
              "value so far. ✗ infeasible (p99 above the SLO or too few requests served), failed: a repeat failed.", "",
              f"| # | configuration | {summary.objective} {unit} | best so far | vs default |", "|---|---|---|---|---|"]
    for s in summary.steps:
        value = "failed" if s.value is None else f"{s.value:.1f}" + ("" if s.feasible else " ✗")
        best = "" if s.best is None else f"{s.best:.1f}"
        vs = "" if s.vs_default is None else ("default" if s.default else f"{100 * s.vs_default:+.0f}%")
        label = s.label.replace("|", "\\|") + (" (TorchServe default)" if s.default else "")
        lines.append(f"| {s.n} | {label} | {value} | {best} | {vs} |")
    lines += ["", "### Which axes mattered", ""]
    if summary.importances:
        lines += ["Optuna's parameter importances (PED-ANOVA over the measured configurations; shares sum to 1):", "",
                  "| axis | importance |", "|---|---|"]
        lines += [f"| {name} | {share:.2f} |" for name, share in summary.importances]
    else:
        lines.append(summary.importance_note.capitalize() + ".")
    return lines
