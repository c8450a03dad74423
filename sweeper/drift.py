"""A drift of the machine that tests and benchmarks can switch on: a CPU burner that loads
some cores in a square wave (on for `on_s`, off for `off_s`), as a neighbour on a cloud
host does when it takes the physical core under a virtual CPU. Comparisons made under it
can be judged against a quiet reference (benchmarks/bench_duel.py, tests/test_duel.py).

    with Drift(on_s=20, off_s=20, cpus=(0,)):
        ...  # measure

The burner is one child process per core, pinned to it (where the platform can pin),
spinning in pure Python while on and sleeping while off; `duty` < 1 spins that share of
every 10 ms. It is always stopped: on leaving the block (terminated, then killed), and by
itself when the process that started it is gone (it checks its parent every 50 ms), so
neither an exception, Ctrl-C nor SIGKILL of the caller leaves it burning.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

# Runs in the child: argv = on_s off_s duty start_on parent_pid cpu
_BURNER = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C and stops us
on_s, off_s, duty = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
start_on, parent, cpu = sys.argv[4] == "1", int(sys.argv[5]), int(sys.argv[6])
if cpu >= 0 and hasattr(os, "sched_setaffinity"):
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass
period = on_s + off_s
t0 = time.monotonic() - (0.0 if start_on else on_s)
slice_s = 0.01
print("ready", flush=True)
while os.getppid() == parent:
    now = time.monotonic()
    phase = (now - t0) % period
    if phase < on_s:
        end = min(now + 0.05, now - phase + on_s)  # check the parent every 50 ms
        while time.monotonic() < end:
            spin_end = time.monotonic() + slice_s * duty
            while time.monotonic() < spin_end:
                pass
            if duty < 1.0:
                time.sleep(slice_s * (1.0 - duty))
    else:
        time.sleep(min(0.05, period - phase))
"""


class Drift:
    """The burner as a context manager (see the module docstring). `on_s` / `off_s`: the
    square wave's halves; `cpus`: the cores to load, one burner each (None: core 0 only
    if the process may use it, else its first allowed core); `duty`: the share of each
    10 ms a burner spins while on; `start_on`: begin with the on half."""

    def __init__(self, on_s: float = 20.0, off_s: float = 20.0, cpus: tuple[int, ...] | None = None,
                 duty: float = 1.0, start_on: bool = True):
        if on_s <= 0 or off_s < 0:
            raise ValueError(f"on_s must be > 0 and off_s >= 0, got {on_s} and {off_s}")
        if not 0 < duty <= 1:
            raise ValueError(f"duty must be in (0, 1], got {duty}")
        self.on_s, self.off_s, self.duty, self.start_on = float(on_s), float(off_s), float(duty), start_on
        self.cpus = tuple(cpus) if cpus is not None else (_first_cpu(),)
        self.procs: list[subprocess.Popen] = []
        self.started_at: float | None = None

    def __enter__(self) -> "Drift":
        try:
            for cpu in self.cpus:
                proc = subprocess.Popen(
                    [sys.executable, "-c", _BURNER, str(self.on_s), str(self.off_s), str(self.duty),
                     "1" if self.start_on else "0", str(os.getpid()), str(cpu)],
                    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                )
                self.procs.append(proc)
            for proc in self.procs:
                line = proc.stdout.readline() if proc.stdout else b""
                if line.strip() != b"ready":
                    raise RuntimeError(f"the drift's burner (pid {proc.pid}) did not start")
        except BaseException:
            self.stop()
            raise
        self.started_at = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def on(self, at: float | None = None) -> bool:
        """Whether the burners are in their on half at monotonic time `at` (default now)."""
        if self.started_at is None:
            return False
        since = (time.monotonic() if at is None else at) - self.started_at + (0.0 if self.start_on else self.on_s)
        return since % (self.on_s + self.off_s) < self.on_s

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        """Terminate every burner, then kill what is left; reap them all."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs = []
        self.started_at = None


def _first_cpu() -> int:
    if hasattr(os, "sched_getaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        return 0 if 0 in allowed else allowed[0]
    return -1
