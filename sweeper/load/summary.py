"""summarize(run): the client_* columns of results.csv, computed from the per-request records.

Definitions (times from RECORD_DTYPE, seconds since t0):
- served = 2xx. Everything else is an error and has no latency: 4xx, 5xx, and the
  requests that got no HTTP answer, each with its own status and count (types.STATUS_*):
  connection error (0), timeout (-1), refused by the open loop's outstanding cap (-2).
- latency = end_s - scheduled_s. In the open loop scheduled_s is the fixed schedule, so a
  request that waited behind a stalled server, or behind a late client, is charged the wait
  (no coordinated omission).
- window: the measured interval, defined by the load profile, never by the slowest
  request (one request hanging to its timeout must not stretch it):
  - closed loop with duration_s: [0, duration_s] (the engine stops issuing at its end);
  - closed loop bounded by a request count: [0, the moment the last request was issued];
  - open loop: the schedule, [0, requests / rate_rps].
  When that interval is empty (e.g. every request issued at t0), the window falls back to
  first scheduled send to last completion.
- throughput = served requests of the window / window length. Closed loop: 2xx responses
  that completed inside the window (those still in flight at its end belong to no
  window). Open loop: 2xx responses to requests scheduled in the window, whenever they
  completed (a request is counted in the window where it was scheduled).
- achieved rate = (issued - 1) / (last sent_s - first sent_s) over the requests the
  engine put on the wire (refused requests were never sent, so they do not count):
  intervals per second, so that N requests due every 1/r seconds give exactly r.
- send lag = sent_s - scheduled_s: how late the engine started a request.

Client-bound detection: the run measured the client, not the server, when
- open loop: the achieved rate fell below CLIENT_BOUND_RATE_FRACTION of the target (the
  engine could not issue requests as fast as asked, or refused them at its outstanding
  cap: either way the server did not see the load asked for), or
- open loop: send lag p99 exceeded CLIENT_BOUND_SEND_LAG_P99_MS (requests left late, so
  the server saw a burstier, slower arrival process than the one asked for; 10 ms is ten
  timer ticks of the event loop, far above the ~1 ms lag of a healthy engine), or
- any mode: engine CPU reached CLIENT_BOUND_CPU_FRACTION of the cores the engine
  processes can use (one core each at most, fewer under cpu_affinity). A saturated
  single-threaded event loop delays reading responses, which inflates latency and, in the
  closed loop, caps throughput.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .types import STATUS_CONNECTION_ERROR, STATUS_REFUSED, STATUS_TIMEOUT, LoadRun

CLIENT_BOUND_RATE_FRACTION = 0.99
CLIENT_BOUND_SEND_LAG_P99_MS = 10.0
CLIENT_BOUND_CPU_FRACTION = 0.90
CLIENT_BOUND_SCHED_WAIT_FRACTION = 0.10

_NAN = math.nan


def _ms_stats(values_s: np.ndarray, quantiles: tuple[float, ...]) -> list[float]:
    if len(values_s) == 0:
        return [_NAN] * len(quantiles)
    return [float(v) * 1000.0 for v in np.percentile(values_s, quantiles)]


def _engine_cores(run: LoadRun) -> int:
    profile = run.profile
    available = len(profile.cpu_affinity) if profile.cpu_affinity else (os.cpu_count() or 1)
    return max(1, min(profile.processes, available))


def window(run: LoadRun) -> tuple[float, float]:
    """(start_s, end_s) of the measured window, from the load profile (see the module
    docstring); seconds since t0."""
    rec, profile = run.records, run.profile
    if len(rec) == 0:
        return 0.0, 0.0
    start = 0.0
    if profile.mode == "open":
        end = len(rec) / float(profile.rate_rps) if profile.rate_rps else 0.0
    elif profile.duration_s is not None:
        end = float(profile.duration_s)
    else:
        end = float(rec["scheduled_s"].max())
    if not end > start:
        start, end = float(rec["scheduled_s"].min()), float(rec["end_s"].max())
    return start, end


def _served_in_window(run: LoadRun, ok: np.ndarray, start: float, end: float) -> int:
    if run.profile.mode == "open":
        return int(ok.sum())
    return int((ok & (run.records["end_s"] <= end)).sum())


def success_rate(statuses: np.ndarray, expect_status: int) -> float:
    """The share of answers with `expect_status` (request.expect_status): the figure
    settings.min_success_rate judges. NaN with no requests."""
    return float((statuses == expect_status).mean()) if len(statuses) else _NAN


def summarize(run: LoadRun, expect_status: int = 200) -> dict:
    """The client_* columns for one run. Plain Python scalars (JSON-ready); NaN where
    a figure does not apply or there is nothing to compute it from. Served (client_ok,
    throughput, latency) means a 2xx answer; client_success_rate is the share of answers
    with `expect_status`."""
    rec = run.records
    n = int(len(rec))
    status = rec["status"]
    ok = (status >= 200) & (status < 300)
    n_ok = int(ok.sum())

    codes, counts = np.unique(status, return_counts=True)
    status_counts = " ".join(f"{int(c)}:{int(k)}" for c, k in zip(codes, counts))

    w_start, w_end = window(run)
    window_s = w_end - w_start
    served = _served_in_window(run, ok, w_start, w_end)

    latency = (rec["end_s"] - rec["scheduled_s"])[ok]
    mean_ms = float(latency.mean()) * 1000.0 if n_ok else _NAN
    p50, p90, p99, lat_max = _ms_stats(latency, (50, 90, 99, 100))

    refused = int((status == STATUS_REFUSED).sum())
    timeouts = int((status == STATUS_TIMEOUT).sum())
    conn_errors = int((status == STATUS_CONNECTION_ERROR).sum())
    sent = rec["sent_s"][status != STATUS_REFUSED]
    n_sent = len(sent)
    span = float(sent.max() - sent.min()) if n_sent >= 2 else 0.0
    achieved = (n_sent - 1) / span if span > 0 else _NAN
    lag_p50, lag_p99, lag_max = _ms_stats(rec["sent_s"] - rec["scheduled_s"], (50, 99, 100))

    open_loop = run.profile.mode == "open"
    target = float(run.profile.rate_rps) if open_loop and run.profile.rate_rps else _NAN
    cpu_pct = 100.0 * run.client_cpu_s / run.wall_s if run.wall_s > 0 else _NAN

    sched_pct = 100.0 * run.client_sched_wait_s / run.wall_s if run.wall_s > 0 else _NAN
    slices = run.client_sched_slices
    sched_wait_ms = 1000.0 * run.client_sched_wait_s / slices if slices > 0 else _NAN
    reasons = _client_bound_reasons(run, n, n_ok, refused, achieved, target, lag_p99, mean_ms, sched_wait_ms, cpu_pct)

    batch = rec["batch_size"][ok]
    batch = batch[batch >= 0]
    handler = rec["handler_ms"][ok]
    handler = handler[~np.isnan(handler)]

    return {
        "client_requests": n,
        "client_ok": n_ok,
        "client_errors": n - n_ok,
        "client_status_counts": status_counts,
        "client_refused": refused,
        "client_timeouts": timeouts,
        "client_connection_errors": conn_errors,
        "client_success_rate": success_rate(status, expect_status),
        "client_throughput_rps": served / window_s if window_s > 0 else _NAN,
        "client_window_s": window_s if n else _NAN,
        "client_latency_mean_ms": mean_ms,
        "client_latency_p50_ms": p50,
        "client_latency_p90_ms": p90,
        "client_latency_p99_ms": p99,
        "client_latency_max_ms": lat_max,
        "client_target_rate_rps": target,
        "client_achieved_rate_rps": achieved,
        "client_send_lag_p50_ms": lag_p50,
        "client_send_lag_p99_ms": lag_p99,
        "client_send_lag_max_ms": lag_max,
        "client_cpu_pct": cpu_pct,
        "client_sched_wait_pct": sched_pct,
        "client_sched_wait_ms_mean": sched_wait_ms,
        "client_bound": bool(reasons),
        "client_bound_reason": "; ".join(reasons),
        # per request: the batch size a served request was in (a batch of 8 counts 8 times);
        # per batch: the mean size of the batches, n / sum(1 / size) over the requests
        "client_batch_size_mean": float(batch.mean()) if len(batch) else _NAN,
        "client_batch_size_per_batch_mean": float(len(batch) / np.sum(1.0 / batch[batch > 0])) if (batch > 0).any() else _NAN,
        "client_handler_ms_mean": float(handler.mean()) if len(handler) else _NAN,
        # where the handler served the run (X-Device), only when its responses said so
        **({"client_device": ",".join(run.devices)} if run.devices else {}),
    }


def _client_bound_reasons(run: LoadRun, n: int, n_ok: int, refused: int, achieved: float, target: float,
                          lag_p99: float, mean_ms: float, sched_wait_ms: float, cpu_pct: float) -> list[str]:
    """Why the load engine, not the server, may have set the pace ([] when nothing says so):
    an open loop that fell behind its schedule, an engine that waited for a CPU, an engine
    that used most of its cores."""
    reasons = []
    if run.profile.mode == "open" and n >= 2:
        if not achieved >= CLIENT_BOUND_RATE_FRACTION * target:  # also catches NaN
            reasons.append(
                f"achieved rate {achieved:.1f} req/s < {CLIENT_BOUND_RATE_FRACTION:.0%} "
                f"of target {target:g} req/s"
                + (f" ({refused} requests refused at the outstanding cap)" if refused else "")
            )
        if lag_p99 > CLIENT_BOUND_SEND_LAG_P99_MS:
            reasons.append(
                f"send lag p99 {lag_p99:.1f} ms > {CLIENT_BOUND_SEND_LAG_P99_MS:g} ms"
            )
    # A starved engine (runnable, but its CPU busy with something else) reads answers late
    # with little CPU of its own: the CPU rule below cannot see it. Mean wait per wake-up
    # is the delay a ready answer waited before the engine could read it.
    if sched_wait_ms > CLIENT_BOUND_SCHED_WAIT_FRACTION * mean_ms and n_ok:
        reasons.append(
            f"engine waited {sched_wait_ms:.2f} ms for a CPU per wake-up, > "
            f"{CLIENT_BOUND_SCHED_WAIT_FRACTION:.0%} of the mean latency {mean_ms:.2f} ms"
        )
    cores = _engine_cores(run)
    if cpu_pct >= CLIENT_BOUND_CPU_FRACTION * 100.0 * cores:
        reasons.append(
            f"engine CPU {cpu_pct:.0f}% >= {CLIENT_BOUND_CPU_FRACTION:.0%} of "
            f"{cores} core{'s' if cores > 1 else ''}"
        )
    return reasons
