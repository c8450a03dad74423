"""Per-trial result files, the tidy table and results.md."""

from __future__ import annotations

import json
import re
import math
import os

import numpy as np
import pandas as pd
import pytest

from sweeper import results, rundir
from sweeper.report.markdown import markdown
from sweeper.analysis.aggregate import aggregate_trials


def row(trial_id: str, repeat: int = 0, status: str = "ok", seq: int = 0, **over) -> dict:
    r = {
        "sweep": "s",
        "run_id": "s-20300101-000000",
        "seq": seq,
        "trial_id": trial_id,
        "repeat": repeat,
        "group_id": "g1",
        "status": status,
        "error": "" if status == "ok" else "TorchServe died during the measured window",
        "started_at": "2030-01-01T00:00:00+00:00",
        "param_model_name": "mlp",
        "param_model_batch_size": 1,
        "load_mode": "closed",
        "load_concurrency": 4,
        "client_throughput_rps": 100.0,
        "client_success_rate": 1.0,
        "client_latency_p50_ms": 2.0,
        "client_latency_p90_ms": 3.0,
        "client_latency_p99_ms": 4.0,
        "client_batch_size_mean": 1.0,
        "client_bound": False,
        "server_queue_latency_mean_ms": 0.5,
        "proc_ctx_per_req": 3.0,
        "proc_cpu_pct": 150.0,
        "wall_s": 5.0,
        "measure_s": 4.0,
        "overhead_s": 1.0,
        "log_tail": "",
    }
    r.update(over)
    return r


def put(run_dir, r: dict):
    return rundir.write_result(run_dir / "trials" / f"{r['trial_id']}-r{r['repeat']}", r)


# --- write_result ------------------------------------------------------------------------------


def test_write_result_round_trips_and_leaves_no_temporary_file(tmp_path):
    path = rundir.write_result(tmp_path / "t", {"a": 1, "b": "x", "c": None})
    assert path == tmp_path / "t" / "result.json"
    assert json.loads(path.read_text()) == {"a": 1, "b": "x", "c": None}
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["result.json"]


def test_nan_and_numpy_scalars_become_json(tmp_path):
    path = rundir.write_result(tmp_path / "t", {"nan": math.nan, "np_nan": np.float64("nan"), "i": np.int64(3), "b": np.bool_(True)})
    assert json.loads(path.read_text()) == {"nan": None, "np_nan": None, "i": 3, "b": True}



@pytest.mark.parametrize("value", [np.float32("nan"), math.inf, -math.inf, np.float64("inf")])
def test_non_finite_values_of_any_float_type_become_null(tmp_path, value):
    path = rundir.write_result(tmp_path / "t", {"x": value})
    assert json.loads(path.read_text()) == {"x": None}


def test_a_crash_before_the_rename_leaves_the_old_file(tmp_path, monkeypatch):
    path = rundir.write_result(tmp_path / "t", {"version": 1})

    def crash(src, dst):
        raise OSError("disk full at the worst moment")

    monkeypatch.setattr(rundir.os, "replace", crash)
    with pytest.raises(OSError):
        rundir.write_result(tmp_path / "t", {"version": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"version": 1}
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["result.json"]


def test_an_interrupt_while_writing_leaves_the_old_file(tmp_path, monkeypatch):
    path = rundir.write_result(tmp_path / "t", {"version": 1})

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rundir.write_result(tmp_path / "t", {"version": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"version": 1}
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["result.json"]


def test_a_temporary_file_left_by_a_killed_process_is_ignored(tmp_path):
    put(tmp_path, row("a"))
    # what SIGKILL between write and rename leaves behind
    (tmp_path / "trials" / "b-r0").mkdir()
    (tmp_path / "trials" / "b-r0" / ".result-x.tmp").write_text(json.dumps(row("b"))[:40])
    assert list(rundir.RunDir(tmp_path).rows()) == ["a-r0"]
    results.write_tables(tmp_path)
    assert len(pd.read_csv(tmp_path / "results.csv")) == 1


def test_a_row_that_cannot_be_serialised_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        rundir.write_result(tmp_path / "t", {"x": object()})
    assert list((tmp_path / "t").iterdir()) == []


# --- write_tables ------------------------------------------------------------------------------


def test_write_tables_rebuilds_the_tables_from_the_trial_files(tmp_path):
    put(tmp_path, row("a", 0, seq=0))
    put(tmp_path, row("a", 1, seq=0, client_throughput_rps=120.0))
    put(tmp_path, row("b", 0, seq=1, param_model_batch_size=8))
    records = results.write_tables(tmp_path)
    csv_first = (tmp_path / "results.csv").read_text()
    md_first = (tmp_path / "results.md").read_text()
    assert len(records) == 3

    (tmp_path / "results.csv").unlink()
    (tmp_path / "results.md").write_text("stale")
    results.write_tables(tmp_path)
    assert (tmp_path / "results.csv").read_text() == csv_first
    assert (tmp_path / "results.md").read_text() == md_first

    put(tmp_path, row("c", 0, seq=2, param_model_batch_size=32))
    results.write_tables(tmp_path)
    df = pd.read_csv(tmp_path / "results.csv")
    assert list(df["trial_id"]) == ["a", "a", "b", "c"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_table_columns_are_ordered_and_log_tail_is_left_out(tmp_path):
    put(tmp_path, row("a"))
    df = results.table(tmp_path)
    cols = list(df.columns)
    assert cols[: len(results.IDENTITY)] == results.IDENTITY
    assert cols[-3:] == results.TIMING
    assert "log_tail" not in cols
    firsts = [next(i for i, c in enumerate(cols) if c.startswith(p)) for p in results.PREFIXES]
    assert firsts == sorted(firsts)


def test_rows_are_sorted_by_sequence_then_repeat(tmp_path):
    put(tmp_path, row("z", 1, seq=0))
    put(tmp_path, row("z", 0, seq=0))
    put(tmp_path, row("a", 0, seq=1))
    df = results.table(tmp_path)
    assert list(zip(df["trial_id"], df["repeat"])) == [("z", 0), ("z", 1), ("a", 0)]


def test_an_empty_run_still_gets_tables(tmp_path):
    (tmp_path / "trials").mkdir()
    assert results.write_tables(tmp_path) == []
    assert "No trials finished." in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.csv").read_text().startswith("sweep,run_id,seq,trial_id")


# --- results.md ------------------------------------------------------------------------------------


def test_repeats_are_aggregated_as_mean_with_ci_and_min_max(tmp_path):
    for rep, (tput, p50, p99) in enumerate([(100.0, 2.0, 10.0), (110.0, 4.0, 20.0), (120.0, 3.0, 30.0)]):
        put(tmp_path, row("a", rep, client_throughput_rps=tput, client_latency_p50_ms=p50, client_latency_p99_ms=p99))
    put(tmp_path, row("b", 0, seq=1, param_model_batch_size=8, client_throughput_rps=500.0))
    results.write_tables(tmp_path)
    md = (tmp_path / "results.md").read_text()
    line_a = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    # throughput and p99: mean [95% bootstrap CI], inside the range of the repeats
    m = re.search(r"\| 110\.0 \[(\d+\.\d)-(\d+\.\d)\] \|", line_a)
    assert m and 100.0 <= float(m.group(1)) < 110.0 < float(m.group(2)) <= 120.0
    assert "3.0 (2.0-4.0)" in line_a
    assert re.search(r"\| 20\.0 \[\d+\.\d-\d+\.\d\] \|", line_a)
    line_b = next(line for line in md.splitlines() if line.startswith("| 8 |"))
    assert "| 500.0 |" in line_b  # one repeat: no range

    agg = aggregate_trials(results.table(tmp_path))
    a = agg[agg["trial_id"] == "a"].iloc[0]
    assert (a["n_ok"], a["client_throughput_rps_mean"], a["client_throughput_rps_min"], a["client_throughput_rps_max"]) == (3, 110.0, 100.0, 120.0)


def test_failed_repeats_do_not_enter_the_aggregate(tmp_path):
    put(tmp_path, row("a", 0, client_throughput_rps=100.0))
    put(tmp_path, row("a", 1, status="failed", client_throughput_rps=1.0))
    agg = aggregate_trials(results.table(tmp_path))
    assert agg.iloc[0]["n_ok"] == 1 and agg.iloc[0]["client_throughput_rps_mean"] == 100.0


def test_a_failed_row_appears_in_the_failed_section(tmp_path):
    put(tmp_path, row("a", 0))
    put(tmp_path, row("b", 0, seq=1, status="failed", error="2 backend worker(s) died | see log", param_model_batch_size=8))
    put(tmp_path, row("c", 0, seq=2, status="interrupted", error="interrupted by signal 2", param_model_batch_size=16))
    results.write_tables(tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "3 trial runs: 1 ok, 2 failed or interrupted." in md
    section = md.split("## Failed or interrupted trials", 1)[1]
    assert "| b | 0 | failed | 2 backend worker(s) died \\| see log |" in section
    assert "| c | 0 | interrupted | interrupted by signal 2 |" in section
    assert "| a |" not in section


def test_only_failed_rows_still_give_a_readable_file(tmp_path):
    put(tmp_path, row("a", 0, status="failed"))
    results.write_tables(tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "1 trial runs: 0 ok, 1 failed or interrupted." in md
    assert "| a | 0 | failed |" in md


def test_client_bound_trials_are_flagged(tmp_path):
    put(tmp_path, row("a", 0, client_bound=True))
    put(tmp_path, row("b", 0, seq=1, param_model_batch_size=8))
    md = markdown(results.table(tmp_path))
    assert "⚠ WARNING: 1 trial(s) were client-bound" in md and "a" in md.split("WARNING")[1]


def test_missing_optional_figures_are_blank_not_nan(tmp_path):
    put(tmp_path, row("a", 0, client_batch_size_mean=None, proc_ctx_per_req=None, server_queue_latency_mean_ms=math.nan))
    put(tmp_path, row("a", 1, client_batch_size_mean=None, proc_ctx_per_req=None, server_queue_latency_mean_ms=math.nan))
    md = markdown(results.table(tmp_path))
    assert "nan" not in md.lower()


def test_write_result_is_used_through_a_plain_directory_path(tmp_path):
    # the runner passes the trial directory; result.json must be the only thing in it
    path = put(tmp_path, row("a"))
    assert path.parent.name == "a-r0" and os.listdir(path.parent) == ["result.json"]


def test_unstable_trials_are_marked_and_windows_give_the_interval(tmp_path):
    windows = json.dumps([{"start_s": i, "rps": v, "p99_ms": 10.0, "used": i > 0}
                          for i, v in enumerate([50.0, 99.0, 101.0, 100.0])])
    put(tmp_path, row("a", 0, client_throughput_rps=100.0, client_windows=windows, client_window_cv=0.02,
                      client_unstable=False))
    put(tmp_path, row("b", 0, seq=1, param_model_batch_size=8, client_throughput_rps=300.0,
                      client_unstable=True, client_window_cv=0.4))
    results.write_tables(tmp_path)
    md = (tmp_path / "results.md").read_text()
    line_a = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    m = re.search(r"\| 100\.0 \[(\d+\.\d)-(\d+\.\d)\] \|", line_a)  # one repeat, three used windows
    assert m and 99.0 <= float(m.group(1)) <= 100.0 <= float(m.group(2)) <= 101.0
    assert any(line.startswith("| ≈ 8 |") for line in md.splitlines())
    assert "≈ UNSTABLE: 1 trial(s)" in md and ": b." in md
