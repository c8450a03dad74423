"""The tables of the report as plain data (columns, rows of cells with text and a sort
key), shared by the HTML and the Markdown templates: the summary of all trials, the
fixed parameters and the machine fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sweeper.report import fmt
from sweeper.analysis.aggregate import column, param_columns, served_batch_column, varying


@dataclass(frozen=True)
class Column:
    label: str
    title: str  # tooltip: the results.csv column(s) behind it
    numeric: bool


@dataclass(frozen=True)
class Cell:
    text: str
    sort: float | str  # what the header click sorts by; NaN sorts last


@dataclass(frozen=True)
class Row:
    trial_id: str
    cells: tuple[Cell, ...]
    kind: str  # "ok" | "failed" | "client-bound" | "unstable" | "partial": CSS class and marker
    notes: str  # why the row is marked; empty for a clean ok row


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]


def fixed_params(trials: pd.DataFrame) -> list[tuple[str, str]]:
    """Parameters with one value in the whole run: said once instead of in every row."""
    params = param_columns(trials)
    moving = set(varying(trials, params))
    return [(c, fmt.value(trials[c].iloc[0])) for c in params if c not in moving and len(trials)]


def summary_table(trials: pd.DataFrame, badges: dict[str, str] | None = None, by_capacity: bool = False) -> Table:
    """One row per trial, best mean throughput first (`by_capacity`: highest
    capacity_rps_at_slo first), trials without a measurement last."""
    badges = badges or {}
    params = varying(trials, param_columns(trials))
    spread = bool(len(trials)) and int(trials["n_ok"].max()) > 1
    with_ci = column(trials, "client_throughput_rps_ci_lo").notna().any()

    specs: list[tuple[Column, Any]] = [
        (Column("trial", "trial_id", False), lambda r: (r["trial_id"], r["trial_id"])),
        (Column("status", "status over repeats; client_bound", False), _status_cell),
    ]
    for name in params:
        specs.append((Column(fmt.short_name(name), name, _numeric(trials[name])), _param(name)))
    specs.append((Column("load", "load_mode, load_concurrency, load_rate_rps", False), _load))
    specs.append((Column("repeats ok", "repeats with status ok / repeats", True), _repeats))
    if column(trials, "capacity_rps_at_slo_mean").notna().any():
        specs.append((Column("capacity req/s at SLO", "capacity_rps_at_slo: mean over ok repeats (the rate search's highest passing rate; 0: even start_rps failed)", True), _metric("capacity_rps_at_slo_mean")))
        specs.append((Column("capacity min–max", "capacity_rps_at_slo: min–max over repeats", True), _range("capacity_rps_at_slo")))
    specs.append((Column("req/s", "client_throughput_rps: mean over ok repeats", True), _metric("client_throughput_rps_mean")))
    if with_ci:
        specs.append((Column("req/s 95% CI", "client_throughput_rps: 95% bootstrap interval over windows and repeats", True), _ci("client_throughput_rps")))
    elif spread:
        specs.append((Column("req/s min–max", "client_throughput_rps: min–max over repeats", True), _range("client_throughput_rps")))
    specs.append((Column("p50 ms", "client_latency_p50_ms: mean", True), _metric("client_latency_p50_ms_mean")))
    specs.append((Column("p99 ms", "client_latency_p99_ms: mean of the repeats' own p99s (not pooled)", True), _metric("client_latency_p99_ms_mean")))
    if with_ci:
        specs.append((Column("p99 95% CI", "client_latency_p99_ms: 95% bootstrap interval over windows and repeats", True), _ci("client_latency_p99_ms")))
    elif spread:
        specs.append((Column("p99 min–max", "client_latency_p99_ms: min–max over repeats", True), _range("client_latency_p99_ms")))
    specs.append((Column("success", "client_success_rate: lowest over ok repeats", True), _success))
    for name, label in (
        (served_batch_column(trials), "batch served"),
        ("proc_ctx_per_req", "ctx sw/req (main threads)"),
        ("proc_ctx_all_per_req", "ctx sw/req (all threads)"),
        ("proc_cpu_pct", "server CPU %"),
        ("client_minus_server_mean_ms", "client − server ms"),
    ):
        if column(trials, f"{name}_mean").notna().any():
            specs.append((Column(label, f"{name}: mean", True), _metric(f"{name}_mean")))

    rank = "capacity_rps_at_slo_mean" if by_capacity else "client_throughput_rps_mean"
    order = trials.assign(_t=column(trials, rank)).sort_values(
        "_t", ascending=False, na_position="last", kind="stable"
    )
    rows = []
    for _, r in order.iterrows():
        cells = tuple(Cell(*fn(r)) for _, fn in specs)
        kind, notes = _mark(r)
        badge = badges.get(str(r["trial_id"]))
        if badge:
            notes = f"{badge}; {notes}" if notes else badge
            # The star also in the status column, which is on screen without scrolling.
            status = cells[1]
            cells = (cells[0], Cell(f"★ {status.text}", status.sort), *cells[2:])
        rows.append(Row(str(r["trial_id"]), cells, kind, notes))
    columns = tuple(c for c, _ in specs) + (Column("notes", "status, error, client_bound_reason", False),)
    return Table(columns, tuple(rows))


def machine_rows(machine: dict[str, Any]) -> list[tuple[str, str]]:
    """machine.json is free-form: show every key; nested values as compact JSON."""
    out = []
    for key, v in machine.items():
        text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        out.append((str(key), text))
    return out


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _param(name: str):
    def cell(r: pd.Series) -> tuple[str, float | str]:
        v = r[name]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not fmt.is_missing(v):
            return fmt.value(v), float(v)
        return fmt.value(v), fmt.value(v)

    return cell


def _load(r: pd.Series) -> tuple[str, str]:
    # Sort closed before open, then by level, numerically, through a padded key.
    level = r.get("load_concurrency") if r.get("load_mode") == "closed" else r.get("load_rate_rps")
    level = 0.0 if fmt.is_missing(level) else float(level)
    return fmt.load_label(r), f"{r.get('load_mode', '')}:{level:012.3f}"


def _repeats(r: pd.Series) -> tuple[str, float]:
    return f"{int(r['n_ok'])}/{int(r['repeats'])}", float(r["n_ok"])


def _metric(name: str):
    def cell(r: pd.Series) -> tuple[str, float]:
        v = r.get(name)
        return fmt.num(v), float("nan") if fmt.is_missing(v) else float(v)

    return cell


def _range(name: str):
    def cell(r: pd.Series) -> tuple[str, float]:
        lo, hi = r.get(f"{name}_min"), r.get(f"{name}_max")
        if int(r["n_ok"]) < 2:
            return ("one repeat" if int(r["n_ok"]) == 1 else "–"), float("nan")
        return fmt.span(lo, hi), float(hi) - float(lo)

    return cell


def _ci(name: str):
    def cell(r: pd.Series) -> tuple[str, float]:
        lo, hi = r.get(f"{name}_ci_lo"), r.get(f"{name}_ci_hi")
        if fmt.is_missing(lo) or fmt.is_missing(hi):
            return ("one value" if int(r["n_ok"]) == 1 else "–"), float("nan")
        return fmt.span(lo, hi), float(hi) - float(lo)

    return cell


def _success(r: pd.Series) -> tuple[str, float]:
    v = r.get("client_success_rate_min")
    if fmt.is_missing(v):
        return "–", float("nan")
    return fmt.success(v), float(v)


def _status_cell(r: pd.Series) -> tuple[str, str]:
    kind, _ = _mark(r)
    text = {"failed": f"✖ {r['status']}", "client-bound": "⚠ client-bound", "unstable": "≈ unstable"}.get(kind, str(r["status"]))
    if kind == "client-bound" and not bool(r.get("client_bound", False)):
        text = "≠ client vs server"  # marked for client_server_disagree only
    if kind == "partial" and r["status"] == "ok":
        text = "⚠ errors"
    return text, text


def _mark(r: pd.Series) -> tuple[str, str]:
    notes = []
    kind = "ok"
    if int(r["n_failed"]) > 0:
        kind = "failed"
        notes.append(f"{r['status']}: {r['error'] or 'no error recorded'}")
    elif r["status"] != "ok":
        kind = "partial"
        notes.append(str(r["status"]))
    if bool(r.get("client_bound", False)):
        kind = "client-bound" if kind == "ok" else kind
        notes.append(f"client-bound: {r['client_bound_reason'] or 'the load client set the pace'}")
    if bool(r.get("client_server_disagree", False)):
        kind = "client-bound" if kind == "ok" else kind
        diff = r.get("client_minus_server_mean_ms_mean")
        notes.append(
            "client and server disagree"
            + ("" if fmt.is_missing(diff) else f" (client mean − server mean {fmt.num(diff)} ms)")
        )
    if bool(r.get("client_unstable", False)):
        kind = "unstable" if kind == "ok" else kind
        cv = r.get("client_window_cv_max")
        spread = f" (window CV up to {float(cv) * 100:.0f}%)" if not fmt.is_missing(cv) and float(cv) < 10 else ""
        notes.append(f"unstable: its windows never agreed within settings.stability.max_cv{spread}")
    rate = r.get("client_success_rate_min")
    if not fmt.is_missing(rate) and float(rate) < 1.0:
        kind = "partial" if kind == "ok" else kind
        notes.append(f"only {fmt.success(rate)} of requests served")
    return kind, "; ".join(notes)
