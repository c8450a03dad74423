"""The warm-ups before a measured window: a fresh server's (the JVM's JIT compiles the
frontend's hot paths under the first load), a new registration's (new workers, and the
JIT compiling again for the new model), and the profile every warm-up runs at. A warm-up
sends closed-loop load whose requests are not measured.
"""

from __future__ import annotations

import math
import time

from .errors import ServerError
from .load import LoadProfile, run_load
from .load.types import Stability
from .spec import Settings
from .torchserve import jit, metrics
from .torchserve.process import TorchServe

# An open-loop trial's warm-up keeps 5% of a second's requests in flight, at most this many:
# enough to warm every connection the engine opens without queueing the server.
WARMUP_MAX_CONCURRENCY = 16


def warm_server(server: TorchServe, target, load: LoadProfile, settings: Settings) -> dict:
    """The server warm-up before the first trial on a newly started TorchServe, in two
    closed-loop runs (as wide as the trial's warm-up) whose requests are not measured:

    1. at least settings.server_warmup_s, then until the JVM's JIT compiler threads are
       quiet (sweeper.torchserve.jit);
    2. on new connections (a second engine run, as every trial is), until the compiler is
       quiet again, at least jit.QUIET_S.

    Each run starts with a scrape of /metrics, as every trial's window does.

    Both together last at most settings.server_warmup_cap_s. Why two: HotSpot compiles
    what the warm-up did; what a trial adds (new connections, a metrics scrape) made it
    compile again at the first trial: after a warm-up that ended quiet, C2 came back in the
    first repeat, which then read well below the later ones; with the second run the burst
    falls inside the warm-up (docs/measurements.md#code-server-warmup-two-runs).

    Returns the row's server_warmup_s (how long both ran) and server_warmup_jit_pct (the
    compiler threads' CPU, % of one core, over the last jit.QUIET_S seconds, or all of the
    second run when shorter: at or above jit.QUIET_PCT, the cap stopped it while the JVM
    was still compiling; NaN where it cannot be read)."""
    minimum, cap = settings.server_warmup_s, settings.server_warmup_cap_s
    if cap <= 0:
        return warm_server_columns()
    pid = jit.jvm_pid(server.root_pid)
    watch = jit.Watch(pid)
    window_s = 1.0
    started = time.monotonic()
    # without a JVM to watch (not Linux, no java under the server) the minimum is all
    for phase_minimum in (minimum, jit.QUIET_S) if pid is not None else (minimum,):
        budget = cap - (time.monotonic() - started)
        if budget < window_s:
            break
        watch = jit.Watch(pid)  # quiet is judged on this run's samples only
        _warm_until_quiet(
            target, load, phase_minimum, budget, watch, window_s,
            on_ready=lambda: _scrape_quietly(server),  # as a trial scrapes before its window
        )
    watch.sample()  # the end of the warm-up
    return warm_server_columns(time.monotonic() - started, watch.recent_pct(full_span=False))


def _scrape_quietly(server: TorchServe) -> None:
    """A /metrics scrape during the warm-up; one that fails is left to the trial's own
    scrape to report."""
    try:
        metrics.scrape(server.metrics_url)
    except ServerError:
        pass


def new_registration(fresh_server: bool, fresh_registration: bool) -> bool:
    """Whether the trial gets the registration warm-up: its model was registered for it,
    and it is not the server's first trial (whose registration the server warm-up warmed)."""
    return fresh_registration and not fresh_server


# The registration warm-up's quiet span: shorter than the server warm-up's (jit.QUIET_S),
# since the compiling after a registration is a burst on a warm JVM, not a whole cold start.
REGISTRATION_QUIET_S = 3.0


def warm_registration(server: TorchServe, target, load: LoadProfile, settings: Settings) -> float:
    """The warm-up of a trial on a model registration made for it: one closed-loop run (as
    wide as the trial's warm-up) of at least settings.registration_warmup_s, then until the
    JVM's JIT compiler threads are quiet over REGISTRATION_QUIET_S (or the minimum, when
    shorter), at most
    settings.registration_warmup_cap_s. Returns how long it ran.

    Why: new workers and the frontend's path for a new model serve slower at first, and the
    JVM compiles again (docs/measurements.md#code-registration-jit), most after the first
    few new registrations after the server warm-up and little after later ones
    (docs/measurements.md#code-registration-jit-bursts)."""
    minimum, cap = settings.registration_warmup_s, settings.registration_warmup_cap_s
    if cap <= 0:
        return 0.0
    span_s = min(REGISTRATION_QUIET_S, minimum) if minimum > 0 else REGISTRATION_QUIET_S
    watch = jit.Watch(jit.jvm_pid(server.root_pid), span_s=span_s)
    started = time.monotonic()
    watch.sample()  # the span starts with the run, so a quiet JVM ends it at the minimum
    _warm_until_quiet(target, load, minimum, cap, watch, 1.0 if minimum >= 1.0 else max(minimum, 0.1))
    return time.monotonic() - started


def _warm_until_quiet(target, load: LoadProfile, minimum: float, budget: float, watch: jit.Watch,
                      window_s: float, on_ready=None) -> None:
    """One closed-loop warm-up run (as wide as the trial's warm-up) in windows of window_s:
    at least `minimum`, then until `watch` says the JIT compiler threads are quiet (always,
    without a JVM to read), at most `budget`."""

    def warm_enough(windows: list) -> bool:
        quiet = watch.quiet()  # sampled at every window, so the span is there at the minimum
        return len(windows) * window_s >= minimum and quiet

    run_load(
        target,
        warmup_profile(load, budget),
        on_ready=on_ready,
        stability=Stability(window_s=window_s, windows=1, max_cv=1.0, max_duration_s=budget),
        stop_when=warm_enough,
    )


def warm_server_columns(seconds: float = 0.0, jit_pct: float = math.nan) -> dict:
    return {"server_warmup_s": round(seconds, 3), "server_warmup_jit_pct": jit_pct}


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
