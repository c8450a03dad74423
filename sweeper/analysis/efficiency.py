"""Serving efficiency: each trial's served throughput against the in-process ceiling.

After a sweep (settings.baseline: true, or `sweeper baseline RUN_DIR`), the same model and
handler code run without TorchServe (sweeper.analysis.ceiling) at every batch size and torch
thread count the run used; `baseline.csv` keeps the figures and results.csv gains
`baseline_samples_per_s` and `efficiency` (served req/s / in-process samples/s; closed
loop only, since under a fixed rate the client sets the throughput).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

BASELINE_FILE = "baseline.csv"
THREAD_VARS = ("param_env_OMP_NUM_THREADS", "param_env_MKL_NUM_THREADS", "param_env_TORCH_NUM_THREADS")


def trial_threads(row: dict, cores: int) -> int:
    """The torch thread count a trial's workers ran with (torch's default: the cores)."""
    for col in THREAD_VARS:
        value = row.get(col)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return int(value)
    return cores


def needed(rows: list[dict], cores: int) -> list[tuple[str, int, int]]:
    """Distinct (model, batch_size, threads) of the run's successful trials, sorted."""
    keys = {
        (str(r["param_model_name"]), int(r["param_model_batch_size"]), trial_threads(r, cores))
        for r in rows
        if r.get("status") == "ok"
    }
    return sorted(keys)


def measure_run(run_dir: Path, rows: list[dict], cores: int, duration_s: float = 2.0) -> pd.DataFrame:
    """Measure the ceilings a run needs and write baseline.csv; returns the table."""
    from .ceiling import measure_grid

    results = []
    for model in sorted({m for m, _, _ in needed(rows, cores)}):
        keys = [k for k in needed(rows, cores) if k[0] == model]
        batch_sizes = sorted({b for _, b, _ in keys})
        threads = sorted({t for _, _, t in keys})
        results += measure_grid(model, batch_sizes, threads, duration_s)
    df = pd.DataFrame(
        [
            {"model": r.model, "batch_size": r.batch_size, "threads": r.threads, "samples_per_s": r.samples_per_s,
             "cpu_s": r.cpu_s, "duration_s": r.duration_s}
            for r in results
        ]
    )
    df.to_csv(run_dir / BASELINE_FILE, index=False)
    return df


def add_efficiency(df: pd.DataFrame, run_dir: Path, cores: int | None) -> pd.DataFrame:
    """Join baseline.csv (if the run has one) onto the results table."""
    path = run_dir / BASELINE_FILE
    if not path.exists() or df.empty or cores is None:
        return df
    base = pd.read_csv(path)
    lookup = {(str(m), int(b), int(t)): float(s) for m, b, t, s in base[["model", "batch_size", "threads", "samples_per_s"]].itertuples(index=False)}
    ceilings = []
    for row in df.to_dict("records"):
        try:
            key = (str(row["param_model_name"]), int(row["param_model_batch_size"]), trial_threads(row, cores))
        except (KeyError, TypeError, ValueError):
            key = None
        ceilings.append(lookup.get(key, math.nan))
    out = df.copy()
    out["baseline_samples_per_s"] = ceilings
    out["efficiency"] = out["client_throughput_rps"] / out["baseline_samples_per_s"] if "client_throughput_rps" in out else math.nan
    if "load_mode" in out:
        # under a fixed rate the client sets the throughput: a ratio would say nothing
        out.loc[out["load_mode"] == "open", "efficiency"] = math.nan
    return out
