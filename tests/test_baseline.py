"""The in-process baseline: real (tiny) measurements in child processes, and argument checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sweeper.ceiling import BaselineResult, _measure_in_this_process, measure_baseline, measure_grid
from sweeper.errors import SpecError


def test_measure_baseline_reports_positive_throughput():
    result = measure_baseline("mlp", batch_size=2, threads=1, duration_s=0.05)
    assert (result.model, result.batch_size, result.threads, result.path) == ("mlp", 2, 1, "handler")
    assert result.batches >= 3 and result.duration_s >= 0.05 and result.cpu_s > 0
    assert result.samples_per_s == pytest.approx(result.batches * 2 / result.duration_s)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.batches = 0  # type: ignore[misc]


def test_measure_grid_runs_every_pair_threads_major():
    results = measure_grid("transformer", [1, 4], [1, 2], duration_s=0.02, path="forward")
    assert [(r.threads, r.batch_size) for r in results] == [(1, 1), (1, 4), (2, 1), (2, 4)]
    assert all(isinstance(r, BaselineResult) and r.samples_per_s > 0 and r.path == "forward" for r in results)


@pytest.fixture
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_the_handler_path_runs_for_every_model(name, restore_torch_threads):
    [result] = _measure_in_this_process(name, [3], threads=1, duration_s=0.01, path="handler")
    assert result.samples_per_s > 0 and result.batches >= 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "resnet"}, "unknown model 'resnet'"),
        ({"batch_sizes": [1, 0]}, "batch_size[1]: must be an integer >= 1, got 0"),
        ({"threads_list": [2.5]}, "threads[0]: must be an integer >= 1, got 2.5"),
        ({"threads_list": []}, "must not be empty"),
        ({"duration_s": 0}, "duration_s: must be > 0"),
        ({"path": "torch"}, "path: must be one of handler, forward"),
    ],
)
def test_bad_arguments_are_refused_with_the_rule(kwargs, message):
    args = {"model": "mlp", "batch_sizes": [1], "threads_list": [1], "duration_s": 0.01, **kwargs}
    with pytest.raises(SpecError) as err:
        measure_grid(**args)
    assert message in str(err.value)


def test_a_run_measures_every_worker_count_with_one_set_of_processes_per_thread_count(tmp_path, monkeypatch):
    import subprocess

    import pandas as pd

    from sweeper import ceiling

    started = []
    real_popen = subprocess.Popen

    def counting_popen(command, *args, **kwargs):
        started.append(command)
        return real_popen(command, *args, **kwargs)

    monkeypatch.setattr(ceiling.subprocess, "Popen", counting_popen)
    trial = {"status": "ok", "param_model_name": "mlp", "param_model_batch_size": 2, "param_env_OMP_NUM_THREADS": 1}
    rows = [{**trial, "param_model_min_workers": w} for w in (1, 2, 3)] + [{**trial, "param_model_min_workers": 2, "status": "failed",
                                                                          "param_model_batch_size": 4}]
    df = ceiling.measure_run(tmp_path, rows, cores=2, duration_s=0.05)
    assert len(started) == 3  # the most workers any step asks for, started once
    assert all("1x2,2x2,3x2" in command for command in started)
    assert list(df["workers"]) == [1, 2, 3] and set(df["batch_size"]) == {2} and set(df["threads"]) == {1}
    assert (df["samples_per_s"] > 0).all()
    assert pd.read_csv(tmp_path / "baseline.csv")["workers"].tolist() == [1, 2, 3]
