"""End-to-end: the sweeper against a real TorchServe (smoke sweep, faults, interrupts, resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pandas as pd
import psutil
import pytest

from e2e_helpers import (
    ROOT,
    assert_nothing_left,
    find_process,
    in_thread,
    measuring,
    run_dirs,
    serving,
    sweeper_cmd,
    ts_processes_under,
    wait_for,
    write_sweep,
)
from sweeper.cli import main

pytestmark = pytest.mark.e2e

MLP = {"name": "mlp", "max_batch_delay_ms": 10, "min_workers": 1}


def _results(out):
    (run_dir,) = run_dirs(out)
    return run_dir, pd.read_csv(run_dir / "results.csv")


def test_smoke_sweep_end_to_end(tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs"
    monkeypatch.chdir(tmp_path)  # a relative --out, as `make sweep` gives: runs/...
    code = main(["run", str(ROOT / "sweeps" / "smoke.yaml"), "--out", "runs"])
    assert code == 0, capsys.readouterr().err
    run_dir, df = _results(out)
    assert len(df) == 2
    assert (df["status"] == "ok").all()
    assert (df["client_success_rate"] == 1.0).all()
    assert (df["client_ok"] > 50).all()
    # every request the client saw as served, the server counted (warm-up is outside the window)
    assert (df["server_requests"] == df["client_ok"]).all()
    assert (df["server_inference_latency_mean_ms"] > 0).all()
    # the handler's header reports real batches: batch_size 4 under 4 in flight batches > 1
    b4 = df[df["param_model_batch_size"] == 4].iloc[0]
    assert b4["client_batch_size_mean"] > 1.0
    assert (df[df["param_model_batch_size"] == 1]["client_batch_size_mean"] == 1.0).all()
    # the server's own per-batch records (PredictionTime lines) agree with the header
    for server, client in (("server_batch_size_mean", "client_batch_size_per_batch_mean"),
                           ("server_batch_size_per_request_mean", "client_batch_size_mean")):
        assert ((df[server] - df[client]).abs() <= 0.02 * df[client]).all(), df[[server, client]]
    assert (df["server_batches"] * df["server_batch_size_mean"]).round(6).tolist() == df["client_ok"].astype(float).tolist()
    assert (df["proc_cpu_pct"] > 0).all() and (df["proc_rss_mb"] > 50).all()
    # the run directory holds what the README promises
    for name in ("sweep.yaml", "machine.json", "results.csv", "results.md"):
        assert (run_dir / name).exists(), name
    machine = json.loads((run_dir / "machine.json").read_text())
    assert machine["torchserve"] == "0.12.0" and "openjdk" in machine["java"].lower()
    trial = run_dir / "trials" / f"{df['trial_id'][0]}-r0"
    for name in ("config.properties", "env.json", "requests.csv.gz", "result.json", "logs/ts_log.log"):
        assert (trial / name).exists(), name
    md = (run_dir / "results.md").read_text()
    assert "| batch_size |" in md and "throughput" in md
    # keys never reach what the sweeper writes
    keys = json.loads(next((run_dir / "servers").glob("*/key_file.json")).read_text())
    written = "".join(p.read_text(errors="replace") for p in trial.rglob("*") if p.is_file() and p.suffix != ".gz")
    written += (run_dir / "results.csv").read_text() + md
    for kind in ("inference", "management", "API"):
        assert keys[kind]["key"] not in written
    # compare reads a real run's files (results.csv, machine.json): against itself, 1.00x
    capsys.readouterr()
    assert main(["compare", str(run_dir), str(run_dir)]) == 0
    compared = capsys.readouterr().out
    assert "Matched configurations (2)" in compared and compared.count("| 1.00x |") == 2
    assert_nothing_left(out)


def _sweep_with_a_kill(tmp_path, name: str, marker: str):
    """Two trials; `marker`'s process is SIGKILLed inside the first trial's measured window."""
    out = tmp_path / "runs"
    sweep = write_sweep(
        tmp_path,
        name,
        model={**MLP, "batch_size": [1, 2]},
        load={"mode": "closed", "concurrency": 4, "duration_s": 3},
        settings={"warmup_s": 0.3},
    )

    def killer():
        # 50 answers: past the one-per-payload check, the load engine is running (a loaded
        # machine can take seconds to spawn it, so the first answer alone says too little)
        wait_for(lambda: serving(out, at_least=50), 60, "the load engine's first predictions")
        victim = find_process(out, marker)
        time.sleep(0.8)  # warm-up is 0.3 s: this is inside the 3 s measured window
        victim.kill()

    t = in_thread(killer)
    code = main(["run", str(sweep), "--out", str(out)])
    t.join(5)
    assert not t.errors, t.errors
    run_dir, df = _results(out)
    return out, run_dir, df, code


def test_jvm_killed_mid_trial_is_a_failed_row_and_sweep_goes_on(tmp_path):
    out, run_dir, df, code = _sweep_with_a_kill(tmp_path, "jvmkill", "org.pytorch.serve.ModelServer")
    assert code == 1
    assert list(df["status"]) == ["failed", "ok"]
    assert "died" in df["error"][0] or "connect" in df["error"][0].lower()
    result = json.loads((run_dir / "trials" / f"{df['trial_id'][0]}-r0" / "result.json").read_text())
    assert result["log_tail"], "a failed trial carries the tail of the server log"
    assert "failed" in (run_dir / "results.md").read_text()
    assert_nothing_left(out)


def test_worker_killed_mid_trial_is_a_failed_row(tmp_path):
    out, _, df, code = _sweep_with_a_kill(tmp_path, "workerkill", "model_service_worker")
    assert code == 1
    assert list(df["status"]) == ["failed", "ok"]
    assert "worker" in df["error"][0]
    assert_nothing_left(out)


def test_server_never_ready_fails_rows_and_stops_after_k_in_a_row(tmp_path, capsys):
    out = tmp_path / "runs"
    sweep = write_sweep(
        tmp_path,
        "neverready",
        model={**MLP, "batch_size": [1, 2, 4, 8]},
        load={"mode": "closed", "concurrency": 2, "duration_s": 1},
        settings={"warmup_s": 0, "ready_timeout_s": 0.2, "max_consecutive_failures": 2},
    )
    code = main(["run", str(sweep), "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "2 failed trials in a row" in err
    _, df = _results(out)
    assert len(df) == 2 and (df["status"] == "failed").all()
    assert df["error"].str.contains("not ready within 0.2 s").all()
    assert_nothing_left(out)


def test_full_job_queue_answers_503_counted_as_failures(tmp_path):
    out = tmp_path / "runs"
    sweep = write_sweep(
        tmp_path,
        "queuefull",
        model={**MLP, "batch_size": 1},
        server={"job_queue_size": 1},
        load={"mode": "closed", "concurrency": 32, "duration_s": 2},
        settings={"warmup_s": 0, "min_success_rate": 0},  # the accounting, not the verdict
    )
    main(["run", str(sweep), "--out", str(out)])
    _, df = _results(out)
    row = df.iloc[0]
    assert row["status"] == "ok"
    assert "503:" in row["client_status_counts"]
    assert row["client_errors"] > 0 and row["client_success_rate"] < 1.0
    # throughput counts only 2xx answers, those completed inside the window: all but the
    # (at most 32) still in flight when it closed
    served_in_window = row["client_throughput_rps"] * row["client_window_s"]
    assert row["client_ok"] - 32 - 0.5 <= served_in_window <= row["client_ok"] + 0.5
    assert_nothing_left(out)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_then_resume(tmp_path, sig, code):
    out = tmp_path / "runs"
    sweep = write_sweep(
        tmp_path,
        "interrupt",
        model={**MLP, "batch_size": [1, 2, 4]},
        load={"mode": "closed", "concurrency": 2, "duration_s": 2},
        settings={"warmup_s": 0},
    )
    proc = subprocess.Popen(sweeper_cmd("run", str(sweep), "--out", str(out), "--no-report"), cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: measuring(out, 1), 90, "second trial")
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)  # reaped, its stderr pipe drained and closed
    assert proc.returncode == code, err
    assert "interrupted" in err and "sweeper run --resume" in err
    run_dir, df = _results(out)
    assert list(df["status"]) == ["ok", "interrupted"]
    assert_nothing_left(out)
    if sig != signal.SIGINT:
        return  # the resume does not depend on the signal that stopped the run: once is enough

    resumed = subprocess.run(sweeper_cmd("run", "--resume", str(run_dir), "--no-report"), cwd=ROOT,
                             capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    df2 = pd.read_csv(run_dir / "results.csv")
    assert sorted(df2["param_model_batch_size"]) == [1, 2, 4]
    assert (df2["status"] == "ok").all()
    # the first trial was not rerun: its result is unchanged
    first = df[df["status"] == "ok"].iloc[0]
    again = df2[df2["trial_id"] == first["trial_id"]].iloc[0]
    assert again["started_at"] == first["started_at"]
    assert_nothing_left(out)


def test_tokens_are_refreshed_on_a_long_lived_server(tmp_path):
    from sweeper.torchserve import management
    from sweeper.plan import expand
    from sweeper.inputs import trial_config, trial_env
    from sweeper.torchserve.process import LOG4J_CONFIG, TorchServe
    from sweeper.sweepfile import load_sweep

    spec = load_sweep(ROOT / "sweeps" / "smoke.yaml")
    trial = expand(spec)[0]
    store = ROOT / "model_store"
    server = TorchServe(tmp_path / "srv", lambda ports: trial_config(trial, ports, store, spec.settings), trial_env(trial), store)
    with server:
        old = server.keys
        assert management.list_models(server) == []
        server.refresh_tokens(min_valid_s=10 * 3600)  # "expires soon": regenerate now
        assert server.keys.inference != old.inference and server.keys.management != old.management
        assert management.list_models(server) == []  # the new management key works
        import httpx

        r = httpx.get(server.inference_url + "/ping", headers={"Authorization": f"Bearer {old.inference}"})
        assert r.status_code in (400, 401)  # the old key no longer does
        pids = set(server.seen_pids)
        # the JVM logs through templates/log4j2.xml (no gzip at rollover), not the jar's own
        (java,) = [p for p in psutil.Process(server.root_pid).children(recursive=True) if p.name() == "java"]
        assert f"-Dlog4j.configurationFile=file://{LOG4J_CONFIG}" in java.cmdline()
        # and log4j read it: its appenders write ts_log.log, and it reported no error
        assert (server.log_dir / "ts_log.log").stat().st_size > 0
        assert "StatusLogger" not in (server.log_dir / "stdout.log").read_text()
    assert pids and not [p for p in pids if psutil.pid_exists(p)]


def test_handler_failures_are_counted_as_failures_not_served(tmp_path):
    out = tmp_path / "runs"
    sweep = write_sweep(
        tmp_path,
        "faulty",
        model={**MLP, "name": "mlp_faulty", "batch_size": 1},
        load={"mode": "closed", "concurrency": 2, "requests": 200},
        settings={"warmup_s": 0},
    )
    # the trial ran, but a quarter of its requests failed: below min_success_rate 0.99
    assert main(["run", str(sweep), "--out", str(out)]) == 1
    _, df = _results(out)
    row = df.iloc[0]
    assert row["status"] == "failed"
    assert row["error"].startswith("success rate 0.7") and "< settings.min_success_rate 0.99" in row["error"]
    assert f"statuses {row['client_status_counts']}" in row["error"]
    assert row["client_requests"] == 200
    statuses = dict(pair.split(":") for pair in row["client_status_counts"].split())
    failed = sum(int(n) for code, n in statuses.items() if code.startswith("5"))
    assert failed == pytest.approx(50, abs=2)  # every 4th batch of one
    assert row["client_ok"] == 200 - failed and row["client_success_rate"] == pytest.approx(row["client_ok"] / 200)
    served_in_window = row["client_throughput_rps"] * row["client_window_s"]  # all but the <= 2 in flight
    assert row["client_ok"] - 2 - 0.5 <= served_in_window <= row["client_ok"] + 0.5
    assert_nothing_left(out)


def test_sigkill_of_the_sweeper_still_stops_its_server(tmp_path):
    """The one exit no finally can cover: the reaper process stops the server group."""
    out = tmp_path / "runs"
    sweep = write_sweep(
        tmp_path,
        "sigkill",
        model={**MLP, "batch_size": 1},
        load={"mode": "closed", "concurrency": 2, "duration_s": 3},
        settings={"warmup_s": 0},
    )
    proc = subprocess.Popen(sweeper_cmd("run", str(sweep), "--out", str(out), "--no-report"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: serving(out), 90, "first predictions")
        jvm = find_process(out, "org.pytorch.serve.ModelServer")
        worker = find_process(out, "model_service_worker")
        tmp_dir = next(a.split("=", 1)[1] for a in jvm.cmdline() if a.startswith("-Djava.io.tmpdir="))
        proc.kill()
        proc.wait(timeout=10)
        gone, alive = psutil.wait_procs([jvm, worker], timeout=20)
        assert not alive, f"server processes outlived the sweeper: {[p.pid for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: not ts_processes_under(out), 10, "no TorchServe process under the run")
    wait_for(lambda: not os.path.exists(tmp_dir), 10, "the server's private temp dir removed")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to keep client and server apart")
def test_server_and_client_cpu_affinity(tmp_path):
    out = tmp_path / "runs"
    cpus = sorted(os.sched_getaffinity(0))
    sweep = write_sweep(
        tmp_path,
        "affinity",
        model={**MLP, "batch_size": 1},
        load={"mode": "closed", "concurrency": 2, "duration_s": 2},
        settings={"warmup_s": 0, "server_cpus": [cpus[0]], "client_cpus": [cpus[1]]},
    )
    seen: dict[str, list[int]] = {}

    def look():
        wait_for(lambda: serving(out), 60, "first predictions")
        seen["jvm"] = find_process(out, "org.pytorch.serve.ModelServer").cpu_affinity()
        seen["worker"] = find_process(out, "model_service_worker").cpu_affinity()

    t = in_thread(look)
    assert main(["run", str(sweep), "--out", str(out), "--no-report"]) == 0
    t.join(10)
    assert not t.errors, t.errors
    assert seen == {"jvm": [cpus[0]], "worker": [cpus[0]]}
    assert_nothing_left(out)


def test_token_auth_off_on_loopback_serves_without_keys(tmp_path):
    """settings.token_auth: false (loopback only): no key file, and no key is sent. The
    server's headers() are then empty, so the model was registered and every measured
    request was served without an Authorization header."""
    out = tmp_path / "runs"
    sweep = write_sweep(
        tmp_path,
        "noauth",
        model={**MLP, "batch_size": 1},
        load={"mode": "closed", "concurrency": 2, "duration_s": 1},
        settings={"warmup_s": 0, "host": "localhost", "token_auth": False},
    )
    assert main(["run", str(sweep), "--out", str(out), "--no-report"]) == 0
    run_dir, df = _results(out)
    assert df["status"].tolist() == ["ok"] and df["client_success_rate"].tolist() == [1.0]
    assert df["client_ok"].iloc[0] > 10
    (server_dir,) = (run_dir / "servers").iterdir()
    config = (server_dir / "config.properties").read_text()
    assert "disable_token_authorization=true" in config and "inference_address=http://localhost:" in config
    assert not (server_dir / "key_file.json").exists()
    assert_nothing_left(out)
