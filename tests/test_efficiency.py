"""Serving efficiency: the right ceiling for each trial, joined onto the results table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sweeper.analysis.efficiency import add_efficiency, needed, trial_threads


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"param_env_OMP_NUM_THREADS": 4}, 4),
        ({"param_env_MKL_NUM_THREADS": 2.0}, 2),
        ({"param_env_OMP_NUM_THREADS": float("nan")}, 8),  # unset: torch uses the cores
        ({}, 8),
    ],
)
def test_trial_threads(row, expected):
    assert trial_threads(row, cores=8) == expected


def test_needed_lists_distinct_ok_combinations():
    rows = [
        {"status": "ok", "param_model_name": "mlp", "param_model_batch_size": 1, "param_env_OMP_NUM_THREADS": 1},
        {"status": "ok", "param_model_name": "mlp", "param_model_batch_size": 1, "param_env_OMP_NUM_THREADS": 1},
        {"status": "ok", "param_model_name": "mlp", "param_model_batch_size": 8},
        {"status": "failed", "param_model_name": "cnn", "param_model_batch_size": 4},
    ]
    # no worker setting: TorchServe's default, one worker per core
    assert needed(rows, cores=2) == [("mlp", 1, 1, 2), ("mlp", 8, 2, 2)]


def test_efficiency_joins_closed_loop_rows_only(tmp_path):
    pd.DataFrame([{"model": "mlp", "batch_size": 1, "threads": 1, "samples_per_s": 1000.0}]).to_csv(tmp_path / "baseline.csv", index=False)
    df = pd.DataFrame(
        [
            {"param_model_name": "mlp", "param_model_batch_size": 1, "param_env_OMP_NUM_THREADS": 1, "param_model_min_workers": 1, "load_mode": "closed", "client_throughput_rps": 250.0},
            {"param_model_name": "mlp", "param_model_batch_size": 1, "param_env_OMP_NUM_THREADS": 1, "param_model_min_workers": 1, "load_mode": "open", "client_throughput_rps": 100.0},
            {"param_model_name": "mlp", "param_model_batch_size": 4, "param_env_OMP_NUM_THREADS": 1, "param_model_min_workers": 1, "load_mode": "closed", "client_throughput_rps": 100.0},
        ]
    )
    out = add_efficiency(df, tmp_path, cores=2)
    assert out["efficiency"][0] == pytest.approx(0.25)
    assert math.isnan(out["efficiency"][1])  # fixed rate: the client sets the throughput
    assert math.isnan(out["baseline_samples_per_s"][2]) and math.isnan(out["efficiency"][2])
    assert add_efficiency(df, tmp_path / "nothing", cores=2) is df
