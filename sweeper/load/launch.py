"""run_load: split a profile over engine processes, start them on a common t0, merge records.

The engines run in child processes so that the sweeper's own work - metric scrapes,
process sampling - never shares a GIL with the loop that times requests. They are forked
from multiprocessing's fork server (a single-threaded process started once, which has
imported the engine: safe when the caller has threads, as 'spawn' is), so a run's engines
are ready in a small fraction of the time a fresh interpreter needs to import numpy and
the engine (docs/measurements.md#code-engine-fork-server; each trial starts one run). Where
the platform has no fork server, 'spawn'. Sequence:

    parent: validate, split, spawn          child: connect (warm), -> "ready"
    parent: all ready -> "go" with t0       child: sleep until t0, run, -> "done"
    parent: merge records sorted by scheduled_s, always join or terminate the children

t0 travels as a wall-clock time (time.time()) because that is the clock processes share
by contract; each child converts it to its perf_counter once.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from multiprocessing.connection import wait
from typing import Callable

import numpy as np

from sweeper.errors import LoadError

from dataclasses import replace

from . import windows as win
from .engine import EnginePart, child_main
from .http import prepare
from .types import RECORD_DTYPE, LoadProfile, LoadRun, Outcome, Stability, Target

# Open loop: cap on outstanding requests per engine process when the profile gives no
# concurrency. High enough that only a server far behind its arrival rate reaches it
# (each outstanding request holds a socket), low enough to stay under common fd limits.
OPEN_LOOP_MAX_OUTSTANDING = 4096
READY_TIMEOUT_S = 60.0  # start (the fork server's first start imports) + connecting the warm connections
START_DELAY_S = 0.05  # between "go" and t0, so every child is asleep before t0
FINISH_GRACE_S = 30.0
WAIT_SLICE_S = 0.2  # beyond duration + timeout, before a silent child counts as hung


def _context():
    """The fork server's context, its preload the engine module (set before the server
    starts, on first use); 'spawn' where there is no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["sweeper.load.engine"])
    return ctx


def split(profile: LoadProfile) -> list[EnginePart]:
    """Each engine process's share of the profile. Raises LoadError for an unusable profile."""

    def bad(rule: str) -> LoadError:
        return LoadError(f"load profile: {rule}")

    p = profile.processes
    if p < 1:
        raise bad(f"processes must be >= 1, got {p}")
    if profile.timeout_s <= 0:
        raise bad(f"timeout_s must be > 0, got {profile.timeout_s}")
    if profile.duration_s is not None and profile.duration_s <= 0:
        raise bad(f"duration_s must be > 0, got {profile.duration_s}")
    if profile.requests is not None and profile.requests < 1:
        raise bad(f"requests must be >= 1, got {profile.requests}")
    if profile.duration_s is None and profile.requests is None:
        raise bad("give duration_s or requests (or both: whichever comes first)")

    def share(total: int, k: int) -> int:
        return total // p + (1 if k < total % p else 0)

    common = dict(stride=p, timeout_s=profile.timeout_s, cpu_affinity=profile.cpu_affinity)
    if profile.mode == "closed":
        c = profile.concurrency
        if c is None or c < 1:
            raise bad(f"closed loop: concurrency must be >= 1, got {c}")
        if c < p:
            raise bad(f"closed loop: concurrency ({c}) must be >= processes ({p})")
        return [
            EnginePart(
                mode="closed",
                index=k,
                concurrency=share(c, k),
                requests=None if profile.requests is None else share(profile.requests, k),
                duration_s=profile.duration_s,
                **common,
            )
            for k in range(p)
        ]
    if profile.mode == "open":
        rate = profile.rate_rps
        if rate is None or not rate > 0 or math.isinf(rate):
            raise bad(f"open loop: rate_rps must be > 0, got {rate}")
        total = profile.requests if profile.requests is not None else math.inf
        if profile.duration_s is not None:
            # 1e-9: 1000 req/s for 10 s is 10,000 requests, not 9,999 by rounding error.
            total = min(total, int(rate * profile.duration_s + 1e-9))
        if total < p:
            raise bad(f"open loop: {total} requests cannot be split over {p} processes")
        cap = profile.concurrency
        if cap is not None and cap < p:
            raise bad(f"open loop: concurrency (outstanding cap, {cap}) must be >= processes ({p})")
        return [
            EnginePart(
                mode="open",
                index=k,
                concurrency=OPEN_LOOP_MAX_OUTSTANDING if cap is None else share(cap, k),
                requests=share(total, k),
                rate_rps=rate,
                **common,
            )
            for k in range(p)
        ]
    raise bad(f"mode must be 'closed' or 'open', got {profile.mode!r}")


def _collect(pipes, procs, pending: set[int], expect: str, deadline: float | None) -> dict:
    """Wait for message `expect` from every child in `pending`; raise LoadError on an
    error report, a child that died, or the deadline."""
    got = {}
    while pending:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise LoadError(
                f"load engine process(es) {sorted(pending)} did not report {expect!r} in time"
            )
        handles = [pipes[k] for k in pending] + [procs[k].sentinel for k in pending]
        # Wake up now and then even with nothing to read: a signal handler (Ctrl-C, the
        # sweeper's SIGTERM handler) runs only when this thread runs Python code.
        if not wait(handles, WAIT_SLICE_S if left is None else min(left, WAIT_SLICE_S)):
            continue
        for k in list(pending):
            if pipes[k].poll():
                try:
                    msg = pipes[k].recv()
                except EOFError:
                    msg = None
                if msg is None:
                    procs[k].join(1.0)  # a closed pipe means it is exiting: get the code
                    raise LoadError(
                        f"load engine process {k} closed its pipe (exit code {procs[k].exitcode})"
                    )
                if msg[0] == "error":
                    raise LoadError(f"load engine process {k}: {msg[1]}")
                if msg[0] != expect:
                    raise LoadError(f"load engine process {k}: expected {expect!r}, got {msg[0]!r}")
                got[k] = msg
                pending.discard(k)
            elif not procs[k].is_alive():
                raise LoadError(
                    f"load engine process {k} exited with code {procs[k].exitcode} "
                    f"before reporting {expect!r}"
                )
    return got


def merge(parts: list[np.ndarray]) -> np.ndarray:
    """Records of several engine processes as one array sorted by scheduled_s."""
    records = np.concatenate(parts) if parts else np.zeros(0, RECORD_DTYPE)
    return records[np.argsort(records["scheduled_s"], kind="stable")]


def wall_time(records: np.ndarray) -> float:
    """First scheduled send to last completion."""
    if len(records) == 0:
        return 0.0
    return float(records["end_s"].max() - records["scheduled_s"].min())


def run_load(
    target: Target,
    profile: LoadProfile,
    warmup: LoadProfile | None = None,
    on_ready: Callable[[], None] | None = None,
    stability: Stability | None = None,
    stop_when: Callable[[list[win.Window]], bool] | None = None,
    engine: Callable | None = None,
) -> LoadRun:
    """Run the load described by `profile` against `target`; block until it is done.

    `warmup` (a closed loop; its records are dropped) runs first in the same engine
    processes. `on_ready` is called after the warm-up, once every engine is connected and
    waiting, just before the measured window starts: the place for "before" snapshots.

    `stability` (sweeper.load.windows): the engines report each complete window and this
    process stops them once the last `windows` windows agree, or they stop by themselves
    at max_duration_s; the profile's duration_s is then not used. The returned run holds
    every record and, in `windows`, which windows the figures come from. `stop_when`
    (with `stability`) replaces the agreement test: it gets the complete windows so far,
    each time one completes, and True stops the engines (the server warm-up stops so
    when the JVM has stopped compiling: sweeper.warmup.warm_server).

    `engine` (picklable: it travels to the engine processes) builds each process's engine
    from (loop, target, part) instead of the plain closed or open loop; with it `target`
    may be a tuple of targets (sweeper.load.alternating.run_alternating) and there is no
    warm-up.

    Failed requests are data (4xx, 5xx, or a negative or zero status: types.STATUS_*). LoadError means the
    engine itself failed: bad profile or URL, server unreachable at the start, a child
    that crashed or hung.
    """
    if stability is not None:
        profile = replace(profile, duration_s=stability.max_duration_s, requests=None)
    parts = split(profile)
    if stability is not None:
        parts = [replace(p, window_s=stability.window_s) for p in parts]
    warm_parts: list[EnginePart | None] = [None] * len(parts)
    ready_timeout_s = READY_TIMEOUT_S
    if warmup is not None:
        if engine is not None:
            raise LoadError("load profile: a run with its own engine takes no warm-up")
        if warmup.mode != "closed" or warmup.processes != profile.processes:
            raise LoadError("load profile: a warm-up must be a closed loop with the same processes as the load")
        warm_parts = list(split(warmup))
        ready_timeout_s += (warmup.duration_s or 0.0) + warmup.timeout_s
    for each in target if isinstance(target, tuple) else (target,):
        prepare(each)  # a bad URL fails here, in the caller, with the same message
    ctx = _context()
    pipes, procs = [], []
    finished = False
    try:
        for part, warm in zip(parts, warm_parts):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=child_main,
                args=(child_end, target, part, warm, os.getpid(), engine),
                name=f"sweeper-load-{part.index}",
                daemon=True,  # dies with the parent even if the parent is killed hard
            )
            proc.start()
            child_end.close()
            pipes.append(parent_end)
            procs.append(proc)
        everyone = set(range(len(parts)))
        _collect(pipes, procs, set(everyone), "ready", time.monotonic() + ready_timeout_s)
        if on_ready is not None:
            on_ready()
        t0_wall = time.time() + START_DELAY_S
        for pipe in pipes:
            pipe.send(("go", t0_wall))
        deadline = None  # a count-bounded closed loop ends when it ends: requests time out
        if profile.duration_s is not None:
            deadline = (
                time.monotonic() + START_DELAY_S + profile.duration_s
                + profile.timeout_s + FINISH_GRACE_S
            )
        if stability is None:
            done = _collect(pipes, procs, set(everyone), "done", deadline)
        else:
            done, stopped_at = _supervise(pipes, procs, stability, deadline, stop_when)
        finished = True
    finally:
        # Also on KeyboardInterrupt and LoadError: no engine outlives run_load.
        for pipe in pipes:
            pipe.close()
        for proc in procs:
            if finished:
                proc.join(timeout=5.0)  # it has reported; it is only closing its loop
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
    records = merge([done[k][1] for k in sorted(done)])
    return LoadRun(
        profile=profile,
        records=records,
        wall_s=wall_time(records),
        client_cpu_s=float(sum(done[k][2] for k in done)),
        client_sched_wait_s=float(sum(done[k][3][0] for k in done)),
        client_sched_slices=int(sum(done[k][3][1] for k in done)),
        devices=tuple(sorted({d for k in done for d in done[k][4]})),
        windows=None if stability is None else outcome(records, stability, stopped_at),
    )


def outcome(records: np.ndarray, rule: Stability, stopped_at: int | None) -> Outcome:
    """Which windows the figures come from: the last `windows` before the stop, or, when
    the engines ran to max_duration_s, the last `windows` complete ones, stable or not."""
    if stopped_at is not None:
        return Outcome(rule.window_s, stopped_at - rule.windows + 1, stopped_at, True)
    every = win.cut(records, rule.window_s, rule.max_duration_s)
    last = len(every) - 1
    return Outcome(rule.window_s, max(0, last - rule.windows + 1), last, win.is_stable(every, rule))


def _supervise(pipes, procs, rule: Stability, deadline: float | None, stop_when=None) -> tuple[dict, int | None]:
    """Collect the engines' windows while they run; when the last rule.windows complete
    windows (all processes' requests merged) agree, or `stop_when` says so, send "stop".
    Returns the "done" messages and the index of the last window before the stop (None:
    never stable)."""
    done_yet = stop_when or (lambda complete: win.is_stable(complete, rule))
    n = len(pipes)
    parts: dict[int, list] = {}  # window index -> [(requests, latencies), ...] per process
    complete: list[win.Window] = []
    stopped_at: int | None = None
    got: dict = {}
    pending = set(range(n))
    while pending:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise LoadError(f"load engine process(es) {sorted(pending)} did not report 'done' in time")
        handles = [pipes[k] for k in pending] + [procs[k].sentinel for k in pending]
        if not wait(handles, WAIT_SLICE_S if left is None else min(left, WAIT_SLICE_S)):
            continue
        for k in list(pending):
            if pipes[k].poll():
                try:
                    msg = pipes[k].recv()
                except EOFError:
                    procs[k].join(1.0)
                    raise LoadError(f"load engine process {k} closed its pipe (exit code {procs[k].exitcode})") from None
                if msg[0] == "error":
                    raise LoadError(f"load engine process {k}: {msg[1]}")
                if msg[0] == "windows":
                    for index, count, lat in msg[1]:
                        parts.setdefault(index, []).append((count, lat))
                    continue
                if msg[0] != "done":
                    raise LoadError(f"load engine process {k}: expected 'done', got {msg[0]!r}")
                got[k] = msg
                pending.discard(k)
            elif not procs[k].is_alive():
                raise LoadError(f"load engine process {k} exited with code {procs[k].exitcode} before reporting 'done'")
        if stopped_at is not None:
            continue
        while len(parts.get(len(complete), ())) == n:
            chunk = parts.pop(len(complete))
            latencies = np.concatenate([lat for _, lat in chunk]).astype(float)
            complete.append(win.window_stats(len(complete), sum(c for c, _ in chunk), latencies, rule.window_s))
            if done_yet(complete):
                stopped_at = len(complete) - 1
                for k in pending:
                    try:
                        pipes[k].send(("stop", None))
                    except OSError:
                        pass  # it is finishing anyway; its "done" or its exit code tells
                break
    return got, stopped_at
