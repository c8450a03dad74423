"""What a trial measures, on a TorchServe that is up with the trial's model registered:
the first answers checked (a refused payload fails before the warm-up), the warm-up and
the measured load window (sweeper.load), /metrics scraped at the window's edges, the
served batches read from the server's log, the process tree sampled during the window, the
backend workers checked to have survived it and the success rate held to
settings.min_success_rate. The result is the trial's row (client_*, server_*, proc_* columns) and its
files as bytes. Where the server runs, and when it is started or reused, is the
executor's business (sweeper.executors).
"""

from __future__ import annotations

import psutil

from . import answers, serverlog
from .analysis.agreement import client_server_columns
from .errors import ServerError
from .load import LoadProfile, encode_records, run_load, summarize
from .load import windows as load_windows
from .load.types import Stability
from .payload import RequestSet
from .plan import Trial
from .spec import Settings
from .torchserve import metrics, probe
from .torchserve.process import TorchServe, redact

WARMUP_MAX_CONCURRENCY = 16
LOG_FILES = ("ts_log.log", "model_log.log", "stdout.log")


def measure(server: TorchServe, trial: Trial, settings: Settings, requests: RequestSet, files: dict[str, bytes]) -> dict:
    """Warm up, measure the window, return the row.

    `files` receives requests.csv.gz as soon as the window is over, so a trial that fails
    afterwards (a worker died during the window: ServerError with the partial row; too
    few successes: RequestsFailed) still keeps its records.
    """
    rule = stability_rule(settings)
    expected_s = (rule.max_duration_s if rule else (trial.load.duration_s or 60.0)) + settings.warmup_s
    server.refresh_tokens(min_valid_s=expected_s + 300.0)
    url = f"{server.inference_url}/predictions/{trial.model.name}"
    auth = server.headers("inference")
    target = requests.target(url, tuple(auth.items()))
    redact_keys = lambda text: redact(text, server.keys)  # noqa: E731
    replay = lambda: answers.first_answers(requests, url, auth, trial.load.timeout_s)  # noqa: E731
    # a payload the handler refuses fails here, before the warm-up and the window
    answers.check_first_answers(replay(), requests.expect_status, redact_keys)
    warmup = warmup_profile(trial.load, settings.warmup_s) if settings.warmup_s > 0 else None
    window: dict = {}
    stdout_log = server.log_dir / serverlog.STDOUT_LOG

    def before_window() -> None:
        # runs when the engines have warmed up and wait for t0: snapshot, then measure
        window["stdout_log"] = serverlog.settle(stdout_log)  # the warm-up's batches are before it
        server.note_pids()
        window["workers"] = worker_pids(server)
        window["metrics"] = metrics.scrape(server.metrics_url)
        window["probe"] = probe.Probe(server.root_pid, settings.probe_interval_s).start()

    try:
        run = run_load(target, trial.load, warmup=warmup, on_ready=before_window, stability=rule)
    finally:
        samples = window["probe"].stop() if "probe" in window else []
    before, workers_before = window["metrics"], window["workers"]
    after = metrics.scrape(server.metrics_url) if server.alive() else {}
    files["requests.csv.gz"] = encode_records(run)
    # Under a stability rule the figures come from the last windows only; otherwise
    # the whole run, cut into windows afterwards for the confidence intervals.
    outcome = run.windows or load_windows.posthoc(run)
    measured = load_windows.measured(run, run.windows) if run.windows else run
    row = summarize(measured)
    row["client_success_rate"] = answers.success_rate(measured.records["status"], requests.expect_status)
    if trial.request is not None:
        row["request_body_bytes_mean"] = requests.body_bytes_mean
    row.update(load_windows.columns(run, outcome, rule))
    # the server's counters and the process samples span the whole run: its 2xx count,
    # and its client mean for the client-vs-server comparison
    whole = summarize(run) if run.windows else row
    served_all = int(whole["client_ok"])
    row.update(metrics.server_columns(before, after, trial.model.name, served=served_all))
    # served batches from TorchServe's own log, over the whole run like its counters
    end = serverlog.settle(stdout_log)
    row.update(serverlog.batches_between(server.log_dir, trial.model.name, window["stdout_log"], end).columns())
    row.update(client_server_columns({**row, "client_latency_mean_ms": whole["client_latency_mean_ms"]}))
    row.update(probe.summarize(samples, served_all))
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


def stability_rule(settings: Settings) -> Stability | None:
    """settings.stability as the load engine takes it (None: one fixed window)."""
    s = settings.stability
    if s is None:
        return None
    return Stability(window_s=s.window_s, windows=s.windows, max_cv=s.max_cv, max_duration_s=s.max_duration_s)


def abandoned_requests(row: dict) -> int:
    """Requests the engine gave up on that TorchServe may still be working on: timeouts and
    connection errors (refused ones were never sent)."""
    return int(row.get("client_timeouts") or 0) + int(row.get("client_connection_errors") or 0)


def warmup_profile(load: LoadProfile, warmup_s: float) -> LoadProfile:
    """A closed-loop warm-up as wide as the trial's load (open loop: 5% of a second's
    requests in flight, at most WARMUP_MAX_CONCURRENCY)."""
    if load.mode == "closed":
        concurrency = load.concurrency
    else:
        concurrency = max(1, min(WARMUP_MAX_CONCURRENCY, int(load.rate_rps * 0.05)))
    concurrency = max(concurrency, load.processes)  # every engine process warms its connections
    return LoadProfile(
        mode="closed", concurrency=concurrency, duration_s=warmup_s, timeout_s=load.timeout_s, processes=load.processes
    )


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


def log_offsets(server: TorchServe) -> dict[str, int]:
    """Where each server log ends now: a trial's slice starts there."""
    out = {}
    for name in LOG_FILES:
        path = server.log_dir / name
        out[name] = path.stat().st_size if path.exists() else 0
    return out


def log_slices(server: TorchServe, offsets: dict[str, int]) -> dict[str, bytes]:
    """The slice of each server log written since `offsets`, keys redacted, as
    logs/<name> files of the trial."""
    out = {}
    for name in LOG_FILES:
        path = server.log_dir / name
        if not path.exists():
            continue
        with open(path, "rb") as f:
            f.seek(offsets.get(name, 0))
            text = f.read().decode(errors="replace")
        out[f"logs/{name}"] = redact(text, server.keys).encode()
    return out
