"""The tidy results table: one row per trial and repeat, rebuilt from the run's result.json
files (sweeper.rundir), written as results.csv and results.md (sweeper.report.markdown).

Columns of results.csv (flat, prefixed, units in names). NaN/empty where not applicable.

identity:  sweep, run_id, trial_id (hash of the parameters), repeat, group_id (server-level
           group: trials sharing one JVM), status ("ok" | "failed" | "interrupted"),
           error (one line), started_at (ISO 8601 UTC), wall_s (whole trial incl. model
           registration and warm-up), measure_s (measured load window), overhead_s
           (wall_s - measure_s)
node_*:    with `sweeper run --ray` only: node_label (<ip>-<node id prefix>: the node's
           directory under nodes/), node_ip, node_id (Ray's), node_hostname,
           node_cpu_model, node_cores_usable (from the node's machine.json),
           ray_overhead_s (what Ray added to the trial: the driver's round trip of the call,
           trial and files shipped both ways, minus wall_s measured on the node)
param_*:   param_model_name, param_model_batch_size, param_model_max_batch_delay_ms,
           param_model_min_workers, param_model_max_workers, param_model_response_timeout_s,
           param_server_<config.properties key> (e.g. param_server_number_of_netty_threads),
           param_env_<VAR> (e.g. param_env_OMP_NUM_THREADS), param_request_name (the
           request set, with a `request` group in the sweep); request_body_bytes_mean
           (mean payload size of the trial's request set)
load_*:    load_mode ("closed" | "open" | "capacity"), load_concurrency, load_rate_rps, load_duration_s,
           load_requests, load_processes
client_*:  measured by the load engine: client_requests, client_ok, client_errors,
           client_status_counts ("200:950 503:50 -1:3"; 0 connection error, -1 timeout,
           -2 refused by the engine's outstanding cap), client_refused, client_timeouts,
           client_connection_errors, client_success_rate (0..1: share of
           answers with request.expect_status, 200 by default),
           client_throughput_rps (served 2xx per second of the measured window; see
           sweeper.load.summary and the README's Definitions), client_window_s (the
           window's length, from the load profile, not from the slowest request),
           client_latency_{mean,p50,p90,p99,max}_ms (2xx only; open loop: from the
           scheduled send time), client_target_rate_rps, client_achieved_rate_rps (requests put on the
           wire per second; refused ones were never sent),
           client_send_lag_{p50,p99,max}_ms, client_cpu_pct (engine CPU, 100 = one core),
           client_sched_wait_pct / client_sched_wait_ms_mean (the engine's event loop
           runnable but waiting for a CPU: share of the window, mean per wake-up),
           client_bound (bool: the client, not the server, set the pace),
           client_bound_reason, client_batch_size_mean (served batch size, per request:
           a batch of 8 counts 8 times, from the handler's X-Batch-Size header),
           client_batch_size_per_batch_mean (mean size of the batches),
           client_handler_ms_mean (X-Handler-Ms);
           windows (sweeper.load.windows): client_windows (JSON list, one object per
           complete window: start_s, n, ok, rps, p99_ms, mean_ms, used), client_window_cv
           (the larger of client_window_rps_cv and the CV of the latency figure the rule
           judged, client_window_mean_cv by default or client_window_p99_cv, over the used
           windows),
           client_unstable (bool: settings.stability's windows never agreed within
           max_cv by max_duration_s), client_unstable_reason. Under settings.stability
           every client_* figure comes from the used windows only (measure_s is their
           length); requests.csv.gz holds every request
agreement: client_minus_server_mean_ms (client_latency_mean_ms -
           server_inference_latency_mean_ms), client_server_disagree (bool: beyond
           2 ms + 10% of the server mean, see sweeper.analysis.agreement),
           client_server_disagree_reason
server_*:  from /metrics counter deltas over the measured window: server_requests
           (arrivals as TorchServe counts them, 503s included), server_served (requests
           answered with a result: the client's 2xx count), server_inference_latency_mean_ms
           and server_queue_latency_mean_ms (latency counter delta / server_served);
           from TorchServe's per-batch PredictionTime records in its log, for every
           handler (sweeper.serverlog): server_batches (batches served in the window),
           server_batch_size_mean (requests in them / server_batches: per batch),
           server_batch_size_per_request_mean (per request, as client_batch_size_mean);
           server_model_name (the name the model was registered under: NAME, or
           NAME_1, NAME_2, ... beside kept registrations, settings.keep_registered),
           server_registered (1: this trial registered its model; 0: it ran on the last
           trial's or a kept registration)
proc_*:    psutil samples of the server's process tree (JVM + workers) during the window,
           without the idle workers of other registrations kept on the server:
           proc_cpu_pct (100 = one core), proc_cpu_pct_frontend, proc_cpu_pct_workers,
           proc_rss_mb (peak), proc_threads (peak), proc_ctx_voluntary,
           proc_ctx_involuntary, proc_ctx_per_req ((voluntary + involuntary) / client_ok):
           the *main thread* of each process only (psutil reads /proc/PID/status; kept
           for comparison with older runs); proc_ctx_all_voluntary,
           proc_ctx_all_involuntary, proc_ctx_all_per_req: every thread of every process
           (per-thread deltas of /proc/PID/task/*/status); proc_exited_processes,
           proc_exited_threads (gone before the window's last sample: their switches after
           the sample before are not visible; see sweeper.torchserve.probe)
capacity:  search.objective capacity (sweeper.capacity; load_mode is then "capacity" and
           load_rate_rps the search's start_rps): capacity_rps_at_slo (the highest open-loop
           rate whose step met p99 <= settings.slo_p99_ms and settings.min_success_rate;
           0.0 when even start_rps failed), capacity_limited_by ("p99" | "success" |
           "client": what failed at the next rate; "max_rps" | "steps": nothing failed;
           "+steps": max_steps ran out before the precision), capacity_first_fail_rps,
           capacity_precision ((first fail - capacity) / capacity), capacity_steps_n,
           capacity_steps (JSON list, one object per step in the order run: rate_rps,
           p99_ms, success_rate, achieved_rps, throughput_rps, passed, reason, limit),
           capacity_abandoned_requests (timeouts and connection errors over every step).
           The client_* columns and requests.csv.gz are the step at the capacity (the
           first step when none passed), and so are server_*, proc_* and host_speed
           (over that step's whole run)
ceiling:   with settings.baseline or `sweeper baseline RUN_DIR` (sweeper.analysis.efficiency):
           baseline_samples_per_s (in-process samples/s of the same model and handler at
           the trial's batch size and torch threads), efficiency (client_throughput_rps /
           baseline_samples_per_s; closed loop only)
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

