"""What a trial measures, on a TorchServe that is up with the trial's model registered:
the first answers checked (a refused payload fails before the warm-up), the warm-up and
the measured load window (sweeper.load), /metrics scraped at the window's edges, the
served batches read from the server's log, the process tree sampled during the window, the
machine's CPU speed sampled (sweeper.hostspeed), the trial's GPUs sampled where there
are any (sweeper.gpu), the backend workers checked to have survived it and the success rate held to
settings.min_success_rate. The result is the trial's row (client_*, server_*, proc_* columns) and its
files as bytes. Where the server runs, and when it is started or reused, is the
executor's business (sweeper.executors).

A capacity trial (search.objective capacity: `trial.capacity`) runs the rate search of
sweeper.capacity instead of one window: one short open-loop run per step on the same
server (`measure_capacity`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import psutil

from . import answers, gpu, hostspeed, hoststat, serverlog
from .analysis.agreement import client_server_columns
from .capacity import CapacityRule, Step, find_capacity, judge
from .errors import ServerError
from .load import LoadProfile, encode_records, run_load, summarize
from .load import windows as load_windows
from .load.types import LoadRun, Stability
from .payload import RequestSet
from .plan import Trial
from .spec import Settings
from .torchserve import metrics, probe
from .torchserve.process import TorchServe, redact
from .warmup import new_registration, warm_registration, warm_server, warm_server_columns, warmup_profile



def measure(
    server: TorchServe,
    trial: Trial,
    settings: Settings,
    requests: RequestSet,
    files: dict[str, bytes],
    fresh_server: bool = False,
    model_name: str | None = None,
    other_workers: frozenset[int] = frozenset(),
    fresh_registration: bool = False,
) -> dict:
    """Warm up, measure the window, return the row.

    `fresh_server`: this is the first trial on a newly started TorchServe; the server
    warm-up (`warm_server`: the JVM's JIT) comes before its own warm-up.
    `fresh_registration`: the trial's model was registered for it; the registration
    warm-up (`warm_registration`) comes before its own warm-up, unless `fresh_server`.

    `model_name`: the name the trial's model is registered under (default: its own name;
    the local executor keeps other settings of the model registered under other names);
    `other_workers`: the backend workers of those other registrations, idle during the
    trial and left out of the proc_* columns and of the check that no worker died.

    `files` receives requests.csv.gz as soon as the window is over, so a trial that fails
    afterwards (a worker died during the window: ServerError with the partial row; too
    few successes: RequestsFailed) still keeps its records.
    """
    if trial.capacity is not None:
        return measure_capacity(
            server, trial, trial.capacity, settings, requests, files, fresh_server, model_name, other_workers,
            fresh_registration,
        )
    name = model_name or trial.model.name
    rule = stability_rule(settings)
    warmup_s = settings.warmup_s
    expected_s = (rule.max_duration_s if rule else (trial.load.duration_s or 60.0)) + warmup_s
    expected_s += settings.server_warmup_cap_s if fresh_server else 0.0
    fresh = new_registration(fresh_server, fresh_registration)
    expected_s += settings.registration_warmup_cap_s if fresh else 0.0
    server.refresh_tokens(min_valid_s=expected_s)
    url = f"{server.inference_url}/predictions/{name}"
    auth = server.headers("inference")
    target = requests.target(url, tuple(auth.items()))
    redact_keys = lambda text: redact(text, server.keys)  # noqa: E731
    replay = lambda: answers.first_answers(requests, url, auth, trial.load.timeout_s)  # noqa: E731
    # a payload the handler refuses fails here, before the warm-up and the window
    answers.check_first_answers(replay(), requests.expect_status, redact_keys)
    server_warmup = warm_server(server, target, trial.load, settings) if fresh_server else warm_server_columns()
    registration_s = warm_registration(server, target, trial.load, settings) if fresh else 0.0
    warmup = warmup_profile(trial.load, warmup_s) if warmup_s > 0 else None
    window: dict = {}
    stdout_log = server.log_dir / serverlog.STDOUT_LOG

    def before_window() -> None:
        # runs when the engines have warmed up and wait for t0: snapshot, then measure
        window["stdout_log"] = serverlog.settle(stdout_log)  # the warm-up's batches are before it
        server.note_pids()
        window["workers"] = worker_pids(server) - other_workers
        window["metrics"] = metrics.scrape(server.metrics_url)
        window["probe"] = probe.Probe(server.root_pid, settings.probe_interval_s, exclude=other_workers).start()
        window["host"] = hoststat.cpu_times()
        window["speed"] = hostspeed.SpeedProbe(settings.probe_interval_s).start()
        window["gpu"] = gpu.start_probe(trial.server, trial.env, settings.probe_interval_s)  # None: no GPU

    try:
        run = run_load(target, trial.load, warmup=warmup, on_ready=before_window, stability=rule)
    finally:
        samples = window["probe"].stop() if "probe" in window else []
        speeds = window["speed"].stop() if "speed" in window else []
        gpus = window["gpu"].stop() if window.get("gpu") else None
    host_after = hoststat.cpu_times()
    before, workers_before = window["metrics"], window["workers"]
    after = metrics.scrape(server.metrics_url) if server.alive() else {}
    files["requests.csv.gz"] = encode_records(run)
    # Under a stability rule the figures come from the last windows only; otherwise
    # the whole run, cut into windows afterwards for the confidence intervals.
    outcome = run.windows or load_windows.posthoc(run)
    measured = load_windows.measured(run, run.windows) if run.windows else run
    row = summarize(measured, requests.expect_status)
    if trial.request is not None:
        row["request_body_bytes_mean"] = requests.body_bytes_mean
    row.update(load_windows.columns(run, outcome, rule))
    # the server's counters and the process samples span the whole run: its 2xx count,
    # and its client mean for the client-vs-server comparison
    whole = summarize(run, requests.expect_status) if run.windows else row
    served_all = int(whole["client_ok"])
    row.update(metrics.server_columns(before, after, name, served=served_all))
    # served batches from TorchServe's own log, over the whole run like its counters
    end = serverlog.settle(stdout_log)
    row.update(serverlog.batches_between(server.log_dir, name, window["stdout_log"], end).columns())
    row.update(client_server_columns({**row, "client_latency_mean_ms": whole["client_latency_mean_ms"]}))
    row.update(probe.summarize(samples, served_all))
    row.update(hoststat.columns(window.get("host"), host_after))
    row.update(hostspeed.columns(speeds))
    row.update(gpu.columns(gpus))
    row.update(server_warmup)
    row["client_warmup_s"] = round(registration_s + warmup_s, 3)
    row["measure_s"] = measured.wall_s
    if not server.alive():
        raise ServerError("TorchServe died during the measured window", server.log_tail())
    lost = workers_before - worker_pids(server)
    if lost:
        raise ServerError(
            f"{len(lost)} backend worker(s) died during the measured window", server.log_tail(), partial_row=row
        )
    answers.check_success(
        measured.records["status"], requests.expect_status, settings.min_success_rate, replay, redact_keys, partial_row=row
    )
    return row


def measure_capacity(
    server: TorchServe,
    trial: Trial,
    rule: CapacityRule,
    settings: Settings,
    requests: RequestSet,
    files: dict[str, bytes],
    fresh_server: bool = False,
    model_name: str | None = None,
    other_workers: frozenset[int] = frozenset(),
    fresh_registration: bool = False,
) -> dict:
    """The rate search (sweeper.capacity) on this server: the warm-up before the first
    step, then one open-loop run of rule.step_s per step, the first rule.warmup_s of each
    not judged. The row: the capacity_* columns, and the client_* columns of the step at
    the capacity (the highest passing rate; the first step when none passed), whose
    requests are requests.csv.gz, and the server_*, proc_* and host_speed columns of that
    same step (each step's run scrapes /metrics and samples the process tree, as a
    trial's window does; the figures of the other steps are dropped). A step that fails is
    data; a worker or server that dies fails the trial. `model_name` and `other_workers`:
    as measure's."""
    name = model_name or trial.model.name
    fresh = new_registration(fresh_server, fresh_registration)
    warmup_s = settings.warmup_s + (settings.server_warmup_cap_s if fresh_server else 0.0)
    warmup_s += settings.registration_warmup_cap_s if fresh else 0.0
    server.refresh_tokens(min_valid_s=rule.max_steps * rule.step_bound_s() + warmup_s)
    url = f"{server.inference_url}/predictions/{name}"
    auth = server.headers("inference")
    target = requests.target(url, tuple(auth.items()))
    redact_keys = lambda text: redact(text, server.keys)  # noqa: E731
    answers.check_first_answers(
        answers.first_answers(requests, url, auth, trial.load.timeout_s), requests.expect_status, redact_keys
    )
    host_before = hoststat.cpu_times()
    server_warmup = warm_server(server, target, trial.load, settings) if fresh_server else warm_server_columns()
    registration_s = warm_registration(server, target, trial.load, settings) if fresh else 0.0
    warmup = warmup_profile(trial.load, settings.warmup_s) if settings.warmup_s > 0 else None
    server.note_pids()
    workers_before = worker_pids(server) - other_workers
    runs: list = []  # the judged part of each step's run
    abandoned = 0

    observed: list[dict] = []  # the server_*, proc_* and host_speed columns of each step

    def step(rate: float) -> Step:
        nonlocal warmup, abandoned
        window: dict = {}

        def before_step() -> None:
            window["metrics"] = metrics.scrape(server.metrics_url)
            window["probe"] = probe.Probe(server.root_pid, settings.probe_interval_s, exclude=other_workers).start()
            window["speed"] = hostspeed.SpeedProbe(settings.probe_interval_s).start()
            window["gpu"] = gpu.start_probe(trial.server, trial.env, settings.probe_interval_s)

        try:
            verdict, judged, lost_requests, served = capacity_step(
                target, trial.load, rate, rule, requests.expect_status, warmup, on_ready=before_step
            )
        finally:
            samples = window["probe"].stop() if "probe" in window else []
            speeds = window["speed"].stop() if "speed" in window else []
            gpus = window["gpu"].stop() if window.get("gpu") else None
        warmup = None  # the server is warm from here on
        runs.append(judged)
        abandoned += lost_requests
        seen: dict = {}
        if "metrics" in window and server.alive():
            seen.update(metrics.server_columns(window["metrics"], metrics.scrape(server.metrics_url), name, served))
        seen.update(probe.summarize(samples, served))
        seen.update(hostspeed.columns(speeds))
        seen.update(gpu.columns(gpus))
        observed.append(seen)
        if not server.alive():
            raise ServerError(f"TorchServe died during the capacity search (step at {rate:g} req/s)", server.log_tail())
        lost = workers_before - worker_pids(server)
        if lost:
            raise ServerError(
                f"{len(lost)} backend worker(s) died during the capacity search (step at {rate:g} req/s)", server.log_tail()
            )
        return verdict

    found = find_capacity(step, rule)
    best = runs[found.best]
    files["requests.csv.gz"] = encode_records(best)
    row = summarize(best, requests.expect_status)
    if trial.request is not None:
        row["request_body_bytes_mean"] = requests.body_bytes_mean
    row.update(load_windows.columns(best, load_windows.posthoc(best), None))
    row.update(found.columns())
    row.update(observed[found.best])  # the server and its processes during that step's run
    row["capacity_abandoned_requests"] = abandoned
    row.update(hoststat.columns(host_before, hoststat.cpu_times()))  # every step, warm-up included
    row.update(server_warmup)
    row["client_warmup_s"] = round(registration_s + settings.warmup_s, 3)
    row["measure_s"] = float(sum(r.wall_s for r in runs))
    return row


def capacity_step(
    target,
    load: LoadProfile,
    rate: float,
    rule: CapacityRule,
    expect_status: int,
    warmup: LoadProfile | None = None,
    on_ready=None,
) -> tuple[Step, LoadRun, int, int]:
    """One step of the rate search: `load` at `rate` for rule.step_s, judged without its
    first rule.warmup_s. `on_ready` runs after the warm-up, just before the step's run (as
    run_load's). Returns the verdict, the judged part of the run, the requests it abandoned
    (timeouts and connection errors over the whole step) and the requests served over the
    whole step (the denominator of the server's and the processes' per-request figures,
    which span the whole run)."""
    run = run_load(
        target, replace(load, rate_rps=rate, duration_s=rule.step_s, requests=None), warmup=warmup, on_ready=on_ready
    )
    judged = load_windows.between(run, rule.warmup_s, rule.step_s) if rule.warmup_s > 0 else run
    figures = summarize(judged, expect_status)
    verdict = judge(
        rate, figures["client_latency_p99_ms"], figures["client_success_rate"], figures["client_achieved_rate_rps"], figures["client_throughput_rps"], rule
    )
    whole = summarize(run)
    return verdict, judged, abandoned_requests(whole), int(whole["client_ok"])


def stability_rule(settings: Settings) -> Stability | None:
    """settings.stability as the load engine takes it (None: one fixed window)."""
    s = settings.stability
    if s is None:
        return None
    return Stability(
        window_s=s.window_s, windows=s.windows, max_cv=s.max_cv, max_duration_s=s.max_duration_s, latency=s.latency
    )


def abandoned_requests(row: dict) -> int:
    """Requests the engine gave up on that TorchServe may still be working on: timeouts and
    connection errors (refused ones were never sent)."""
    out = int(row.get("client_timeouts") or 0) + int(row.get("client_connection_errors") or 0)
    extra = row.get("capacity_abandoned_requests")  # every step of a capacity search
    return out + (int(extra) if isinstance(extra, (int, float)) and not math.isnan(extra) else 0)


def worker_pids(server: TorchServe) -> set[int]:
    """The pids of the server's backend workers."""
    out = set()
    for p in server.processes():
        try:
            if "model_service_worker" in " ".join(p.cmdline()):
                out.add(p.pid)
        except psutil.Error:  # the process went away while we looked
            continue
    return out
