"""The tidy results table: one row per trial and repeat, rebuilt from the run's result.json
files (sweeper.rundir), written as results.csv and results.md (sweeper.report.markdown).

Every column is documented in sweeper.columns (one entry per column or family of columns,
with its unit), from which docs/reference/columns.md is generated. Flat and prefixed, in
the order of column_order: identity and node_* first, then param_*, load_*, client_*,
server_*, proc_*, the timing columns and the rest; NaN or empty where a column does not
apply.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .rundir import RunDir, write_atomic

IDENTITY = ["sweep", "run_id", "seq", "trial_id", "repeat", "group_id", "status", "error", "started_at"]
# with --ray (sweeper.executors.ray): where the trial ran; the node's fingerprint is
# nodes/<node_label>/machine.json
NODE = ["node_label", "node_ip", "node_id", "node_hostname", "node_cpu_model", "node_cores_usable", "ray_overhead_s"]
TIMING = ["wall_s", "measure_s", "overhead_s"]
PREFIXES = ("param_", "load_", "client_", "server_", "proc_")


def column_order(columns: list[str]) -> list[str]:
    ordered = [c for c in IDENTITY + NODE if c in columns]
    for prefix in PREFIXES:
        ordered += [c for c in columns if c.startswith(prefix)]
    ordered += [c for c in TIMING if c in columns]
    ordered += [c for c in columns if c not in ordered and c != "log_tail"]
    return ordered


def table(run_dir: Path) -> pd.DataFrame:
    rows = list(RunDir(run_dir).rows().values())
    if not rows:
        return pd.DataFrame(columns=IDENTITY)
    df = pd.DataFrame(rows)
    df = df.sort_values(["seq", "repeat"], kind="stable") if "seq" in df else df
    return df[column_order(list(df.columns))].reset_index(drop=True)


def write_tables(run_dir: Path) -> list[dict]:
    """Rebuild results.csv and results.md from the per-trial files."""
    from .analysis.efficiency import add_efficiency
    from .analysis.search import run_search
    from .report.markdown import markdown
    from .report.rundata import min_success_from_sweep, read_yaml

    run = RunDir(run_dir)
    cores = run.cores()
    df = add_efficiency(table(run_dir), run_dir, cores)
    write_atomic(run.results_csv, df.to_csv(index=False))
    title = str(df["sweep"].iloc[0]) if not df.empty and "sweep" in df else run.name
    floor = min_success_from_sweep(read_yaml(run.sweep_yaml))
    md = markdown(df, f"{title}: {run.name}", cores=cores, search=run_search(run.path, df), min_success_rate=floor)
    write_atomic(run.results_md, md)
    return df.to_dict("records")

