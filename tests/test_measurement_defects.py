"""Measurement defects, each pinned by a test: one timeout halving throughput, server
latency averaged per arrival, findings that mix load levels, probe bookkeeping, client
and server disagreeing, the client measuring itself, and the like. A comment "not X"
gives the figure the defect produced."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sweeper import results
from sweeper.load import RECORD_DTYPE, LoadProfile, LoadRun, summarize
from sweeper.load.launch import wall_time

NAN = math.nan


def load_run(profile: LoadProfile, rows, cpu_s: float = 0.0) -> LoadRun:
    """rows: (scheduled_s, sent_s, end_s, status[, batch_size, handler_ms])"""
    full = [tuple(r) + (-1, NAN)[len(r) - 4:] for r in rows]
    rec = np.array(full, dtype=RECORD_DTYPE) if full else np.zeros(0, RECORD_DTYPE)
    return LoadRun(profile, rec, wall_time(rec), cpu_s)


# --- one timeout must not halve throughput ---------------------------------------------


def closed_30s_last_times_out() -> LoadRun:
    """Closed loop, one in flight, 30 s at 10 ms a request; the last one hangs to the 30 s
    timeout (status 0)."""
    profile = LoadProfile("closed", concurrency=1, duration_s=30.0, timeout_s=30.0)
    rows = [(i * 0.01, i * 0.01, (i + 1) * 0.01, 200) for i in range(2999)]
    rows.append((29.99, 29.99, 59.99, 0))
    return load_run(profile, rows)


def test_one_timeout_does_not_stretch_the_window():
    got = summarize(closed_30s_last_times_out())
    assert got["client_throughput_rps"] == pytest.approx(2999 / 30.0)  # not 50.0 (2999 / 59.99)
    assert got["client_window_s"] == pytest.approx(30.0)


def test_open_loop_window_is_the_schedule_not_the_drain_of_the_last_request():
    # 100 req/s for 1 s; the last request is served after 500 ms.
    profile = LoadProfile("open", rate_rps=100.0, duration_s=1.0)
    rows = [(i / 100, i / 100, i / 100 + 0.005, 200) for i in range(99)] + [(0.99, 0.99, 1.49, 200)]
    got = summarize(load_run(profile, rows))
    assert got["client_window_s"] == pytest.approx(1.0)
    assert got["client_throughput_rps"] == pytest.approx(100.0)  # not 100 / 1.49 = 67


def test_closed_loop_counted_by_requests_ends_when_the_last_request_was_issued():
    # 4 requests, one in flight, 10 ms each, the last one hangs for 10 s (a timeout).
    profile = LoadProfile("closed", concurrency=1, requests=4)
    rows = [(0.00, 0.00, 0.01, 200), (0.01, 0.01, 0.02, 200), (0.02, 0.02, 0.03, 200), (0.03, 0.03, 10.03, 0)]
    got = summarize(load_run(profile, rows))
    assert got["client_throughput_rps"] == pytest.approx(3 / 0.03)


def test_a_success_rate_below_one_never_prints_as_one_and_is_marked(tmp_path):
    from test_results import put, row

    put(tmp_path, row("a", 0, client_success_rate=0.9997, client_errors=1))
    put(tmp_path, row("b", 0, seq=1, param_model_batch_size=8))
    from sweeper.report.markdown import markdown

    md = markdown(results.table(tmp_path))
    line_a = next(line for line in md.splitlines() if line.startswith("| ") and "99.97" in line)
    assert "1.000" not in line_a
    assert "✖" in line_a
    assert "1 trial(s) had failed requests" in md


# --- refused, timed-out and connection-error requests are told apart ---------------------


def test_refused_requests_are_not_counted_in_the_achieved_rate():
    from sweeper.load.types import STATUS_REFUSED

    # open loop, 100 req/s for 1 s; the engine's outstanding cap refused 9 of every 10
    profile = LoadProfile("open", rate_rps=100.0, duration_s=1.0, concurrency=1)
    rows = [
        (i / 100, i / 100, i / 100 + 0.05, 200) if i % 10 == 0 else (i / 100, i / 100, i / 100, STATUS_REFUSED)
        for i in range(100)
    ]
    got = summarize(load_run(profile, rows))
    assert got["client_refused"] == 90
    assert got["client_achieved_rate_rps"] == pytest.approx(10.0, rel=0.02)  # not 100.0
    assert got["client_bound"] is True
    assert "refused" in got["client_bound_reason"]


def test_each_kind_of_failure_has_its_own_status_and_count():
    from fakeserver import FakeServer

    from sweeper.load import Target, run_load
    from sweeper.load.types import STATUS_REFUSED, STATUS_TIMEOUT

    with FakeServer(delay_s=0.5) as server:
        timed = run_load(Target(server.url()), LoadProfile("closed", concurrency=2, requests=2, timeout_s=0.2))
        capped = run_load(Target(server.url()), LoadProfile("open", rate_rps=200.0, requests=20, concurrency=5))
    assert list(timed.records["status"]) == [STATUS_TIMEOUT] * 2
    statuses = sorted(set(int(s) for s in capped.records["status"]))
    assert statuses == sorted({STATUS_REFUSED, 200})
    got = summarize(timed)
    assert (got["client_timeouts"], got["client_refused"], got["client_connection_errors"]) == (2, 0, 0)
    assert summarize(capped)["client_refused"] == 15


def test_a_server_that_goes_away_gives_connection_errors():
    import threading

    from fakeserver import FakeServer

    from sweeper.load import Target, run_load
    from sweeper.load.types import STATUS_CONNECTION_ERROR

    server = FakeServer(delay_s=0.01).__enter__()
    stopper = threading.Timer(0.2, server.__exit__, (None, None, None))
    try:
        run = run_load(
            Target(server.url()), LoadProfile("closed", concurrency=2, duration_s=0.5, timeout_s=2.0),
            on_ready=stopper.start,  # stop the server 0.2 s into the measured window
        )
    finally:
        stopper.join()
    got = summarize(run)
    assert got["client_connection_errors"] > 0
    assert set(int(s) for s in run.records["status"]) == {200, STATUS_CONNECTION_ERROR}
    assert got["client_errors"] == got["client_connection_errors"]


# --- server latency means are per served request, not per arrival -----------------------


def test_server_latency_means_divide_by_the_served_count():
    from sweeper.torchserve import metrics
    from test_metrics import exposition

    # 100 arrivals, 50 of them answered 503 (queue full): the counters hold the latency of
    # the 50 answered requests only, 10 ms inference and 4 ms queue each.
    before = metrics.parse(exposition(0.0, 0.0, 0.0))
    after = metrics.parse(exposition(100.0, 50 * 10_000.0, 50 * 4_000.0))
    cols = metrics.server_columns(before, after, "mlp", served=50)
    assert cols["server_requests"] == 100.0  # arrivals, as TorchServe counts them
    assert cols["server_served"] == 50
    assert cols["server_inference_latency_mean_ms"] == pytest.approx(10.0)  # not 5.0
    assert cols["server_queue_latency_mean_ms"] == pytest.approx(4.0)  # not 2.0


@pytest.mark.e2e
def test_real_torchserve_overloaded_behind_a_queue_of_one(tmp_path):
    """job_queue_size 1 under an open loop well above what one worker serves: most requests
    are answered 503. TorchServe counts every one of them in ts_inference_requests_total,
    so that count is not the denominator of the latency means; the served count is.

    Under this overload most of the client's latency is spent in TorchServe's netty
    backlog, before the job that the counters time exists, so the client is not an upper
    bound this test can pin tightly (docs/measurements.md#code-netty-backlog)."""
    import pandas as pd
    from e2e_helpers import assert_nothing_left, run_dirs, write_sweep

    from sweeper.cli import main

    out = tmp_path / "runs"
    sweep = write_sweep(
        tmp_path,
        "queueone",
        model={"name": "mlp", "batch_size": 1, "max_batch_delay_ms": 1, "min_workers": 1},
        server={"job_queue_size": 1},
        load={"mode": "open", "rate_rps": 1200, "duration_s": 1},
        settings={"warmup_s": 0, "min_success_rate": 0},  # the accounting, not the verdict
    )
    main(["run", str(sweep), "--out", str(out)])
    (run_dir,) = run_dirs(out)
    row = pd.read_csv(run_dir / "results.csv").iloc[0]
    assert row["status"] == "ok"
    assert row["client_ok"] < 0.7 * row["client_requests"], "the open loop did not overload the queue"
    # TorchServe counted the 503s as inference requests: arrivals, not served requests
    assert row["server_requests"] >= 0.95 * (row["client_requests"] - row["client_connection_errors"])
    assert row["server_served"] == row["client_ok"]
    # every served request spent at least its handler time inside the job TorchServe times,
    # and no more than the client waited for it
    server = row["server_inference_latency_mean_ms"]
    assert row["client_handler_ms_mean"] <= server <= row["client_latency_mean_ms"] + 1.0, row.to_dict()
    assert row["server_queue_latency_mean_ms"] <= server
    # the row says how far apart client and server are (a netty backlog here)
    assert row["client_minus_server_mean_ms"] == pytest.approx(row["client_latency_mean_ms"] - server)
    assert "client_server_disagree" in row
    assert_nothing_left(out)


# --- thread findings compare like with like ------------------------------------------------


def _contention_rows():
    """Two load levels; one ineligible and one client-bound trial with the top figures."""
    rows = []
    for load_mode, conc, rate, scale in (("closed", 16, None, 1.0), ("open", None, 2000, 0.8)):
        for workers, threads, tput, ctx in ((1, 1, 500, 2.0), (2, 1, 1000, 2.5), (2, 2, 400, 8.0), (4, 2, 100, 20.0)):
            rows.append(dict(
                trial_id=f"{load_mode}-{workers}-{threads}", repeat=0, status="ok",
                param_server_default_workers_per_model=workers, param_env_OMP_NUM_THREADS=threads,
                load_mode=load_mode, load_concurrency=conc, load_rate_rps=rate,
                client_throughput_rps=tput * scale, proc_ctx_per_req=ctx, client_success_rate=1.0,
                client_bound=False,
            ))
    rows.append(dict(rows[0], trial_id="closed-4-1", param_server_default_workers_per_model=4,
                     client_throughput_rps=5000.0, client_success_rate=0.5))
    rows.append(dict(rows[0], trial_id="closed-1-2", param_env_OMP_NUM_THREADS=2,
                     client_throughput_rps=4000.0, client_bound=True))
    return pd.DataFrame(rows)


def test_thread_findings_group_by_load_and_skip_ineligible_trials():
    from sweeper.analysis.findings import thread_findings

    text = " ".join(thread_findings(_contention_rows(), cores=2))
    assert "5000" not in text and "4000" not in text  # ineligible / client-bound: not a finding
    assert "900 req/s" not in text  # not the mean of 1000 (closed) and 800 (open)
    assert "1000 req/s" in text and "800 req/s" in text
    assert "closed, 16 in flight" in text and "open, 2000 req/s" in text


# --- probe bookkeeping; context switches of every thread --------------------------

_MANY_THREADS = """
import sys, threading, time
def spin():
    end = time.monotonic() + 0.6
    while time.monotonic() < end:
        time.sleep(0.0005)  # each sleep is a voluntary switch of this thread
sys.stdin.readline()
threads = [threading.Thread(target=spin) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
print("done", flush=True)
sys.stdin.readline()
"""

_SHORT_CHILDREN = """
import subprocess, sys
sys.stdin.readline()
burn = "import time\\nwhile time.process_time() < 0.1: pass"
for _ in range(4):
    subprocess.run([sys.executable, "-c", burn], check=True)  # born and gone between samples
print("done", flush=True)
sys.stdin.readline()
"""


def _probe_child(script: str, interval_s: float) -> list:
    import subprocess
    import sys

    from sweeper.torchserve.probe import Probe

    from childproc import read_line, spawn, stop

    child = spawn([sys.executable, "-c", script], stdin=subprocess.PIPE)
    try:
        probe = Probe(child.pid, interval_s).start()
        try:
            child.stdin.write(b"go\n")
            child.stdin.flush()
            assert read_line(child, timeout_s=60) == "done"
        finally:
            samples = probe.stop()
    finally:
        stop(child)
    return samples


@pytest.mark.timeout(60)
def test_context_switches_of_every_thread_are_counted():
    from sweeper.torchserve.probe import summarize as proc_summary

    got = proc_summary(_probe_child(_MANY_THREADS, 0.1), ok_requests=1)
    # six threads sleeping 0.5 ms for 0.6 s switch thousands of times; the main thread,
    # which only waits for them, a handful: /proc/PID/status shows the main thread only
    assert got["proc_ctx_all_voluntary"] > 1000, got  # every thread, not the main thread only
    assert got["proc_ctx_all_voluntary"] > 20 * got["proc_ctx_voluntary"], got
    assert got["proc_ctx_all_per_req"] >= got["proc_ctx_all_voluntary"]
    assert got["proc_exited_threads"] >= 1  # the six ended before the last sample


@pytest.mark.timeout(60)
def test_cpu_of_children_born_and_gone_between_samples_is_counted():
    from sweeper.torchserve.probe import summarize as proc_summary

    samples = _probe_child(_SHORT_CHILDREN, 5.0)  # two samples: start and stop
    window = max(s.t_s for s in samples) - min(s.t_s for s in samples)
    got = proc_summary(samples, ok_requests=1)
    cpu_s = got["proc_cpu_pct"] * window / 100.0
    assert cpu_s >= 0.4, got  # four children of 0.1 s CPU each, not ~0.02 s (the parent alone)


def test_a_process_born_mid_window_counts_from_zero_and_an_exited_one_keeps_its_share():
    from sweeper.torchserve.probe import Sample
    from sweeper.torchserve.probe import summarize as proc_summary

    def s(t, pid, cpu, vol, ppid=1, children=0.0, threads=()):
        return Sample(t, pid, "worker" if pid != 1 else "frontend", cpu, 1, 1, vol, 0, ppid, children, threads)

    samples = [
        s(0.0, 1, 10.0, 100, ppid=0, threads=((1, 100, 0),)),
        s(1.0, 1, 10.5, 110, ppid=0, threads=((1, 110, 0), (7, 40, 0))),  # thread 7 born
        s(1.0, 2, 0.5, 30, threads=((2, 30, 0),)),  # born mid-window: 0.5 s since birth
        s(2.0, 1, 11.0, 120, ppid=0, children=0.0, threads=((1, 120, 0), (7, 90, 0))),
        s(2.0, 2, 0.8, 50, threads=((2, 50, 0),)),
    ]
    got = proc_summary(samples, ok_requests=10)
    assert got["proc_cpu_pct_workers"] == pytest.approx(100.0 * 0.8 / 2.0)  # not 0.3 s: from its first sample
    assert got["proc_ctx_voluntary"] == 20 + 50  # main threads: 1 from its first sample, 2 from zero
    assert got["proc_ctx_all_voluntary"] == 20 + 90 + 50  # thread 7 from zero too
    assert got["proc_exited_processes"] == 0


# --- client and server agree, and the tables show it -------------------------------------


@pytest.mark.parametrize(
    "client, server, disagree",
    [(10.4, 10.0, False), (13.5, 10.0, True), (2.6, 1.0, False), (3.2, 1.0, True), (9.0, 10.0, False), (5.0, 10.0, True)],
)
def test_client_minus_server_mean_and_its_bound(client, server, disagree):
    from sweeper.analysis.agreement import client_server_columns

    got = client_server_columns({"client_latency_mean_ms": client, "server_inference_latency_mean_ms": server})
    assert got["client_minus_server_mean_ms"] == pytest.approx(client - server)
    assert got["client_server_disagree"] is disagree
    assert bool(got["client_server_disagree_reason"]) is disagree


def test_a_disagreeing_trial_is_flagged_in_results_md(tmp_path):
    from test_results import put, row

    from sweeper.report.markdown import markdown

    put(tmp_path, row("a", 0, client_minus_server_mean_ms=170.0, client_server_disagree=True,
                      client_server_disagree_reason="client mean 204 ms - server mean 35 ms"))
    put(tmp_path, row("b", 0, seq=1, param_model_batch_size=8, client_minus_server_mean_ms=0.4))
    md = markdown(results.table(tmp_path))
    assert "client − server ms" in md
    assert "1 trial(s) where client and server disagree" in md


# --- the engine waiting for a CPU; thread variables; batch-size means; abandoned jobs ------


def test_a_starved_engine_is_flagged_even_with_little_cpu_of_its_own():
    # closed loop, 2 ms answers; the engine used 3% CPU but waited 1 ms for a CPU each
    # time an answer was ready (as on a machine busy with other work)
    profile = LoadProfile("closed", concurrency=4, duration_s=1.0)
    rows = [(i * 0.002, i * 0.002, i * 0.002 + 0.003, 200) for i in range(400)]
    base = load_run(profile, rows, cpu_s=0.03)
    starved = LoadRun(profile, base.records, base.wall_s, 0.03, client_sched_wait_s=0.4, client_sched_slices=400)
    got = summarize(starved)
    assert got["client_sched_wait_ms_mean"] == pytest.approx(1.0)
    assert got["client_bound"] is True  # not False because CPU 3% is far below 90%
    assert "waited 1.00 ms for a CPU" in got["client_bound_reason"]
    calm = LoadRun(profile, base.records, base.wall_s, 0.03, client_sched_wait_s=0.004, client_sched_slices=400)
    assert summarize(calm)["client_bound"] is False


def test_the_engine_reports_its_wait_for_a_cpu():
    from fakeserver import FakeServer

    from sweeper.load import Target, run_load

    with FakeServer(delay_s=0.001) as server:
        run = run_load(Target(server.url()), LoadProfile("closed", concurrency=2, duration_s=0.3))
    assert run.client_sched_slices > 0 and run.client_sched_wait_s >= 0.0


def test_torch_num_threads_is_not_a_thread_count():
    """torch reads OMP_NUM_THREADS / MKL_NUM_THREADS; no string TORCH_NUM_THREADS exists in
    libtorch_cpu, libc10, libtorch_python or TorchServe's ts package (checked)."""
    from sweeper.analysis.efficiency import trial_threads
    from sweeper.analysis.findings import THREAD_COLUMNS

    assert trial_threads({"param_env_TORCH_NUM_THREADS": 1}, cores=8) == 8  # not 1
    assert "param_env_TORCH_NUM_THREADS" not in THREAD_COLUMNS


def test_served_batch_size_is_given_per_request_and_per_batch():
    # 8 requests served in one batch of 8, and 1 request served alone: per request the
    # mean is (8*8 + 1) / 9 = 7.2; per batch it is (8 + 1) / 2 = 4.5
    profile = LoadProfile("closed", concurrency=8, requests=9)
    rows = [(0.0, 0.0, 0.01, 200, 8, 1.0)] * 8 + [(0.0, 0.0, 0.01, 200, 1, 1.0)]
    got = summarize(load_run(profile, rows))
    assert got["client_batch_size_mean"] == pytest.approx(65 / 9)
    assert got["client_batch_size_per_batch_mean"] == pytest.approx(4.5)


@pytest.mark.parametrize("abandoned, restarted", [({"client_timeouts": 3}, True), ({"client_connection_errors": 1}, True),
                                                  ({"client_refused": 5}, False), ({}, False)])
def test_a_trial_that_abandoned_requests_leaves_its_server_behind(tmp_path, monkeypatch, abandoned, restarted):
    """TorchServe keeps running a job whose client went away (BatchAggregator.sendResponse
    answers into the closed channel and the latency counters grow): such jobs would run on
    into the next trial on the same server. That trial gets a fresh server instead."""
    from sweeper.executors import local
    from sweeper.plan import expand
    from sweeper.context import SweepContext
    from sweeper.sweepfile import parse_sweep

    spec = parse_sweep({"name": "a", "load": {"mode": "closed", "concurrency": 1, "duration_s": 1}}, "a.yaml")
    executor = local.LocalExecutor(SweepContext(spec, tmp_path, "a", tmp_path, b"[]"))
    executor.server = object()
    closed = []
    monkeypatch.setattr(executor, "_ensure_server", lambda trial: executor.server)
    monkeypatch.setattr(executor, "_ensure_model", lambda server, model: model.name)
    monkeypatch.setattr(executor, "close", lambda: closed.append(True))
    monkeypatch.setattr(local, "measure", lambda server, trial, settings, request, files, **_: {"measure_s": 1.0, **abandoned})
    monkeypatch.setattr(local, "log_offsets", lambda server: {})
    monkeypatch.setattr(local, "log_slices", lambda server, offsets, whole=False: {})
    result = executor.run(expand(spec)[0])
    assert result.status == "ok"
    assert bool(closed) is restarted


def test_results_md_says_how_percentiles_and_batch_sizes_are_averaged(tmp_path):
    from test_results import put, row

    from sweeper.report.markdown import markdown

    put(tmp_path, row("a", 0))
    put(tmp_path, row("a", 1))
    md = markdown(results.table(tmp_path))
    assert "mean of each repeat's own percentile, not a percentile of the repeats' requests pooled" in md
    assert "averaged per request (a batch of 8 counts 8 times)" in md


# --- the efficiency ceiling matches workers x threads and the server's CPUs ----------------


def test_efficiency_divides_by_the_ceiling_of_as_many_workers():
    from sweeper.analysis.efficiency import add_efficiency, needed

    pd.DataFrame([
        {"model": "mlp", "batch_size": 1, "threads": 1, "workers": 1, "cpus": "", "samples_per_s": 1000.0},
        {"model": "mlp", "batch_size": 1, "threads": 1, "workers": 4, "cpus": "", "samples_per_s": 3000.0},
    ]).to_csv(tmp := __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "baseline.csv", index=False)
    trial = {"param_model_name": "mlp", "param_model_batch_size": 1, "param_env_OMP_NUM_THREADS": 1,
             "load_mode": "closed", "client_throughput_rps": 2400.0, "status": "ok"}
    df = pd.DataFrame([{**trial, "param_model_min_workers": 4}, {**trial, "param_model_min_workers": 2}])
    out = add_efficiency(df, tmp.parent, cores=2)
    assert out["efficiency"][0] == pytest.approx(0.8)  # not 2.4: 4 workers over one process's ceiling
    assert math.isnan(out["efficiency"][1])  # no ceiling measured for 2 workers: no ratio
    assert needed([{**trial, "param_model_min_workers": 4}], cores=2) == [("mlp", 1, 1, 4)]


def test_an_old_baseline_without_workers_is_a_one_worker_ceiling(tmp_path):
    from sweeper.analysis.efficiency import add_efficiency

    pd.DataFrame([{"model": "mlp", "batch_size": 1, "threads": 1, "samples_per_s": 1000.0}]).to_csv(
        tmp_path / "baseline.csv", index=False)
    trial = {"param_model_name": "mlp", "param_model_batch_size": 1, "param_env_OMP_NUM_THREADS": 1,
             "load_mode": "closed", "client_throughput_rps": 500.0}
    out = add_efficiency(pd.DataFrame([{**trial, "param_model_min_workers": 1}, {**trial, "param_model_min_workers": 4}]),
                         tmp_path, cores=2)
    assert out["efficiency"][0] == pytest.approx(0.5)
    assert math.isnan(out["efficiency"][1])


def test_the_ceiling_runs_as_many_workers_at_once_on_the_given_cpus():
    import os

    from sweeper.ceiling import measure_grid

    cpus = tuple(sorted(os.sched_getaffinity(0)))[:1]
    [result] = measure_grid("mlp", [2], [1], duration_s=0.05, workers=2, cpus=cpus)
    assert result.workers == 2 and result.cpus == ",".join(map(str, cpus))
    assert result.samples_per_s > 0 and result.batches >= 6  # two processes, >= 3 batches each


# --- throughput is ranked over closed-loop trials only --------------------------------------


def _open(rows, rate):
    return [dict(r, load_mode="open", load_concurrency=float("nan"), load_rate_rps=rate) for r in rows]


def test_the_throughput_recommendation_ranks_closed_loop_trials_only():
    from test_report import frame, trial_rows

    from sweeper.analysis.aggregate import aggregate_trials
    from sweeper.report.recommend import recommend

    trials = aggregate_trials(frame(
        _open(trial_rows("open-a", [100.5, 100.5], param_model_batch_size=4), 100),
        _open(trial_rows("open-b", [100.0, 100.0], param_model_batch_size=8), 100),
        trial_rows("closed-c", [80, 82], param_model_batch_size=16),
        trial_rows("closed-d", [60, 61], param_model_batch_size=1),
    ))
    rec = recommend(trials, 50.0)
    assert rec.throughput.winner["trial_id"] == "closed-c"  # not open-a, '0.50% better'
    assert rec.throughput.runner_up["trial_id"] == "closed-d"
    assert rec.latency.winner["trial_id"] == "closed-c"


def test_open_loop_only_runs_are_judged_by_latency_at_their_rate():
    from test_report import frame, trial_rows

    from sweeper.analysis.aggregate import aggregate_trials
    from sweeper.report.recommend import recommend

    trials = aggregate_trials(frame(
        _open(trial_rows("a", [100], p99=30, param_model_batch_size=4), 100),
        _open(trial_rows("b", [100], p99=12, param_model_batch_size=8), 100),
        _open(trial_rows("c", [50], p99=5, param_model_batch_size=8), 50),
    ))
    rec = recommend(trials, 50.0)
    assert rec.throughput is None and rec.latency is None
    text = " ".join(rec.notes)
    assert "closed-loop trials only" in text
    assert "at 100 req/s" in text and "batch_size=8" in text and "12.0 ms" in text


def test_the_report_table_marks_a_disagreeing_trial():
    from test_report import frame, trial_rows

    from sweeper.analysis.aggregate import aggregate_trials
    from sweeper.report.tables import summary_table

    rows = trial_rows("a", [100])
    rows[0].update(client_server_disagree=True, client_minus_server_mean_ms=9.0)
    table = summary_table(aggregate_trials(frame(rows, trial_rows("b", [90], param_model_batch_size=1))))
    marked = {r.trial_id: r for r in table.rows}["a"]
    assert "client and server disagree" in marked.notes and marked.cells[1].text == "≠ client vs server"
    assert "client − server ms" in [c.label for c in table.columns]


def test_the_engines_wait_for_a_cpu_is_scaled_to_the_used_windows_like_its_cpu():
    from sweeper.load import windows as win
    from sweeper.load.types import Outcome

    profile = LoadProfile("closed", concurrency=1, duration_s=4.0)
    rows = [(t / 10, t / 10, t / 10 + 0.01, 200) for t in range(40)]
    base = load_run(profile, rows)
    run = LoadRun(profile, base.records, 4.0, 0.4, client_sched_wait_s=0.4, client_sched_slices=400)
    got = summarize(win.measured(run, Outcome(1.0, 2, 3, False)))  # the last 2 of 4 windows
    assert got["client_sched_wait_pct"] == pytest.approx(10.0)  # not 20: the whole run's wait over half the time
    assert got["client_sched_wait_ms_mean"] == pytest.approx(1.0)


def test_only_the_first_trial_on_a_started_server_gets_the_server_warmup(tmp_path, monkeypatch):
    """settings.server_warmup_s (the JVM's JIT) goes to the first trial on each newly
    started server: not to the next trials on it, and again after a failure restarted it."""
    from sweeper.errors import ServerError
    from sweeper.executors import local
    from sweeper.plan import expand
    from sweeper.context import SweepContext
    from sweeper.sweepfile import parse_sweep

    class FakeServer:
        started = 0

        def __init__(self, **kw):
            self.log_dir = tmp_path

        def start(self):
            FakeServer.started += 1

        def stop(self):
            pass

        def alive(self):
            return True

        def log_tail(self):
            return ""

    spec = parse_sweep(
        {"name": "a", "model": {"name": "mlp", "batch_size": [1, 2, 4, 8]},
         "load": {"mode": "closed", "concurrency": 1, "duration_s": 1}}, "a.yaml")
    executor = local.LocalExecutor(SweepContext(spec, tmp_path, "a", tmp_path, b"[]"))
    fresh_seen = []

    def fake_measure(server, trial, settings, request, files, fresh_server=False, **_):
        fresh_seen.append(fresh_server)
        if trial.model.batch_size == 2:
            raise ServerError("TorchServe died during the measured window", "")
        return {"measure_s": 1.0}

    monkeypatch.setattr(local, "new_server", lambda *a, **k: FakeServer())
    monkeypatch.setattr(executor, "_ensure_model", lambda server, model: model.name)
    monkeypatch.setattr(local, "measure", fake_measure)
    monkeypatch.setattr(local, "log_offsets", lambda server: {})
    monkeypatch.setattr(local, "log_slices", lambda server, offsets, whole=False: {})
    statuses = [executor.run(t).status for t in expand(spec)]
    assert statuses == ["ok", "failed", "ok", "ok"]
    # batch 1 on a new server; batch 2 on the same one (fails: the server is stopped);
    # batch 4 on a new server again; batch 8 on that one
    assert fresh_seen == [True, False, True, False] and FakeServer.started == 2
