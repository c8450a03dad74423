"""The columns of results.csv, one entry per column or per family of columns (a pattern
such as `param_server_<key>`): its group, unit and meaning. The reference page
docs/reference/columns.md is written from this table (`python -m sweeper.reference`), and
tests/test_reference.py fails when a column a result row can have is missing here.

Columns are flat and prefixed, with units in their names; a cell is NaN or empty where the
column does not apply to the trial (an open-loop trial has no load_concurrency).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    key: str
    title: str
    about: str  # where the group's figures come from


@dataclass(frozen=True)
class Column:
    name: str  # the column, or a pattern with one <placeholder>: param_env_<VAR>
    group: str  # Group.key
    unit: str  # "" where the value has no unit (text, flags, identifiers)
    description: str

    def matches(self, column: str) -> bool:
        if "<" not in self.name:
            return column == self.name
        head, _, rest = self.name.partition("<")
        tail = rest.partition(">")[2]
        return re.fullmatch(re.escape(head) + r".+" + re.escape(tail), column) is not None


GROUPS: tuple[Group, ...] = (
    Group("identity", "Identity", "Which trial and repeat a row is, and how it ended (sweeper.runner, the executor)."),
    Group("node", "Ray nodes", "With `sweeper run --ray` only (sweeper.executors.ray): where the trial ran."),
    Group("param", "Parameters", "The trial's configuration, as the sweep file set it (sweeper.plan.Trial.params)."),
    Group("load", "Load profile", "The load the trial was measured under (the sweep's `load`, or the rate search)."),
    Group(
        "client",
        "Client (load engine)",
        "Measured by the load engine over the measured window (sweeper.load.summary). Served means a "
        "2xx answer: latency and throughput count served requests only; open-loop latency runs from "
        "each request's scheduled send time. Under settings.stability every figure comes from the used "
        "windows only; requests.csv.gz in the trial's directory holds every request.",
    ),
    Group(
        "windows",
        "Windows",
        "The measured time cut into windows (sweeper.load.windows): under settings.stability the rule "
        "that ends a trial; otherwise the same cut afterwards, for the confidence intervals.",
    ),
    Group(
        "agreement",
        "Client against server",
        "The client's mean latency against TorchServe's own (sweeper.analysis.agreement).",
    ),
    Group(
        "server",
        "Server (TorchServe)",
        "From TorchServe itself: /metrics counter deltas and the per-batch PredictionTime lines of its "
        "log (sweeper.serverlog), over the whole measured run; and how the server and the model "
        "registration were prepared for the trial.",
    ),
    Group(
        "proc",
        "Server processes",
        "psutil samples of the server's process tree (JVM and backend workers) every "
        "settings.probe_interval_s during the window, without the idle workers of other registrations "
        "kept on the server (sweeper.torchserve.probe).",
    ),
    Group(
        "host",
        "Machine",
        "The whole machine during the window: /proc/stat (sweeper.hoststat, Linux only) and a CPU speed "
        "probe (sweeper.hostspeed). Absent where they cannot be read.",
    ),
    Group(
        "gpu",
        "GPUs",
        "NVML samples (nvidia-ml-py, the optional extra `gpu`) of the GPUs the trial's workers could use, "
        "every settings.probe_interval_s during the window (sweeper.gpu): means and peaks over the samples "
        "and over those GPUs. Absent on a machine without GPUs or without nvidia-ml-py; a trial with "
        "number_of_gpu 0 on a GPU machine has gpu_count 0 only.",
    ),
    Group(
        "capacity",
        "Capacity",
        "With search.objective capacity (sweeper.capacity): load_mode is then capacity and load_rate_rps "
        "the search's start_rps. The client_* columns and requests.csv.gz are those of the step at the "
        "capacity (the first step when none passed), and so are the server_*, proc_* and host_speed "
        "columns (over that step's whole run).",
    ),
    Group(
        "ceiling",
        "Serving efficiency",
        "With settings.baseline or `sweeper baseline RUN_DIR` (sweeper.analysis.efficiency): the same "
        "model and handler measured in-process, without TorchServe.",
    ),
    Group("timing", "Timing", "How long the trial took (the executor)."),
)

_C = Column

COLUMNS: tuple[Column, ...] = (
    # identity
    _C("sweep", "identity", "", "The sweep's name (the sweep file's `name`)."),
    _C("run_id", "identity", "", "The run directory's name: `<sweep>-<date>-<time>`."),
    _C("seq", "identity", "", "The trial's position in the run order, from 1; rows are sorted by it."),
    _C("trial_id", "identity", "", "Hash of the trial's parameters, the repeat left out: the same configuration has the same id in every run (resume relies on it)."),
    _C("repeat", "identity", "", "Repeat number, from 0."),
    _C("group_id", "identity", "", "Hash of the server-level settings (server and env): the trials that share one TorchServe start."),
    _C("status", "identity", "", "ok, failed or interrupted."),
    _C("error", "identity", "", "Why the trial failed, on one line; empty when ok."),
    _C("started_at", "identity", "", "When the trial started, ISO 8601 in UTC."),
    _C("log_tail", "identity", "", "The end of the server's log for a trial that failed; in result.json only, not in results.csv."),
    # node
    _C("node_label", "node", "", "`<ip>-<node id prefix>`: the node's directory under nodes/ of the run directory."),
    _C("node_ip", "node", "", "The node's IP address."),
    _C("node_id", "node", "", "Ray's id of the node."),
    _C("node_hostname", "node", "", "The node's host name (from its machine.json)."),
    _C("node_cpu_model", "node", "", "The node's CPU model (from its machine.json)."),
    _C("node_cores_usable", "node", "count", "CPUs the sweeper may use on the node (from its machine.json)."),
    _C("ray_overhead_s", "node", "s", "What Ray added to the trial: the driver's round trip of the call, trial and files shipped both ways, minus wall_s measured on the node."),
    # param
    _C("param_model_name", "param", "", "The model served (model.name, or the archive's manifest name)."),
    _C("param_model_batch_size", "param", "count", "model.batch_size: the most requests TorchServe hands the handler at once."),
    _C("param_model_max_batch_delay_ms", "param", "ms", "model.max_batch_delay_ms: how long TorchServe waits to fill a batch."),
    _C("param_model_min_workers", "param", "count", "model.min_workers; empty when the sweep left it to server.default_workers_per_model."),
    _C("param_model_max_workers", "param", "count", "model.max_workers; min_workers when the sweep did not set it."),
    _C("param_model_response_timeout_s", "param", "s", "model.response_timeout_s."),
    _C("param_server_<key>", "param", "", "A config.properties key the sweep set (server.<key>), e.g. param_server_number_of_netty_threads."),
    _C("param_env_<VAR>", "param", "", "An environment variable the sweep set (env.<VAR>), e.g. param_env_OMP_NUM_THREADS; `A+B` sets two columns."),
    _C("param_request_name", "param", "", "The request set (the request's name, or the file's name); only when the sweep has a `request` group."),
    _C("request_body_bytes_mean", "param", "bytes", "Mean payload size of the trial's request set; only when the sweep has a `request` group."),
    # load
    _C("load_mode", "load", "", "closed, open, or capacity (the rate search of search.objective capacity)."),
    _C("load_concurrency", "load", "count", "Closed loop: requests in flight."),
    _C("load_rate_rps", "load", "req/s", "Open loop: the target rate; capacity: the search's start_rps."),
    _C("load_duration_s", "load", "s", "The load's duration_s (capacity: step_s); under settings.stability the used windows' length is measure_s."),
    _C("load_requests", "load", "count", "Closed loop bounded by a request count: how many."),
    _C("load_processes", "load", "count", "Load engine processes the load was split over."),
    # client
    _C("client_requests", "client", "count", "Requests of the window, answered or not."),
    _C("client_ok", "client", "count", "Requests answered with a 2xx status: served."),
    _C("client_errors", "client", "count", "client_requests - client_ok: every other answer, and requests that got none."),
    _C("client_status_counts", "client", "", "Every status and its count, e.g. `200:950 503:50 -1:3` (0: connection error, -1: timeout, -2: refused by the engine's outstanding cap)."),
    _C("client_refused", "client", "count", "Open loop: requests the engine never sent because its cap on outstanding requests was reached (status -2)."),
    _C("client_timeouts", "client", "count", "Requests unanswered after the load's timeout_s (status -1)."),
    _C("client_connection_errors", "client", "count", "Requests that got no HTTP answer: refused or broken connections (status 0)."),
    _C("client_success_rate", "client", "0-1", "Share of the requests answered with request.expect_status (200 by default); below settings.min_success_rate the trial failed."),
    _C("client_throughput_rps", "client", "req/s", "Served requests per second of the measured window (closed loop: completed inside it; open loop: scheduled inside it)."),
    _C("client_window_s", "client", "s", "The measured window's length, from the load profile, never from the slowest request."),
    _C("client_latency_mean_ms", "client", "ms", "Mean latency of the served requests."),
    _C("client_latency_p50_ms", "client", "ms", "Median latency of the served requests."),
    _C("client_latency_p90_ms", "client", "ms", "90th percentile latency of the served requests."),
    _C("client_latency_p99_ms", "client", "ms", "99th percentile latency of the served requests."),
    _C("client_latency_max_ms", "client", "ms", "Slowest served request."),
    _C("client_target_rate_rps", "client", "req/s", "Open loop: the rate asked for."),
    _C("client_achieved_rate_rps", "client", "req/s", "Requests put on the wire per second, (sent - 1) / (last send - first send); refused ones were never sent."),
    _C("client_send_lag_p50_ms", "client", "ms", "Median of how late the engine sent a request after its scheduled time."),
    _C("client_send_lag_p99_ms", "client", "ms", "99th percentile of the send lag."),
    _C("client_send_lag_max_ms", "client", "ms", "Largest send lag."),
    _C("client_cpu_pct", "client", "% of one core", "CPU of the load engine processes over their run (100 = one core)."),
    _C("client_sched_wait_pct", "client", "%", "Share of the window the engines' event loops were runnable but waiting for a CPU (Linux schedstat)."),
    _C("client_sched_wait_ms_mean", "client", "ms", "The engines' mean wait for a CPU per wake-up."),
    _C("client_bound", "client", "", "True when the client, not the server, set the pace (rate not reached, send lag, engine CPU or its wait for a CPU)."),
    _C("client_bound_reason", "client", "", "Why client_bound, with the figures; empty when not."),
    _C("client_batch_size_mean", "client", "count", "Served batch size per request, from the handler's X-Batch-Size header: a batch of 8 counts 8 times."),
    _C("client_batch_size_per_batch_mean", "client", "count", "Mean size of the served batches, from the X-Batch-Size header."),
    _C("client_handler_ms_mean", "client", "ms", "Mean handler time the handler reported (X-Handler-Ms header)."),
    _C("client_device", "client", "", "Where the handler ran the model, from its X-Device header: cpu, cuda:0, ... (the distinct values seen, comma-separated); absent when the handler does not say."),
    _C("client_warmup_s", "client", "s", "Load sent before the window and not measured: the registration warm-up (when there was one) plus settings.warmup_s."),
    # windows
    _C("client_windows", "windows", "", "JSON list, one object per complete window: start_s, n, ok, rps, p99_ms, mean_ms, used (whether the figures come from it)."),
    _C("client_window_cv", "windows", "0-1", "The larger of client_window_rps_cv and the CV of the latency figure the stability rule judged (client_window_mean_cv by default, client_window_p99_cv with latency p99 or without a rule), over the used windows."),
    _C("client_window_rps_cv", "windows", "0-1", "Coefficient of variation (standard deviation / mean) of the used windows' throughputs."),
    _C("client_window_p99_cv", "windows", "0-1", "Coefficient of variation of the used windows' p99 latencies."),
    _C("client_window_mean_cv", "windows", "0-1", "Coefficient of variation of the used windows' mean latencies."),
    _C("client_unstable", "windows", "", "True when settings.stability's windows never agreed within max_cv by max_duration_s; false without a stability rule."),
    _C("client_unstable_reason", "windows", "", "Why client_unstable, with the CVs; empty when not."),
    # agreement
    _C("client_minus_server_mean_ms", "agreement", "ms", "client_latency_mean_ms (over the whole run) - server_inference_latency_mean_ms."),
    _C("client_server_disagree", "agreement", "", "True when they differ by more than 2 ms + 10% of the server mean: the client measured something the server did not."),
    _C("client_server_disagree_reason", "agreement", "", "The figures behind client_server_disagree; empty when they agree."),
    # server
    _C("server_requests", "server", "count", "Requests that reached TorchServe, as it counts them (503s included)."),
    _C("server_served", "server", "count", "Requests answered with a result: the client's served count over the whole run."),
    _C("server_inference_latency_mean_ms", "server", "ms", "TorchServe's inference latency counter delta / server_served."),
    _C("server_queue_latency_mean_ms", "server", "ms", "TorchServe's queue latency counter delta / server_served: time waiting for a worker."),
    _C("server_batches", "server", "count", "Batches the handler served (PredictionTime lines of TorchServe's log)."),
    _C("server_batch_size_mean", "server", "count", "Requests in the served batches / server_batches: the batches' mean size."),
    _C("server_batch_size_per_request_mean", "server", "count", "The size of the batch each request was served in, averaged per request (as client_batch_size_mean)."),
    _C("server_model_name", "server", "", "The name the model was registered under: NAME, or NAME_1, NAME_2, ... beside kept registrations (settings.keep_registered)."),
    _C("server_registered", "server", "", "1: this trial registered its model; 0: it ran on the previous trial's or a kept registration."),
    _C("server_scaled", "server", "", "1: this trial scaled the previous trial's registration to its own workers in place (settings.scale_workers) instead of registering anew."),
    _C("server_warmup_s", "server", "s", "How long the server warm-up ran before this trial (the first on a freshly started TorchServe); 0 for the others."),
    _C("server_warmup_jit_pct", "server", "% of one core", "CPU of the JVM's JIT compiler threads at the end of the server warm-up; at or above the quiet threshold the cap stopped it while the JVM was still compiling. NaN where there was none or it cannot be read."),
    # proc
    _C("proc_cpu_pct", "proc", "% of one core", "CPU of the whole process tree over the window (100 = one core)."),
    _C("proc_cpu_pct_frontend", "proc", "% of one core", "CPU of the frontend (the JVM)."),
    _C("proc_cpu_pct_workers", "proc", "% of one core", "CPU of the backend worker processes."),
    _C("proc_rss_mb", "proc", "MiB", "Peak resident memory of the tree."),
    _C("proc_threads", "proc", "count", "Peak thread count of the tree."),
    _C("proc_ctx_voluntary", "proc", "count", "Voluntary context switches of each process's main thread only (/proc/PID/status; kept for comparison with older runs)."),
    _C("proc_ctx_involuntary", "proc", "count", "Involuntary context switches of each process's main thread only."),
    _C("proc_ctx_per_req", "proc", "count", "(proc_ctx_voluntary + proc_ctx_involuntary) / served requests."),
    _C("proc_ctx_all_voluntary", "proc", "count", "Voluntary context switches of every thread of every process (per-thread deltas of /proc/PID/task/*/status)."),
    _C("proc_ctx_all_involuntary", "proc", "count", "Involuntary context switches of every thread of every process."),
    _C("proc_ctx_all_per_req", "proc", "count", "(proc_ctx_all_voluntary + proc_ctx_all_involuntary) / served requests."),
    _C("proc_exited_processes", "proc", "count", "Processes gone before the window's last sample: their switches after the sample before are not counted."),
    _C("proc_exited_threads", "proc", "count", "Threads gone before the window's last sample (as proc_exited_processes)."),
    # host
    _C("host_busy_pct", "host", "% of all CPUs", "The machine's CPU time running anything (not idle, iowait or steal), as a share of all its CPU time."),
    _C("host_steal_pct", "host", "% of all CPUs", "CPU time the hypervisor gave to other guests (steal), as a share of all the machine's CPU time."),
    _C("host_speed", "host", "work per CPU ms", "Median speed of a fixed piece of work per CPU millisecond: relative, compare it between trials of one run on one machine."),
    _C("host_speed_n", "host", "count", "Samples behind host_speed."),
    # gpu
    _C("gpu_count", "gpu", "count", "GPUs the trial's workers could use: the first number_of_gpu of those its server sees (CUDA_VISIBLE_DEVICES)."),
    _C("gpu_name", "gpu", "", "Their model names (distinct, separated by '; ')."),
    _C("gpu_util_pct_mean", "gpu", "%", "NVML's utilization (share of time a kernel ran), mean over the samples and the GPUs."),
    _C("gpu_util_pct_max", "gpu", "%", "The highest utilization of one GPU in one sample."),
    _C("gpu_util_pct_by_gpu", "gpu", "%", "Each GPU's mean utilization, 'index:pct' separated by spaces: how evenly round-robin spread the workers."),
    _C("gpu_mem_used_mb_mean", "gpu", "MiB", "Memory used on a GPU (every process on it), mean over the samples and the GPUs."),
    _C("gpu_mem_used_mb_max", "gpu", "MiB", "The most memory used on one GPU in one sample."),
    _C("gpu_power_w_mean", "gpu", "W", "Board power draw of a GPU, mean over the samples and the GPUs."),
    _C("gpu_power_w_max", "gpu", "W", "The highest power draw of one GPU in one sample."),
    _C("gpu_sm_clock_mhz_mean", "gpu", "MHz", "SM clock, mean over the samples and the GPUs."),
    _C("gpu_sm_clock_mhz_min", "gpu", "MHz", "The lowest SM clock seen: low when clocks were held down (gpu_throttle_reasons)."),
    _C("gpu_temp_c_max", "gpu", "°C", "The hottest GPU temperature seen."),
    _C("gpu_throttle_reasons", "gpu", "", "Why clocks were held down, NVML's reason names with the share of samples, largest first ('SwPowerCap 40%, GpuIdle 5%'); 'none' when never."),
    _C("gpu_samples_n", "gpu", "count", "NVML samples behind the gpu_* figures (every GPU's)."),
    _C("gpu_note", "gpu", "", "One line, only when something was not measured: a GPU in MIG mode (not sampled: NVML reports no utilization for it) or an NVML call that failed (that figure left empty)."),
    # capacity
    _C("capacity_rps_at_slo", "capacity", "req/s", "The highest open-loop rate whose step met p99 <= settings.slo_p99_ms and settings.min_success_rate; 0.0 when even start_rps failed."),
    _C("capacity_limited_by", "capacity", "", "What failed at the next rate: p99, success or client; max_rps or steps when nothing failed; +steps appended when max_steps ran out before the precision."),
    _C("capacity_first_fail_rps", "capacity", "req/s", "The lowest rate that failed twice (a confirmed failure); NaN when none did."),
    _C("capacity_precision", "capacity", "0-1", "(capacity_first_fail_rps - capacity_rps_at_slo) / capacity_rps_at_slo."),
    _C("capacity_steps_n", "capacity", "count", "Steps the search ran."),
    _C("capacity_steps", "capacity", "", "JSON list, one object per step in the order run: rate_rps, p99_ms, success_rate, achieved_rps, throughput_rps, passed, reason, limit."),
    _C("capacity_abandoned_requests", "capacity", "count", "Timeouts and connection errors over every step."),
    # ceiling
    _C("baseline_samples_per_s", "ceiling", "samples/s", "In-process samples per second of the same model and handler at the trial's batch size, torch threads and workers."),
    _C("efficiency", "ceiling", "0-1", "client_throughput_rps / baseline_samples_per_s; closed loop only."),
    # timing
    _C("wall_s", "timing", "s", "The whole trial, model registration and warm-ups included."),
    _C("measure_s", "timing", "s", "The measured load window (under settings.stability: the used windows; capacity: every step)."),
    _C("overhead_s", "timing", "s", "wall_s - measure_s."),
)


def documented(column: str) -> Column | None:
    """The entry that documents `column`: its exact name first, then a pattern."""
    for entry in COLUMNS:
        if entry.name == column:
            return entry
    return next((entry for entry in COLUMNS if entry.matches(column)), None)
