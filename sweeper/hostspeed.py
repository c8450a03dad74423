"""How fast the machine's CPUs ran during a window: a fixed piece of work, timed in CPU time.

On a virtual machine a virtual CPU does not run at one speed. Another guest on the
hyperthread sibling of the same physical core, the host's frequency and its shared caches
all change how much work one CPU second does, and none of that shows as steal in
/proc/stat: the guest ran, just slower. With nothing else running, the work done per CPU
second can move by several percent between 6 s blocks, and the CPUs of one guest move
nearly independently (benchmarks/bench_host_speed.py measures it;
docs/measurements.md#code-host-speed-floor). Throughput on a saturated machine moves with
it, second by second, at constant load (docs/measurements.md#code-host-speed-throughput).
Between the repeats of a sweep the probe explains less (its few samples a window are few
against the CPUs' second-to-second movement): a record of the machine, not a correction.

`SpeedProbe` runs `unit` every interval_s on a background thread and divides the work by
the thread's own CPU time (time.thread_time), so time the thread waited - for a CPU, for
the GIL, for the hypervisor - does not count: what is left is how fast the CPU it ran on
executed a fixed instruction stream. At the default interval it costs under 1% of one
core (docs/measurements.md#code-host-speed-unit). It samples whichever CPU the scheduler gives it, so over a window it averages the
machine's CPUs.

The figure is relative, in units of `unit` per CPU millisecond: compare it between
trials of one run on one machine (sweeper.analysis reads the spread over a run), not
across machines or Python versions.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass, field

# A unit timed right after the thread woke from its sleep reads the CPU's wake-up (cold
# caches and branch predictors, an idle core's lower clock), not its speed, and that
# depends on how busy the machine is, so the figure followed the trial's own load; with one
# unit run first and not timed it reads the same idle and busy
# (docs/measurements.md#code-host-speed-wakeup). So each sample runs one unit untimed, then
# times the next.
UNIT_LOOPS = 10000  # about 1 ms of CPU (docs/measurements.md#code-host-speed-unit)


def unit(loops: int = UNIT_LOOPS) -> int:
    """A fixed instruction stream: integer arithmetic in a loop, no allocation, no I/O."""
    s = 0
    for i in range(loops):
        s += i * i % 7
    return s


def units_per_cpu_ms(loops: int = UNIT_LOOPS) -> float:
    """One measurement: run the unit once, return units per millisecond of this thread's CPU
    time (nan when the clock did not move)."""
    c0 = time.thread_time_ns()
    unit(loops)
    cpu_ns = time.thread_time_ns() - c0
    return 1e6 / cpu_ns if cpu_ns > 0 else math.nan


@dataclass
class SpeedProbe:
    """Measures CPU speed every interval_s between start() and stop()."""

    interval_s: float = 0.25
    samples: list[tuple[float, float]] = field(default_factory=list)  # (time.monotonic(), units per CPU ms)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hostspeed", daemon=True)

    def start(self) -> "SpeedProbe":
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.samples

    def _loop(self) -> None:
        while not self._stop.is_set():
            unit()  # the CPU's wake-up, untimed (see UNIT_LOOPS)
            speed = units_per_cpu_ms()
            if math.isfinite(speed):
                self.samples.append((time.monotonic(), speed))
            self._stop.wait(self.interval_s)


def columns(samples: list[tuple[float, float]]) -> dict[str, float]:
    """host_speed: the median speed over the window's samples (the median, because one
    sample that a timer interrupt or a cache miss storm hit reads far off); host_speed_n:
    how many samples. Empty when there are none."""
    speeds = [s for _, s in samples]
    if not speeds:
        return {}
    return {"host_speed": statistics.median(speeds), "host_speed_n": len(speeds)}
