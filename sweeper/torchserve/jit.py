"""Is the JVM still compiling? The CPU time of TorchServe's JIT compiler threads.

A freshly started TorchServe serves its first requests interpreted: HotSpot compiles the
request path (netty, the frontend's batching and worker threads) while it serves, in its
compiler threads ("C1 CompilerThread0", "C2 CompilerThread0"; Linux keeps the first 15
characters of a thread's name, "C2 CompilerThre"). While they run they take a core's
share from the server, on a machine with few cores a large one.

A fixed warm-up can end while they are still busy: after 15 s of load the compiler
threads still took a quarter to a half of a core, and those seconds served markedly less
than the later ones (docs/measurements.md#code-jit-after-fixed-warmup). So the server warm-up
(sweeper.warmup.warm_server) runs at least settings.server_warmup_s and then until the
compiler threads are quiet: below QUIET_PCT of one core over the last QUIET_S seconds.

Linux only (/proc); elsewhere `Watch.quiet()` is always true and the warm-up is the fixed
settings.server_warmup_s.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import psutil

# HotSpot's compiler thread names, as Linux truncates them (JDK 11-21).
COMPILER_THREAD_PREFIXES = ("C1 CompilerThre", "C2 CompilerThre")
# quiet: the compiler threads used less than this share of one core over the last QUIET_S
# seconds. Settled servers read a few percent, compiling ones 10-50%; the span is 5 s
# because C2 compiles in bursts with lulls of 2-4 s, which a 3 s span took for quiet
# (docs/measurements.md#code-jit-quiet). (A longer span alone does not cure the cold
# first trial: see sweeper.warmup.warm_server.)
QUIET_PCT = 5.0
QUIET_S = 5.0

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def jvm_pid(root_pid: int) -> int | None:
    """The JVM under TorchServe's wrapper (`torchserve --foreground` starts `java`), or
    the root itself when it is the JVM (a server someone else started, whose wrapper has
    exited); None without a root (0)."""
    if not root_pid:
        return None
    try:
        root = psutil.Process(root_pid)
        if root.name() == "java":
            return root.pid
        for proc in root.children(recursive=True):
            try:
                if proc.name() == "java":
                    return proc.pid
            except psutil.Error:
                continue
    except psutil.Error:
        return None
    return None


def thread_cpu(pid: int, proc: Path = PROC) -> dict[int, tuple[str, float]] | None:
    """Each thread of `pid` by thread id: its name (Linux keeps 15 characters) and its CPU
    seconds (user + system); None where /proc/PID/task cannot be read. A thread that ends
    while it is read is left out."""
    try:
        tids = os.listdir(proc / str(pid) / "task")
    except OSError:
        return None
    out = {}
    for tid in tids:
        try:
            stat = (proc / str(pid) / "task" / tid / "stat").read_text()
            name, _, rest = stat.partition("(")[2].rpartition(")")
            # fields after "(comm)": state is field 3; utime and stime are fields 14, 15
            fields = rest.split()
            out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / _TICKS)
        except (OSError, IndexError, ValueError):
            continue  # the thread ended while we read it
    return out


def compiler_cpu(pid: int, proc: Path = PROC) -> dict[int, float] | None:
    """CPU seconds (user + system) of each JIT compiler thread of `pid`, by thread id;
    None where /proc/PID/task cannot be read."""
    threads = thread_cpu(pid, proc)
    if threads is None:
        return None
    return {tid: cpu for tid, (name, cpu) in threads.items() if name.startswith(COMPILER_THREAD_PREFIXES)}


class Watch:
    """Samples the compiler threads' CPU each time `quiet()` is asked, and says whether
    they used less than `pct` of one core over the last `span_s` seconds. A thread born
    between two samples counts from zero; one gone loses its last partial interval (the
    JVM starts and stops compiler threads as the queue of methods to compile grows)."""

    def __init__(self, pid: int | None, pct: float = QUIET_PCT, span_s: float = QUIET_S, proc: Path = PROC):
        self.pid, self.pct, self.span_s, self.proc = pid, pct, span_s, proc
        self._samples: list[tuple[float, float]] = []  # (monotonic time, cumulative CPU s)
        self._last: dict[int, float] = {}
        self._total = 0.0

    def sample(self) -> bool:
        """Take one sample; False when the threads cannot be read (no JVM, not Linux)."""
        if self.pid is None:
            return False
        now = compiler_cpu(self.pid, self.proc)
        if now is None:
            return False
        self._total += sum(max(0.0, cpu - self._last.get(tid, 0.0)) for tid, cpu in now.items())
        self._last = now
        self._samples.append((time.monotonic(), self._total))
        return True

    @property
    def total_s(self) -> float:
        """Compiler CPU seconds counted so far (since the first sample, which holds all the
        JVM's compiling before it)."""
        return self._total

    def recent_pct(self, full_span: bool = True) -> float:
        """The compiler threads' CPU, % of one core, from the newest sample back to the
        one at least span_s before it; NaN until the samples span that long (with
        full_span False: back to the oldest sample then; NaN with fewer than two)."""
        if len(self._samples) < 2:
            return math.nan
        t1, c1 = self._samples[-1]
        older = [(t, c) for t, c in self._samples if t1 - t >= self.span_s]
        if not older and full_span:
            return math.nan
        t0, c0 = older[-1] if older else self._samples[0]
        return 100.0 * (c1 - c0) / (t1 - t0) if t1 > t0 else math.nan

    def quiet(self) -> bool:
        """Sample, then: quiet over the last span_s (True when nothing can be read)."""
        if not self.sample():
            return True
        pct = self.recent_pct()
        return not math.isnan(pct) and pct < self.pct
