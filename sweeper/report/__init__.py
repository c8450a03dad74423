"""The run report: ``report.html`` (one self-contained file: inline CSS, JS and SVG plots;
works offline from file://) and ``report.md`` (the same tables and the recommendation,
for a terminal or a pull request), written into the run directory.

    render_report(run_dir, slo_p99_ms=None, *, heatmap_axes=None) -> (html_path, md_path)

Modules: ``rundata`` reads the run directory (and redacts), ``aggregate`` reduces repeats
to trials, ``recommend`` picks winners, ``tables`` and ``plots`` build what is shown,
``fmt`` formats values. The templates are ``templates/report.html.j2`` and
``templates/report.md.j2``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import yaml

from sweeper.report import fmt
from sweeper.analysis.aggregate import aggregate_trials, column, param_columns, varying
from sweeper.report.duel import apply as apply_duel, read as read_duel, section as duel_section
from sweeper.report.recommend import Recommendation, recommend
from sweeper.report.rundata import (
    MAX_FAILURE_TAILS,
    RunData,
    min_success_from_sweep,
    read_failures,
    read_run,
    slo_from_sweep,
)
from sweeper.analysis.search import run_search
from sweeper.report.markdown import search_markdown
from sweeper.report.tables import fixed_params, machine_rows, summary_table
from sweeper.rundir import RunDir, write_atomic

__all__ = ["render_report"]

# The templates live at the repository root next to the config templates.
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"


def render_report(
    run_dir: Path,
    slo_p99_ms: float | None = None,
    *,
    heatmap_axes: tuple[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write report.html and report.md into ``run_dir``; return their paths.

    ``slo_p99_ms`` overrides ``settings.slo_p99_ms`` of the run's sweep.yaml.
    ``heatmap_axes`` names the two param_* columns of the thread heatmaps (default: the two
    varying worker/thread parameters with the most levels).
    Raises SweeperError if run_dir has no results.csv or heatmap_axes names no column.
    """
    run_dir = Path(run_dir)
    data = read_run(run_dir)
    context = build_context(data, slo_p99_ms, heatmap_axes)
    env = _environment()
    run = RunDir(run_dir)
    html, md = run.report_html, run.report_md
    # atomic: a reader (a browser left open on the report) never sees half a file
    write_atomic(html, env.get_template("report.html.j2").render(**context))
    write_atomic(md, env.get_template("report.md.j2").render(**context))
    return html, md


def build_context(
    data: RunData, slo_p99_ms: float | None = None, heatmap_axes: tuple[str, str] | None = None
) -> dict[str, Any]:
    """Everything the templates show, as plain values."""
    # the plots' modules (matplotlib) load here: writing results.md through this package
    # (sweeper.report.markdown) needs none of them
    from sweeper.report.gpu import gpu_section
    from sweeper.report.plots import make_plots

    if slo_p99_ms is not None:
        slo, source = float(slo_p99_ms), "given on the command line"
    else:
        slo = slo_from_sweep(data.sweep)
        source = "settings.slo_p99_ms in sweep.yaml" if slo is not None else ""
    trials = aggregate_trials(data.results, min_success_from_sweep(data.sweep))
    objective = run_objective(data)
    rec = recommend(trials, slo, source, objective)
    duel = read_duel(data.run_dir)
    rec = apply_duel(rec, duel)  # the pick the duel measured: its paired verdict decides
    plots, skipped = make_plots(trials, slo, heatmap_axes)
    table = summary_table(trials, _badges(rec), by_capacity=objective == "capacity")
    failures = read_failures(data)
    search = run_search(data.run_dir, data.results)
    return {
        "search": search,
        "search_md": "\n".join(search_markdown(search)[1:]) if search is not None else "",
        "search_plot": _search_plot(search),
        "run": _run_meta(data, trials),
        "rec": rec,
        "table": table,
        "fixed": [(fmt.short_name(k), k, v) for k, v in fixed_params(trials)],
        "varying_labels": _varying_labels(trials),
        "plots": plots,
        "skipped_plots": skipped,
        "failures": failures,
        "max_failure_tails": MAX_FAILURE_TAILS,
        "machine": machine_rows(data.machine),
        "findings": _findings(data) + target_notes(data.machine),
        "verify": _verify(data),
        "duel": duel_section(duel),  # None: no sweeper duel
        "sweep_yaml": yaml.safe_dump(data.sweep, sort_keys=False, allow_unicode=True) if data.sweep else "",
        "gpu": gpu_section(data.results, trials),  # None: no trial used a GPU
    }


def _search_plot(search):
    from sweeper.report.plots import search_trace

    if search is None:
        return None
    plot = search_trace(search)
    return plot if not isinstance(plot, str) else None


def _findings(data: RunData) -> list[str]:
    """The thread-contention finding in words (sweeper.analysis.findings), when the run has thread axes."""
    from ..analysis.findings import thread_findings

    cores = data.machine.get("cores_usable") or data.machine.get("cores_logical")
    try:
        return thread_findings(data.results, int(cores), min_success_from_sweep(data.sweep)) if cores else []
    except (TypeError, ValueError):
        return []


def target_notes(machine: dict) -> list[str]:
    """A run on a target (a TorchServe the sweeper did not start, machine.json `target`):
    which server it measured from where, and why some columns are empty rather than zero."""
    target = machine.get("target")
    if not isinstance(target, dict):
        return []
    version = target.get("torchserve") or "version not reported"
    client = machine.get("hostname") or "the machine that ran the sweeper"
    out = [f"Measured on a TorchServe the sweeper did not start, {target.get('inference', '')} (TorchServe {version}); "
           f"the load came from {client}. Served batch sizes from the server's "
           "log (server_batch_*) are empty: that log is its owner's."]
    if not target.get("processes_sampled"):
        out.append(f"The server's CPU, memory and context switches (proc_* columns) are empty, not zero: "
                   f"{target.get('processes_note') or 'its processes were not found on this machine'}.")
    return out


def _verify(data: RunData) -> str:
    """The `sweeper verify` sentence when the run has a verify.json, else ''."""
    from .verified import read, summary_line

    found = read(data.run_dir)
    return summary_line(found) if found else ""


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        # .html.j2 is escaped, .md.j2 is not (Markdown cells go through the md filter).
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        num=fmt.num,
        span=fmt.span,
        value=fmt.value,
        md=fmt.md_cell,
        short=fmt.short_name,
        load_label=fmt.load_label,
        sortkey=_sort_attr,
        missing=fmt.is_missing,
    )
    return env


def _sort_attr(key: float | str) -> str:
    if isinstance(key, float):
        return "" if np.isnan(key) else repr(key)
    return str(key)


def run_objective(data: RunData) -> str:
    """The run's search.objective (sweep.yaml); capacity too for a run whose results have
    capacity_rps_at_slo but no sweep.yaml."""
    search = data.sweep.get("search") if isinstance(data.sweep, dict) else None
    objective = search.get("objective") if isinstance(search, dict) else None
    if objective:
        return str(objective)
    return "capacity" if column(data.results, "capacity_rps_at_slo").notna().any() else "throughput"


def _badges(rec: Recommendation) -> dict[str, str]:
    out: dict[str, str] = {}
    if rec.capacity:
        out[str(rec.capacity.winner["trial_id"])] = f"★ highest capacity at p99 ≤ {fmt.value(rec.slo_p99_ms)} ms"
    if rec.throughput:
        out[str(rec.throughput.winner["trial_id"])] = "★ best throughput"
    if rec.latency:
        tid = str(rec.latency.winner["trial_id"])
        label = f"★ best under p99 ≤ {fmt.value(rec.slo_p99_ms)} ms"
        out[tid] = f"{out[tid]}; {label}" if tid in out else label
    return out


def _varying_labels(trials: pd.DataFrame) -> list[str]:
    return varying(trials, param_columns(trials))


def _run_meta(data: RunData, trials: pd.DataFrame) -> dict[str, Any]:
    df = data.results

    def first(name: str) -> str:
        values = column(df, name).dropna()
        return str(values.iloc[0]) if len(values) else ""

    started = column(df, "started_at").dropna().astype(str)
    wall = pd.to_numeric(column(df, "wall_s"), errors="coerce")
    measure = pd.to_numeric(column(df, "measure_s"), errors="coerce")
    statuses = Counter(column(df, "status").astype("string").fillna("").replace("", "unknown"))
    return {
        "sweep": first("sweep") or str(data.sweep.get("name", "")) or data.run_dir.name,
        "run_id": first("run_id") or data.run_dir.name,
        "run_dir": data.run_dir.name,
        "first_start": started.min() if len(started) else "",
        "last_start": started.max() if len(started) else "",
        "rows": len(df),
        "trials": len(trials),
        "repeats_max": int(trials["repeats"].max()) if len(trials) else 0,
        "statuses": sorted(statuses.items()),
        "wall_s": float(wall.sum()) if wall.notna().any() else None,
        "measure_share": float(measure.sum() / wall.sum()) if wall.sum() > 0 else None,
        "duration": _duration(float(wall.sum())) if wall.notna().any() else "",
    }


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"
