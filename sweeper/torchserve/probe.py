"""psutil sampling of the server's process tree: CPU, RSS, threads, context switches.

A `Probe` runs in a background thread during the measured window. CPU time and context
switches are cumulative per process, so the window's totals are per-pid differences
between the first and last time each pid was seen (a worker that restarts mid-window
counts from zero). RSS and thread counts are peaks of the tree's sum.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True)
class Sample:
    t_s: float
    pid: int
    role: str  # "frontend" | "worker" | "other"
    cpu_s: float  # user + system, cumulative
    rss_bytes: int
    threads: int
    ctx_voluntary: int
    ctx_involuntary: int


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


def sample_tree(root_pid: int, roles: dict[int, str]) -> list[Sample]:
    """One sample of root_pid and all its descendants."""
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
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
                    )
                )
        except psutil.Error:
            continue
    return out


@dataclass
class Probe:
    """Samples the tree under root_pid every interval_s between start() and stop()."""

    root_pid: int
    interval_s: float = 0.25
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="probe", daemon=True)
        self._roles: dict[int, str] = {}

    def start(self) -> "Probe":
        self.samples.extend(sample_tree(self.root_pid, self._roles))
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.extend(sample_tree(self.root_pid, self._roles))

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.samples.extend(sample_tree(self.root_pid, self._roles))
        return self.samples


def summarize(samples: list[Sample], ok_requests: int) -> dict[str, float]:
    """The proc_* columns of results.csv."""
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
    cpu = {"frontend": 0.0, "worker": 0.0, "other": 0.0}
    vol = invol = 0
    for pid, end in last.items():
        start = first[pid]
        cpu[end.role] += end.cpu_s - start.cpu_s
        vol += end.ctx_voluntary - start.ctx_voluntary
        invol += end.ctx_involuntary - start.ctx_involuntary
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
    }


PROC_COLUMNS = (
    "proc_cpu_pct",
    "proc_cpu_pct_frontend",
    "proc_cpu_pct_workers",
    "proc_rss_mb",
    "proc_threads",
    "proc_ctx_voluntary",
    "proc_ctx_involuntary",
    "proc_ctx_per_req",
)
