"""Data types of the load engine (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

# Status of a request that got no HTTP answer (an HTTP status is 100..599). Records
# written before these existed carry 0 for all three kinds.
STATUS_CONNECTION_ERROR = 0  # connect failed, connection lost, unparseable response
STATUS_TIMEOUT = -1  # no complete answer within timeout_s; the engine aborted it
STATUS_REFUSED = -2  # never sent: the open loop's outstanding cap was reached when it was due

RECORD_DTYPE = np.dtype(
    [
        ("scheduled_s", "f8"),
        ("sent_s", "f8"),
        ("end_s", "f8"),
        ("status", "i2"),
        ("batch_size", "i2"),
        ("handler_ms", "f4"),
    ]
)


@dataclass(frozen=True)
class Target:
    url: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "POST"
    # Several payloads: (body, headers) each, sent round-robin one per request instead of
    # `body` / `headers`. Every one is built into request bytes once (sweeper.load.http).
    bodies: tuple[tuple[bytes, tuple[tuple[str, str], ...]], ...] = ()


@dataclass(frozen=True)
class LoadProfile:
    mode: Literal["closed", "open"]
    concurrency: int | None = None  # closed loop: requests in flight
    rate_rps: float | None = None  # open loop: target rate
    duration_s: float | None = None  # stop sending after this long
    requests: int | None = None  # closed loop: stop after this many (alternative to duration)
    processes: int = 1  # engine processes; records merge into one run
    timeout_s: float = 30.0  # per request
    cpu_affinity: tuple[int, ...] | None = None  # CPUs the engine processes may use


@dataclass(frozen=True)
class Stability:
    """settings.stability: measure in windows until the last `windows` agree within
    `max_cv`, or until `max_duration_s` (see sweeper.load.windows)."""

    window_s: float
    windows: int
    max_cv: float
    max_duration_s: float
    # the windows' latency figure that must agree: "mean" (Perf Analyzer's default) or
    # "p99" (noisy in a short window: at 150 req/s a 2 s window's p99 is its 3rd slowest request)
    latency: str = "mean"


@dataclass(frozen=True)
class Outcome:
    """How a windowed measurement ended: which windows the figures come from."""

    window_s: float
    first: int  # index of the first used window
    last: int  # index of the last used window (inclusive)
    stable: bool | None  # None: no stability rule (a fixed-duration run cut afterwards)

    @property
    def start_s(self) -> float:
        return self.first * self.window_s

    @property
    def end_s(self) -> float:
        return (self.last + 1) * self.window_s


@dataclass(frozen=True)
class LoadRun:
    profile: LoadProfile
    records: np.ndarray  # RECORD_DTYPE
    wall_s: float  # first scheduled send to last completion
    client_cpu_s: float  # user+system CPU of all engine processes during the run
    # Linux schedstat of the engines' event loops: time runnable but waiting for a CPU,
    # and how many times they were scheduled (NaN / 0 where unknown)
    client_sched_wait_s: float = float("nan")
    client_sched_slices: int = 0
    windows: Outcome | None = None  # set when the run measured under a stability rule
    # the X-Device values the responses carried (the sweeper's handlers: "cpu", "cuda:0")
    devices: tuple[str, ...] = ()
