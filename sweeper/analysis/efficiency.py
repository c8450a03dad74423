"""Serving efficiency: joins the in-process ceilings onto the results table.

After a sweep (settings.baseline: true, or `sweeper baseline RUN_DIR`), the same model and
handler code run without TorchServe at every batch size and torch thread count the run used
(sweeper.analysis.ceiling measures them into `baseline.csv`); this module gives results.csv
`baseline_samples_per_s` and `efficiency` (served req/s / in-process samples/s; closed
loop only, since under a fixed rate the client sets the throughput).
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


def needed(rows: list[dict], cores: int) -> list[tuple[str, int, int]]:
    """Distinct (model, batch_size, threads) of the run's successful trials, sorted."""
    keys = {
        (str(r["param_model_name"]), int(r["param_model_batch_size"]), trial_threads(r, cores))
        for r in rows
        if r.get("status") == "ok"
    }
    return sorted(keys)


def add_efficiency(df: pd.DataFrame, run_dir: Path, cores: int | None) -> pd.DataFrame:
    """Join baseline.csv (if the run has one) onto the results table."""
    path = RunDir(run_dir).baseline_csv
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
