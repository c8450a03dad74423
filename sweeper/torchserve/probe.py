"""psutil sampling of the server's process tree: CPU, RSS, threads, context switches.

A `Probe` runs in a background thread during the measured window and samples the tree
at its start, every interval_s, and once more at its stop. CPU time and context switches
are cumulative counters, so the window's totals are differences per process (CPU, the
main thread's switches) and per thread (the switches of every thread):

- a process or thread present in the first sample counts from that sample;
- one first seen later was born during the window and counts from zero (all it did
  happened inside the window), e.g. a worker restarted mid-window;
- one gone before the last sample counts up to the last sample that saw it. Its CPU
  after that sample is not lost when its parent reaped it: the parent's cumulative
  CPU of waited-for children (cutime + cstime) grew by the child's whole lifetime, so
  the part not yet counted (that growth minus what the samples of the exited children
  already showed) is added as CPU of role "other" (this also catches a process born and
  gone between two samples, such as a short-lived helper the JVM starts: TorchServe's
  system-metrics collector, `python ts/metrics/metric_collector.py`, runs every
  metric_time_interval (60 s by default; disable_system_metrics is false) and takes
  well under 1% of a core over a 5 s window: docs/measurements.md#code-metric-collector-cpu).

Context switches: psutil's num_ctx_switches() reads /proc/PID/status, which on Linux
holds the counts of the process's *main thread* only (proc_ctx_* columns, kept for
comparison with older runs). proc_ctx_all_* sum the per-thread deltas of every thread
(/proc/PID/task/TID/status) of every process. What Linux does not show to another
process, and so is missing from proc_ctx_all_*:
- the switches of a thread born and gone between two samples (never seen);
- the switches of an exiting thread or process after the last sample that saw it.
  (Linux folds a dead thread's counts into its process's totals, which only that
  process itself can read, through getrusage; no file in /proc shows them to others.)
The number of processes and threads that went away during the window is reported
(proc_exited_processes, proc_exited_threads) so that a reader knows when this matters.
On a system without /proc/PID/task, proc_ctx_all_* fall back to the main-thread counts.

RSS and thread counts are peaks of the tree's sum.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psutil

ThreadCtx = tuple[tuple[int, int, int], ...]  # (tid, voluntary, involuntary) per thread


@dataclass(frozen=True)
class Sample:
    t_s: float
    pid: int
    role: str  # "frontend" | "worker" | "other"
    cpu_s: float  # user + system, cumulative
    rss_bytes: int
    threads: int
    ctx_voluntary: int  # main thread only (see the module docstring)
    ctx_involuntary: int
    ppid: int = 0
    children_cpu_s: float = 0.0  # user + system of waited-for children, cumulative
    thread_ctx: ThreadCtx = ()  # every thread; () where /proc/PID/task cannot be read


def _role(proc: psutil.Process) -> str:
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "other"
    if "org.pytorch.serve.ModelServer" in cmd:
        return "frontend"
    if "model_service_worker" in cmd:
        return "worker"
    return "other"


def thread_ctx(pid: int) -> ThreadCtx:
    """(tid, voluntary, involuntary) of every thread of `pid` from /proc/PID/task/*/status;
    () when that cannot be read (not Linux, or the process is gone)."""
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return ()
    out = []
    for tid in tids:
        vol = invol = None
        try:
            with open(f"{base}/{tid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"voluntary_ctxt_switches:"):
                        vol = int(line.split()[1])
                    elif line.startswith(b"nonvoluntary_ctxt_switches:"):
                        invol = int(line.split()[1])
        except (OSError, ValueError):
            continue  # the thread ended while we looked
        if vol is not None and invol is not None:
            out.append((int(tid), vol, invol))
    return tuple(out)


def sample_tree(root_pid: int, roles: dict[int, str], exclude: frozenset[int] = frozenset()) -> list[Sample]:
    """One sample of root_pid and all its descendants, except the processes in `exclude`
    and their children. No root (0: the server's processes are not on this machine): no
    sample."""
    if not root_pid:
        return []  # psutil.Process(None) would be this very process
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    if exclude:
        procs = [p for p in procs if p.pid not in exclude and _ppid(p) not in exclude]
    now = time.monotonic()
    out = []
    for p in procs:
        try:
            with p.oneshot():
                cpu = p.cpu_times()
                ctx = p.num_ctx_switches()
                if p.pid not in roles:
                    roles[p.pid] = _role(p)
                out.append(
                    Sample(
                        now,
                        p.pid,
                        roles[p.pid],
                        cpu.user + cpu.system,
                        p.memory_info().rss,
                        p.num_threads(),
                        ctx.voluntary,
                        ctx.involuntary,
                        ppid=p.ppid(),
                        children_cpu_s=getattr(cpu, "children_user", 0.0) + getattr(cpu, "children_system", 0.0),
                        thread_ctx=thread_ctx(p.pid),
                    )
                )
        except psutil.Error:
            continue
    return out


def _ppid(proc: psutil.Process) -> int:
    try:
        return proc.ppid()
    except psutil.Error:
        return 0


@dataclass
class Probe:
    """Samples the tree under root_pid every interval_s between start() and stop().
    `exclude`: processes left out with their children (the idle workers of other models
    the server keeps registered, sweeper.executors.local)."""

    root_pid: int
    interval_s: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    exclude: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="probe", daemon=True)
        self._roles: dict[int, str] = {}

    def start(self) -> "Probe":
        self.samples.extend(sample_tree(self.root_pid, self._roles, self.exclude))
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.extend(sample_tree(self.root_pid, self._roles, self.exclude))

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.samples.extend(sample_tree(self.root_pid, self._roles, self.exclude))
        return self.samples


_ZERO = Sample(0.0, 0, "other", 0.0, 0, 0, 0, 0)


def summarize(samples: list[Sample], ok_requests: int) -> dict[str, float]:
    """The proc_* columns of results.csv (see the module docstring for what counts)."""
    nan = float("nan")
    if not samples:
        return {k: nan for k in PROC_COLUMNS}
    first: dict[int, Sample] = {}
    last: dict[int, Sample] = {}
    for s in samples:
        first.setdefault(s.pid, s)
        last[s.pid] = s
    t0 = min(s.t_s for s in samples)
    t1 = max(s.t_s for s in samples)
    window = max(t1 - t0, 1e-9)

    def base(pid: int) -> Sample:
        # present in the first sample: count from it; born later: count from zero
        return first[pid] if first[pid].t_s == t0 else _ZERO

    cpu = {"frontend": 0.0, "worker": 0.0, "other": 0.0}
    vol = invol = 0
    for pid, end in last.items():
        start = base(pid)
        cpu[end.role] += end.cpu_s - start.cpu_s
        vol += end.ctx_voluntary - start.ctx_voluntary
        invol += end.ctx_involuntary - start.ctx_involuntary

    # CPU of exited children after their last sample, from their parent's reaped-children time
    exited = [pid for pid, end in last.items() if end.t_s < t1]
    for parent, end in last.items():
        if end.t_s < t1:
            continue
        grown = end.children_cpu_s - base(parent).children_cpu_s
        seen = sum(last[pid].cpu_s for pid in exited if last[pid].ppid == parent)
        cpu["other"] += max(0.0, grown - seen)

    all_vol, all_invol, threads_exited = _all_threads(samples, first, t0, t1)

    by_time: dict[float, list[Sample]] = {}
    for s in samples:
        by_time.setdefault(s.t_s, []).append(s)
    rss = max(sum(s.rss_bytes for s in group) for group in by_time.values())
    threads = max(sum(s.threads for s in group) for group in by_time.values())
    return {
        "proc_cpu_pct": 100.0 * sum(cpu.values()) / window,
        "proc_cpu_pct_frontend": 100.0 * cpu["frontend"] / window,
        "proc_cpu_pct_workers": 100.0 * cpu["worker"] / window,
        "proc_rss_mb": rss / 2**20,
        "proc_threads": float(threads),
        "proc_ctx_voluntary": float(vol),
        "proc_ctx_involuntary": float(invol),
        "proc_ctx_per_req": (vol + invol) / ok_requests if ok_requests > 0 else nan,
        "proc_ctx_all_voluntary": float(all_vol),
        "proc_ctx_all_involuntary": float(all_invol),
        "proc_ctx_all_per_req": (all_vol + all_invol) / ok_requests if ok_requests > 0 else nan,
        "proc_exited_processes": float(len(exited)),
        "proc_exited_threads": float(threads_exited),
    }


def _all_threads(samples: list[Sample], first: dict[int, Sample], t0: float, t1: float) -> tuple[int, int, int]:
    """Switches of every thread over the window (per-thread deltas), and how many threads
    went away before the last sample. A process whose threads could not be listed
    contributes its main-thread counts."""
    seen_first: dict[tuple[int, int], tuple[int, int]] = {}
    seen_last: dict[tuple[int, int], tuple[float, int, int]] = {}
    fallback: dict[int, tuple[Sample, Sample]] = {}
    for s in samples:
        if not s.thread_ctx:
            start = fallback.get(s.pid, (s, s))[0]
            fallback[s.pid] = (start, s)
            continue
        for tid, v, i in s.thread_ctx:
            key = (s.pid, tid)
            if key not in seen_first:
                # a thread of a process already sampled at t0 but absent then, or of a
                # process born later, was born during the window: it counts from zero
                born_before = s.t_s == t0
                seen_first[key] = (v, i) if born_before else (0, 0)
            seen_last[key] = (s.t_s, v, i)
    vol = invol = exited = 0
    for key, (t, v, i) in seen_last.items():
        v0, i0 = seen_first[key]
        vol += v - v0
        invol += i - i0
        exited += t < t1
    for pid, (start, end) in fallback.items():
        if any(k[0] == pid for k in seen_last):
            continue  # listed in other samples: those counts are better
        base = start if start.t_s == t0 else _ZERO
        vol += end.ctx_voluntary - base.ctx_voluntary
        invol += end.ctx_involuntary - base.ctx_involuntary
    return vol, invol, exited


PROC_COLUMNS = (
    "proc_cpu_pct",
    "proc_cpu_pct_frontend",
    "proc_cpu_pct_workers",
    "proc_rss_mb",
    "proc_threads",
    "proc_ctx_voluntary",
    "proc_ctx_involuntary",
    "proc_ctx_per_req",
    "proc_ctx_all_voluntary",
    "proc_ctx_all_involuntary",
    "proc_ctx_all_per_req",
    "proc_exited_processes",
    "proc_exited_threads",
)
