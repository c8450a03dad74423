"""`sweeper compare RUN_A RUN_B ...`: the same sweep from different machines, side by side.

Trials are matched on their parameters (param_* and load_* columns), not on trial ids, so
runs of a sweep file whose machine-relative values (`cores`) resolved differently still
line up where the resolved values agree. The first run is the reference: every other run
gets a throughput ratio per configuration, and each run's best configuration is named.

A run of `sweeper run --ray` with settings.placement every_node measured every trial on
every node: it splits into one run per node (by results.csv's node_label, labelled from
nodes/<node>/machine.json), so `sweeper compare RUN` alone compares the cluster's machines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .analysis.aggregate import aggregate_trials
from .analysis.findings import thread_findings
from .analysis.objective import best as best_trial
from .errors import SpecError
from .report.rundata import min_success_from_sweep, read_yaml, slo_from_sweep
from .rundir import RunDir

FIGURE = "client_throughput_rps_mean"  # over the ok repeats of a trial


@dataclass(frozen=True)
class RunSummary:
    label: str  # what a reader calls the machine: "<hostname> (<cpu>, <n> cores)"
    run_dir: Path
    table: pd.DataFrame  # aggregated over repeats, one row per configuration
    best: pd.Series | None  # the run's pick by the sweep's objective (sweeper.analysis.objective)
    findings: tuple[str, ...] = ()  # the thread-contention finding, when the run has thread axes


def _label(run_dir: Path) -> str:
    m = RunDir(run_dir).machine()
    if not m:
        return run_dir.name
    return f"{m.get('hostname', '?')} ({m.get('cpu_model', '?')}, {m.get('cores_usable', '?')} cores) [{run_dir.name}]"


def _node_label(run_dir: Path, node: str) -> str:
    m = RunDir(run_dir).node_machines().get(node, {})
    if not m:
        return f"node {node} [{run_dir.name}]"
    return f"{m.get('hostname', '?')} ({m.get('cpu_model', '?')}, {m.get('cores_usable', '?')} cores) node {node} [{run_dir.name}]"


def _summary(label: str, run_dir: Path, df: pd.DataFrame) -> RunSummary:
    """The run's table and its pick: the recommendation's ranking, with the run's own SLO
    and success floor (its sweep.yaml), so compare names the configuration the report
    recommends."""
    sweep = read_yaml(RunDir(run_dir).sweep_yaml)
    floor = min_success_from_sweep(sweep)
    table = aggregate_trials(df, floor)
    table = table[table["n_ok"] > 0].reset_index(drop=True)
    cores = RunDir(run_dir).cores()
    findings = tuple(thread_findings(df, cores, floor)) if cores else ()
    return RunSummary(label, run_dir, table, best_trial(table, slo_from_sweep(sweep)), findings)


def load_runs(run_dir: Path) -> list[RunSummary]:
    """One summary per machine: the run, or one per node of a run across Ray nodes."""
    csv = RunDir(run_dir).results_csv
    if not csv.exists():
        raise SpecError(str(run_dir), "", f"not a run directory (no {csv.name})")
    df = pd.read_csv(csv)
    if "status" not in df or df.empty:
        raise SpecError(str(csv), "", f"no trials in {csv.name}")
    nodes = df["node_label"].dropna().astype(str).unique().tolist() if "node_label" in df else []
    if len(nodes) > 1:
        return [_summary(_node_label(run_dir, n), run_dir, df[df["node_label"].astype(str) == n]) for n in nodes]
    return [_summary(_label(run_dir), run_dir, df)]


def _keys(tables: list[pd.DataFrame]) -> list[str]:
    """Parameter columns present in every run (columns absent somewhere cannot match)."""
    common = None
    for t in tables:
        cols = {c for c in t.columns if c.startswith(("param_", "load_"))}
        common = cols if common is None else common & cols
    return sorted(common or [])


def _key_text(row: pd.Series, keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = row[k]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        parts.append(f"{k.split('_', 2)[-1] if k.startswith('param_') else k}={v}")
    return " ".join(parts)


def compare(run_dirs: list[Path]) -> tuple[pd.DataFrame, list[tuple[str, str, float]]]:
    """(matched table, [(label, best configuration, throughput)]) for the given runs."""
    runs = [r for d in run_dirs for r in load_runs(Path(d))]
    if len(runs) < 2:
        raise SpecError("sweeper compare", "RUN", "give at least two run directories, or one run of every node (--ray, settings.placement: every_node)")
    keys = _keys([r.table for r in runs if not r.table.empty])
    varying = [k for k in keys if any(r.table[k].astype(str).nunique() > 1 for r in runs if not r.table.empty)]
    merged: pd.DataFrame | None = None
    best = []
    for i, run in enumerate(runs):
        t = run.table
        if t.empty:
            best.append((run.label, "no successful trial", math.nan))
            continue
        top = run.best
        if top is None:
            best.append((run.label, "no eligible closed-loop trial (success floor, SLO)", math.nan))
        else:
            best.append((run.label, _key_text(top, varying or keys), float(top[FIGURE])))
        part = t[keys + [FIGURE]].copy()
        for k in keys:  # NaN never equals NaN: match on text
            part[k] = part[k].astype(str)
        part = part.rename(columns={FIGURE: f"run{i}"})
        merged = part if merged is None else merged.merge(part, on=keys, how="inner")
    if merged is None:
        merged = pd.DataFrame()
    for i in range(1, len(runs)):
        if f"run{i}" in merged and "run0" in merged:
            merged[f"ratio{i}"] = merged[f"run{i}"] / merged["run0"]
    merged.attrs["labels"] = [r.label for r in runs]
    merged.attrs["findings"] = [list(r.findings) for r in runs]
    merged.attrs["varying"] = varying
    return merged, best


def markdown(merged: pd.DataFrame, best: list[tuple[str, str, float]]) -> str:
    labels = merged.attrs.get("labels", [])
    varying = merged.attrs.get("varying", [])
    lines = ["# Comparison of runs", ""]
    for i, label in enumerate(labels):
        lines.append(f"- run{i}: {label}" + (" (reference)" if i == 0 else ""))
    lines += ["", "## Best configuration of each run", "", "| run | best configuration | throughput req/s |", "|---|---|---|"]
    for i, (label, config, value) in enumerate(best):
        lines.append(f"| run{i} | {config} | {value:.1f} |")
    findings = merged.attrs.get("findings", [])
    if any(findings):
        # each with its 95% interval: two runs agree on a finding when their intervals point
        # the same way, or both say the effect cannot be told from noise
        lines += ["", "## Thread-contention finding of each run", ""]
        for i, found in enumerate(findings):
            lines += [f"run{i}:", ""] + [f"- {s}" for s in found] + [""]
    lines += ["", f"## Matched configurations ({len(merged)})", ""]
    if merged.empty:
        lines.append("No configuration appears in every run.")
        return "\n".join(lines) + "\n"
    cols = [c for c in varying] or []
    head = [c.split("_", 2)[-1] if c.startswith("param_") else c for c in cols]
    head += [f"run{i} req/s" for i in range(len(labels))] + [f"run{i}/run0" for i in range(1, len(labels))]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for _, r in merged.iterrows():
        cells = [str(r[c]).removesuffix(".0") for c in cols]
        cells += [f"{r[f'run{i}']:.1f}" for i in range(len(labels))]
        cells += [f"{r[f'ratio{i}']:.2f}x" for i in range(1, len(labels))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
