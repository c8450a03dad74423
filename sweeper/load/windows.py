"""Stability windows: the measured time cut into windows, each with its throughput and p99,
and the rule that says when a trial has measured long enough. Pure (numpy only).

A request belongs to the window in which it was *scheduled* (open loop: its place in the
fixed schedule; closed loop: the moment its slot became free), so a request still in
flight at a window's end counts in the window it was scheduled in, and a window is
complete only when every request scheduled in it has ended. A window's throughput is its
served (2xx) requests per window_s; its mean and p99 latency are over those requests'
latencies (from the schedule).

The rule (settings.stability): the trial measures in windows of `window_s` until the last
`windows` complete windows agree - the coefficient of variation (sample standard
deviation / mean) of their throughputs and of their latencies (`latency`: the windows'
mean latency by default, or their p99) both at most `max_cv` - or until
`max_duration_s`; then the trial is `unstable`. Its figures come from those last
`windows` windows ("used" in client_windows), whichever way it ended.

Why the mean by default: the p99 of a short window rests on its few slowest requests (at
150 req/s a 2 s window's p99 is its 3rd slowest), so 2 s windows' p99s rarely agree within
10% and open-loop trials run to max_duration_s; stopping on the mean ends them sooner, and
the trials' p99 (over the used windows) varies between repeats about as much
(docs/measurements.md#code-stability-mean-latency). The trial's p99 is still over all the
requests of its used windows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import numpy as np

from .types import LoadRun, Outcome, Stability

# Without settings.stability a fixed-duration run is still cut into windows of this
# length (when it is long enough for two), for the confidence intervals.
DEFAULT_WINDOW_S = 1.0


@dataclass(frozen=True)
class Window:
    index: int
    requests: int
    ok: int
    rps: float  # served per second of the window
    p99_ms: float  # NaN when nothing was served
    mean_ms: float = math.nan  # NaN when nothing was served

    def latency(self, which: str) -> float:
        return self.mean_ms if which == "mean" else self.p99_ms


def window_stats(index: int, requests: int, latencies_s: np.ndarray, window_s: float) -> Window:
    """One window from its request count and the latencies of its served requests."""
    ok = int(len(latencies_s))
    p99 = float(np.percentile(latencies_s, 99)) * 1000.0 if ok else math.nan
    mean = float(np.mean(latencies_s)) * 1000.0 if ok else math.nan
    return Window(index, int(requests), ok, ok / window_s, p99, mean)


def cut(records: np.ndarray, window_s: float, end_s: float) -> list[Window]:
    """The complete windows [k*w, (k+1)*w) with (k+1)*w <= end_s, from merged records."""
    count = int(math.floor(end_s / window_s + 1e-9))
    if count <= 0 or len(records) == 0:
        return []
    k = np.floor(records["scheduled_s"] / window_s + 1e-9).astype(int)
    served = (records["status"] >= 200) & (records["status"] < 300)
    latency = records["end_s"] - records["scheduled_s"]
    out = []
    for i in range(count):
        mine = k == i
        out.append(window_stats(i, int(mine.sum()), latency[mine & served], window_s))
    return out


def cv(values: list[float]) -> float:
    """Sample coefficient of variation; NaN for fewer than two values or a zero mean,
    inf when a value is missing (a window that served nothing is not stable)."""
    if len(values) < 2:
        return math.nan
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr)):
        return math.inf
    mean = float(arr.mean())
    if mean == 0:
        return math.inf
    return float(arr.std(ddof=1) / mean)


def spread(windows: list[Window], latency: str = "p99") -> tuple[float, float]:
    """(CV of throughput, CV of the latency figure: "p99" or "mean") over `windows`."""
    return cv([w.rps for w in windows]), cv([w.latency(latency) for w in windows])


def is_stable(windows: list[Window], rule: Stability) -> bool:
    """The last rule.windows windows agree within rule.max_cv (throughput and rule.latency)."""
    if len(windows) < rule.windows:
        return False
    tput_cv, lat_cv = spread(windows[-rule.windows :], rule.latency)
    return tput_cv <= rule.max_cv and lat_cv <= rule.max_cv


def measured(run: LoadRun, outcome: Outcome) -> LoadRun:
    """The run restricted to the used windows, shifted so that they start at 0 and with
    their length as the profile's duration (summarize's window is then exactly them), and
    the engine CPU scaled to that share. Open loop: the requests scheduled in the windows.
    Closed loop: the requests that completed in them (summarize counts completions), so
    neither end of the interval loses the requests in flight across it."""
    return between(run, outcome.start_s, outcome.end_s)


def between(run: LoadRun, start: float, end: float) -> LoadRun:
    """The run restricted to [start, end) seconds since t0, as `measured` describes."""
    rec = run.records
    if run.profile.mode == "closed":
        keep = (rec["end_s"] > start + 1e-9) & (rec["end_s"] <= end + 1e-9)
    else:
        keep = (rec["scheduled_s"] >= start - 1e-9) & (rec["scheduled_s"] < end - 1e-9)
    out = rec[keep].copy()
    for name in ("scheduled_s", "sent_s", "end_s"):
        out[name] -= start
    wall = end - start
    share = wall / run.wall_s if run.wall_s > 0 else 1.0
    return replace(
        run,
        profile=replace(run.profile, duration_s=wall, requests=None),
        records=out,
        wall_s=wall,
        client_cpu_s=run.client_cpu_s * min(1.0, share),
        # the engine's wait for a CPU, like its CPU: the used windows' share (the mean wait
        # per wake-up, their ratio, is unchanged)
        client_sched_wait_s=run.client_sched_wait_s * min(1.0, share),
        client_sched_slices=int(round(run.client_sched_slices * min(1.0, share))),
    )


def posthoc(run: LoadRun) -> Outcome | None:
    """Windows of a fixed-duration run (no stability rule): every complete window of
    DEFAULT_WINDOW_S within the profile's duration is used. None when fewer than two fit."""
    duration = run.profile.duration_s
    if not duration or duration < 2 * DEFAULT_WINDOW_S:
        return None
    count = int(math.floor(duration / DEFAULT_WINDOW_S + 1e-9))
    return Outcome(DEFAULT_WINDOW_S, 0, count - 1, None)


def columns(run: LoadRun, outcome: Outcome | None, rule: Stability | None = None) -> dict:
    """client_windows (JSON: every complete window, "used" marking those the figures come
    from), client_window_cv (the larger of the throughput CV and the CV of the rule's
    latency figure over the used windows: the figure compared with max_cv; p99 without a
    rule), client_window_rps_cv, client_window_p99_cv, client_window_mean_cv,
    client_unstable (bool; False without a stability rule) and client_unstable_reason."""
    if outcome is None:
        return {
            "client_windows": "",
            "client_window_cv": math.nan,
            "client_window_rps_cv": math.nan,
            "client_window_p99_cv": math.nan,
            "client_window_mean_cv": math.nan,
            "client_unstable": False,
            "client_unstable_reason": "",
        }
    every = cut(run.records, outcome.window_s, outcome.end_s)
    used = [w for w in every if outcome.first <= w.index <= outcome.last]
    tput_cv, p99_cv = spread(used, "p99")
    mean_cv = spread(used, "mean")[1]
    judged = mean_cv if rule is not None and rule.latency == "mean" else p99_cv
    overall = max((v for v in (tput_cv, judged) if not math.isnan(v)), default=math.nan)
    cells = [
        {
            "start_s": round(w.index * outcome.window_s, 6),
            "n": w.requests,
            "ok": w.ok,
            "rps": round(w.rps, 3),
            "p99_ms": None if math.isnan(w.p99_ms) else round(w.p99_ms, 3),
            "mean_ms": None if math.isnan(w.mean_ms) else round(w.mean_ms, 3),
            "used": outcome.first <= w.index <= outcome.last,
        }
        for w in every
    ]
    reason = ""
    if outcome.stable is False and rule is not None:
        reason = (
            f"the last {rule.windows} windows of {rule.window_s:g} s did not agree within "
            f"{rule.max_cv:.0%} by max_duration_s {rule.max_duration_s:g} s (throughput CV "
            f"{_pct(tput_cv)}, {'mean latency' if rule.latency == 'mean' else 'p99'} CV {_pct(judged)})"
        )
    return {
        "client_windows": json.dumps(cells, separators=(",", ":")),
        "client_window_cv": overall,
        "client_window_rps_cv": tput_cv,
        "client_window_p99_cv": p99_cv,
        "client_window_mean_cv": mean_cv,
        "client_unstable": outcome.stable is False,
        "client_unstable_reason": reason,
    }


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.1%}")
