"""Drifts of the machine that tests and benchmarks can switch on, each a square wave (on for
`on_s`, off for `off_s`) run by a child process, so that comparisons made under it can be
judged against a quiet reference (benchmarks/bench_duel.py, tests/test_duel.py):

- `Drift`, a CPU burner: one spinning process per core, pinned to it, as a neighbour in the
  same operating system takes a share of a core. The kernel shares a core per runnable
  thread, so a server with more busy threads keeps more of it: the burner slows a
  configuration with 4 workers less than one with 2, and changes their ratio
  (docs/measurements.md#m70-bench_duel-2-workers-against-4-a-drift-that-changes-the-ratio).
- `Throttle`, a CPU quota: the server's process groups are frozen (SIGSTOP) for a share of
  every 100 ms and thawed (SIGCONT) for the rest, as a container's CFS quota throttles its
  cgroup once its quota for the period is spent, or a hypervisor deschedules a virtual CPU
  (steal). Every thread of the server loses the same share of the time whatever their
  number. It still moves a ratio of configurations that differ in worker count (a server
  frozen and thawed queues requests, then runs all its threads at once:
  docs/measurements.md#m72-bench_duel-under-a-cpu-quota-2-workers-against-4), less than
  the burner does.

    with Drift(on_s=20, off_s=20, cpus=(0,)):
        ...  # measure
    with Throttle([server.process_group], on_s=20, off_s=20, share=0.6):
        ...  # measure

Both always stop: on leaving the block (terminated, then killed; a throttle's groups are
thawed by the child on SIGTERM and again by the caller), and by themselves when the process
that started them is gone (the child checks its parent every 50 ms, a throttle at every
period), so neither an exception, Ctrl-C nor SIGKILL of the caller leaves a core burning or
a server frozen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

# Runs in the child: argv = on_s off_s start_on parent_pid duty cpu
_BURNER = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C and stops us
on_s, off_s, start_on, parent = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
duty, cpu = float(sys.argv[5]), int(sys.argv[6])
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

# Runs in the child: argv = on_s off_s start_on parent_pid share period_s group...
_THROTTLE = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C and stops us
on_s, off_s, start_on, parent = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
share, period_s, groups = float(sys.argv[5]), float(sys.argv[6]), [int(g) for g in sys.argv[7:]]

def send(sig):
    for g in groups:
        try:
            os.killpg(g, sig)
        except (ProcessLookupError, PermissionError):
            pass  # a server that is gone: its owner notices

def leave(*_):
    send(signal.SIGCONT)
    os._exit(0)

signal.signal(signal.SIGTERM, leave)
wave = on_s + off_s
t0 = time.monotonic() - (0.0 if start_on else on_s)
print("ready", flush=True)
while os.getppid() == parent:
    phase = (time.monotonic() - t0) % wave
    if phase < on_s:
        send(signal.SIGSTOP)
        time.sleep(period_s * (1.0 - share))
        send(signal.SIGCONT)
        time.sleep(period_s * share)
    else:
        time.sleep(min(0.05, wave - phase))
leave()
"""


class _Wave:
    """A square wave run by child processes (see the module docstring): started on entering
    the block, stopped on leaving it."""

    _script = ""

    def __init__(self, on_s: float, off_s: float, start_on: bool):
        if on_s <= 0 or off_s < 0:
            raise ValueError(f"on_s must be > 0 and off_s >= 0, got {on_s} and {off_s}")
        self.on_s, self.off_s, self.start_on = float(on_s), float(off_s), start_on
        self.procs: list[subprocess.Popen] = []
        self.started_at: float | None = None

    def _children_args(self) -> list[list[str]]:
        """The arguments after the common four, one list per child."""
        raise NotImplementedError

    def __enter__(self):
        try:
            common = [str(self.on_s), str(self.off_s), "1" if self.start_on else "0", str(os.getpid())]
            for extra in self._children_args():
                self.procs.append(subprocess.Popen([sys.executable, "-c", self._script, *common, *extra],
                                                   stdout=subprocess.PIPE, stdin=subprocess.DEVNULL))
            for proc in self.procs:
                line = proc.stdout.readline() if proc.stdout else b""
                if line.strip() != b"ready":
                    raise RuntimeError(f"the drift's child (pid {proc.pid}) did not start")
        except BaseException:
            self.stop()
            raise
        self.started_at = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def on(self, at: float | None = None) -> bool:
        """Whether the wave is in its on half at monotonic time `at` (default now)."""
        if self.started_at is None:
            return False
        since = (time.monotonic() if at is None else at) - self.started_at + (0.0 if self.start_on else self.on_s)
        return since % (self.on_s + self.off_s) < self.on_s

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        """Terminate every child, then kill what is left; reap them all."""
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


class Drift(_Wave):
    """The CPU burner (see the module docstring). `cpus`: the cores to load, one burner
    each (None: core 0 if the process may use it, else its first allowed core); `duty`:
    the share of each 10 ms a burner spins while on; `start_on`: begin with the on half."""

    _script = _BURNER

    def __init__(self, on_s: float = 20.0, off_s: float = 20.0, cpus: tuple[int, ...] | None = None,
                 duty: float = 1.0, start_on: bool = True):
        super().__init__(on_s, off_s, start_on)
        if not 0 < duty <= 1:
            raise ValueError(f"duty must be in (0, 1], got {duty}")
        self.duty = float(duty)
        self.cpus = tuple(cpus) if cpus is not None else (_first_cpu(),)

    def _children_args(self) -> list[list[str]]:
        return [[str(self.duty), str(cpu)] for cpu in self.cpus]

    def describe(self) -> str:
        cores = ", ".join(str(c) for c in self.cpus)
        return f"a CPU burner on core {cores}, {self.on_s:g} s on / {self.off_s:g} s off"


class Throttle(_Wave):
    """The CPU quota (see the module docstring). `groups`: the process groups to freeze
    (a server started by the sweeper leads its own: `TorchServe.process_group`); while
    on, they run `share` of every `period_s` and are frozen for the rest (100 ms: the
    kernel's default CFS bandwidth period)."""

    _script = _THROTTLE

    def __init__(self, groups, on_s: float = 20.0, off_s: float = 20.0, share: float = 0.6,
                 period_s: float = 0.1, start_on: bool = True):
        super().__init__(on_s, off_s, start_on)
        if not 0 < share < 1:
            raise ValueError(f"share must be in (0, 1), got {share}")
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.groups = tuple(int(g) for g in groups)
        if not self.groups:
            raise ValueError("a throttle needs at least one process group")
        self.share, self.period_s = float(share), float(period_s)

    def _children_args(self) -> list[list[str]]:
        return [[str(self.share), str(self.period_s), *(str(g) for g in self.groups)]]

    def stop(self) -> None:
        """Stop the child, then thaw the groups here too: a child killed between its SIGSTOP
        and its SIGCONT would leave them frozen."""
        try:
            super().stop()
        finally:
            for g in self.groups:
                try:
                    os.killpg(g, signal.SIGCONT)
                except (ProcessLookupError, PermissionError):
                    pass

    def describe(self) -> str:
        return (f"a CPU quota on the server: {self.share:.0%} of every {self.period_s * 1000:g} ms, "
                f"{self.on_s:g} s on / {self.off_s:g} s off")


def _first_cpu() -> int:
    if hasattr(os, "sched_getaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        return 0 if 0 in allowed else allowed[0]
    return -1
