"""Serving efficiency: joins the in-process ceilings onto the results table.

After a sweep (settings.baseline: true, or `sweeper baseline RUN_DIR`), the same model and
handler code run without TorchServe at every batch size and torch thread count the run used
(sweeper.ceiling measures them into `baseline.csv`); this module gives results.csv
`baseline_samples_per_s` and `efficiency` (served req/s / in-process samples/s; closed
loop only, since under a fixed rate the client sets the throughput). The ceiling matches
the trial's batch size, torch threads *and workers* (that many processes measured at once,
on the run's server_cpus): a trial with no such ceiling gets no efficiency.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..rundir import RunDir

THREAD_VARS = ("param_env_OMP_NUM_THREADS", "param_env_MKL_NUM_THREADS")  # torch does not read TORCH_NUM_THREADS


def trial_threads(row: dict, cores: int) -> int:
    """The torch thread count a trial's workers ran with (torch's default: the cores)."""
    for col in THREAD_VARS:
        value = row.get(col)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return int(value)
    return cores


WORKER_VARS = ("param_model_min_workers", "param_server_default_workers_per_model")


def trial_workers(row: dict, cores: int) -> int:
    """Backend workers of a trial's model: min_workers (the initial workers it was registered
    with), else default_workers_per_model, else TorchServe's default on a CPU machine (one
    worker per core)."""
    for col in WORKER_VARS:
        value = row.get(col)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return int(value)
    return cores


def trial_key(row: dict, cores: int) -> tuple[str, int, int, int]:
    return (str(row["param_model_name"]), int(row["param_model_batch_size"]), trial_threads(row, cores),
            trial_workers(row, cores))


def needed(rows: list[dict], cores: int) -> list[tuple[str, int, int, int]]:
    """Distinct (model, batch_size, threads, workers) of the run's successful trials, sorted."""
    return sorted({trial_key(r, cores) for r in rows if r.get("status") == "ok"})


def add_efficiency(df: pd.DataFrame, run_dir: Path, cores: int | None) -> pd.DataFrame:
    """Join baseline.csv (if the run has one) onto the results table."""
    path = RunDir(run_dir).baseline_csv
    if not path.exists() or df.empty or cores is None:
        return df
    base = pd.read_csv(path)
    if "workers" not in base:
        base["workers"] = 1  # a baseline.csv from before workers were measured: one process
    lookup = {
        (str(m), int(b), int(t), int(w)): float(s)
        for m, b, t, w, s in base[["model", "batch_size", "threads", "workers", "samples_per_s"]].itertuples(index=False)
    }
    ceilings = []
    for row in df.to_dict("records"):
        try:
            key = trial_key(row, cores)
        except (KeyError, TypeError, ValueError):
            key = None
        ceilings.append(lookup.get(key, math.nan))
    out = df.copy()
    out["baseline_samples_per_s"] = ceilings
    out["efficiency"] = out["client_throughput_rps"] / out["baseline_samples_per_s"] if "client_throughput_rps" in out else math.nan
    if "load_mode" in out:
        # under a fixed rate the client sets the throughput: a ratio would say nothing
        out.loc[out["load_mode"].isin(["open", "capacity"]), "efficiency"] = math.nan
    return out
