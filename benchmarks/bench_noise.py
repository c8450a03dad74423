"""This machine's noise floor: how much one configuration's throughput moves by itself.

    python benchmarks/bench_noise.py [--seconds 100] [--batch-size 8] [--delay-ms 5]
                                     [--workers 2] [--concurrency 32] [--server-warmup-s 15]
                                     [--threads 1] [--per-second]

One TorchServe (OMP_NUM_THREADS and MKL_NUM_THREADS = --threads, as the batching sweep
sets them: 2 workers of 2 threads each would oversubscribe 2 cores), the MLP registered
once, warmed up as a sweep warms a fresh server (sweeper.warmup.warm_server: at least
--server-warmup-s, then until the JVM's JIT compiler threads are quiet), then one closed
loop of --seconds, cut afterwards
into 1 s windows (a window holds the requests whose slot became free in it). A sampler
reads /proc/stat every second meanwhile: the machine's busy and steal time (steal: time a
virtual CPU was ready and the hypervisor ran another guest).

Prints:
- the 1 s windows' throughput, mean and coefficient of variation (CV);
- for blocks of k seconds (k = 2, 4, 6, 8, 10, 12, 20): the CV of the block means. Two
  measurements of k seconds of the same configuration, on this machine now, differ by
  about that much: no stopping rule and no confidence interval makes a k-second trial
  better than this;
- the host steal per second (mean, max) and its Pearson correlation with throughput;
- the JVM's JIT compiler threads' CPU per second (mean, max, seconds above jit.QUIET_PCT);
- with --per-second, every second: req/s, steal, the JVM's CPU, its compiler threads' CPU.

With independent windows the block CV would fall as 1/sqrt(k); slow drift (another
tenant of the host, the JVM's later compilation, the scheduler) keeps it higher, and the
table shows how much. The batching sweep's stability goal (median repeat CV <= 3% at about
7 s a trial) needs the 6-8 s rows near 3%.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_load_common import torchserve  # noqa: E402

import psutil  # noqa: E402

from sweeper import hoststat, hostspeed  # noqa: E402
from sweeper.torchserve import jit  # noqa: E402
from sweeper.warmup import warm_server  # noqa: E402
from sweeper.spec import Settings  # noqa: E402
from sweeper.load import LoadProfile, Target, run_load  # noqa: E402
from sweeper.load import windows as load_windows  # noqa: E402
from sweeper.load.launch import START_DELAY_S  # noqa: E402
from sweeper.torchserve import management  # noqa: E402

BLOCKS = (2, 4, 6, 8, 10, 12, 20)


def cv_pct(values) -> float:
    arr = np.asarray(values, dtype=float)
    return float(arr.std(ddof=1) / arr.mean() * 100.0) if len(arr) >= 2 and arr.mean() > 0 else math.nan


def block_cvs(rps: np.ndarray) -> list[tuple[int, int, float]]:
    """(k, number of blocks, CV % of the k-second block means) for each k with 3+ blocks."""
    out = []
    for k in BLOCKS:
        n = len(rps) // k
        if n >= 3:
            out.append((k, n, cv_pct(rps[: n * k].reshape(n, k).mean(axis=1))))
    return out


class StealSampler:
    """Once a second, with wall-clock stamps, on a background thread: /proc/stat, and the
    CPU seconds of the JVM (`jvm_pid`) and of its JIT compiler threads (a jit.Watch total)."""

    def __init__(self, jvm_pid: int | None = None):
        self.samples: list[tuple[float, tuple[int, ...]]] = []
        self.jvm: list[tuple[float, float, float]] = []  # (stamp, JVM CPU s, compiler CPU s)
        self._pid = jvm_pid
        self._watch = jit.Watch(jvm_pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            times = hoststat.cpu_times()
            if times is not None:
                self.samples.append((time.time(), times))
            if self._pid is not None and self._watch.sample():
                try:
                    cpu = psutil.Process(self._pid).cpu_times()
                    self.jvm.append((time.time(), cpu.user + cpu.system, self._watch.total_s))
                except psutil.Error:
                    pass
            self._stop.wait(1.0)

    def jvm_at(self, t0: float, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The JVM's and its compiler threads' CPU, % of one core, in each 1 s window."""
        if len(self.jvm) < 2:
            return np.full(count, np.nan), np.full(count, np.nan)
        stamps = np.array([j[0] for j in self.jvm])
        edges = t0 + np.arange(count + 1)
        inside = (edges >= stamps[0]) & (edges <= stamps[-1])
        out = []
        for col in (1, 2):
            v = np.interp(edges, stamps, np.array([j[col] for j in self.jvm]))
            pct = 100.0 * np.diff(v)  # windows of 1 s
            pct[~(inside[:-1] & inside[1:])] = np.nan
            out.append(pct)
        return out[0], out[1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def steal_at(self, t0: float, count: int) -> np.ndarray:
        """The steal percentage of each 1 s window [t0 + i, t0 + i + 1), interpolating the
        cumulative counters linearly between samples (NaN outside them)."""
        if len(self.samples) < 2:
            return np.full(count, np.nan)
        stamps = np.array([s for s, _ in self.samples])
        at = hoststat.FIELDS.index("steal")
        steal = np.array([t[at] for _, t in self.samples], dtype=float)
        total = np.array([sum(t) for _, t in self.samples], dtype=float)
        edges = t0 + np.arange(count + 1)
        inside = (edges >= stamps[0]) & (edges <= stamps[-1])
        s, tot = np.interp(edges, stamps, steal), np.interp(edges, stamps, total)
        out = 100.0 * np.diff(s) / np.maximum(np.diff(tot), 1e-9)
        out[~(inside[:-1] & inside[1:])] = np.nan
        return out


def speed_at(samples: list[tuple[float, float]], t0_mono: float, count: int) -> np.ndarray:
    """The median CPU speed sample in each 1 s window [t0 + i, t0 + i + 1) (NaN where none)."""
    out = np.full(count, np.nan)
    for i in range(count):
        inside = [v for t, v in samples if t0_mono + i <= t < t0_mono + i + 1]
        if inside:
            out[i] = float(np.median(inside))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--delay-ms", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--server-warmup-s", type=float, default=15.0)
    parser.add_argument("--server-warmup-max-s", type=float, default=None,
                        help="the server warm-up's cap (settings.server_warmup_max_s; default 3x --server-warmup-s)")
    parser.add_argument("--warmup-concurrency", type=int, default=None,
                        help="requests in flight during the server warm-up (default: --concurrency)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS and MKL_NUM_THREADS of the workers")
    parser.add_argument("--per-second", action="store_true",
                        help="also print each second: req/s, steal, the JVM's CPU and its JIT compiler threads' CPU")
    args = parser.parse_args()
    from handlers.models import MODELS  # here: every engine process re-imports this module (spawn)

    print(f"MLP batch {args.batch_size}, delay {args.delay_ms} ms, {args.workers} workers; closed loop "
          f"c={args.concurrency}, {args.threads} torch thread(s) a worker, for {args.seconds} s after a {args.server_warmup_s:g} s server warm-up; "
          f"cores {os.cpu_count()}, load average at start {os.getloadavg()[0]:.2f}", flush=True)
    threads = str(args.threads)
    with torchserve(env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}) as server:
        management.register_model(
            server, "mlp", batch_size=args.batch_size, max_batch_delay_ms=args.delay_ms, response_timeout_s=120,
            min_workers=args.workers, max_workers=args.workers,
        )
        target = Target(f"{server.inference_url}/predictions/mlp", MODELS["mlp"].example_request(),
                        (("Content-Type", "application/json"),))
        load = LoadProfile(mode="closed", concurrency=args.concurrency, duration_s=float(args.seconds), timeout_s=30.0)
        # the server warm-up a sweep gives a fresh server: at least --server-warmup-s, then
        # until the JIT compiler threads are quiet (at most 3x)
        warm_load = dataclasses.replace(load, concurrency=args.warmup_concurrency or args.concurrency)
        warm_settings = Settings(server_warmup_s=args.server_warmup_s, server_warmup_max_s=args.server_warmup_max_s)
        warmed = warm_server(server, target, warm_load, warm_settings)
        print(f"server warm-up: {warmed['server_warmup_s']:.1f} s (cap {warm_settings.server_warmup_cap_s:g} s) at "
              f"c={warm_load.concurrency}, JIT compiler threads at the end {warmed['server_warmup_jit_pct']:.1f}% of a core",
              flush=True)
        started: dict[str, float] = {}
        speed = hostspeed.SpeedProbe()
        wall_minus_mono = time.time() - time.monotonic()
        with StealSampler(jit.jvm_pid(server.root_pid)) as sampler:
            speed.start()
            try:
                run = run_load(target, load, on_ready=lambda: started.setdefault("t0", time.time() + START_DELAY_S))
            finally:
                speed.stop()
    windows = load_windows.cut(run.records, 1.0, float(args.seconds))
    rps = np.array([w.rps for w in windows])
    print(f"\n1 s windows: {len(rps)}, mean {rps.mean():,.0f} req/s, CV {cv_pct(rps):.1f}%, "
          f"min {rps.min():,.0f}, max {rps.max():,.0f}")
    print("\n| block | blocks | CV of block means | 1/sqrt(k) would give |\n|---:|---:|---:|---:|")
    for k, n, cv in block_cvs(rps):
        print(f"| {k} s | {n} | {cv:.1f}% | {cv_pct(rps) / math.sqrt(k):.1f}% |")
    steal = sampler.steal_at(started["t0"], len(rps))
    both = np.isfinite(steal)
    if both.sum() >= 3:
        r = float(np.corrcoef(rps[both], steal[both])[0, 1]) if np.std(steal[both]) > 0 else math.nan
        print(f"\nhost steal per second: mean {np.nanmean(steal):.1f}%, max {np.nanmax(steal):.1f}% of the machine; "
              f"Pearson r(throughput, steal) = {r:.2f} over {int(both.sum())} s")
    else:
        print("\nhost steal: not readable here (/proc/stat)")
    jvm, compiling = sampler.jvm_at(started["t0"], len(rps))
    if np.isfinite(compiling).sum() >= 3:
        busy = int((compiling >= jit.QUIET_PCT).sum())
        print(f"JVM JIT compiler threads per second: mean {np.nanmean(compiling):.1f}%, max {np.nanmax(compiling):.1f}% "
              f"of a core; {busy} s at or above {jit.QUIET_PCT:g}%")
    cpu_speed = speed_at(speed.samples, started["t0"] - wall_minus_mono, len(rps))
    has = np.isfinite(cpu_speed)
    if has.sum() >= 3:
        r = float(np.corrcoef(rps[has], cpu_speed[has])[0, 1])
        print(f"host CPU speed (sweeper.hostspeed, median of each second's samples): CV {cv_pct(cpu_speed[has]):.1f}% "
              f"over {int(has.sum())} s; Pearson r(throughput, speed) = {r:.2f}")
        rel = cpu_speed / np.nanmedian(cpu_speed)
        print("\n| block | CV of the CPU speed | CV of throughput | CV of throughput / speed |\n|---:|---:|---:|---:|")
        for k in BLOCKS:
            n = len(rps) // k
            if n >= 3:
                blocks = lambda a: np.nanmean(a[: n * k].reshape(n, k), axis=1)  # noqa: E731
                t, v = blocks(rps), blocks(rel)
                print(f"| {k} s | {cv_pct(v):.1f}% | {cv_pct(t):.1f}% | {cv_pct(t / v):.1f}% |")
    if args.per_second:
        print("\n| s | req/s | steal % | JVM % of a core | JIT % of a core | CPU speed |\n|---:|---:|---:|---:|---:|---:|")
        for i in range(len(rps)):
            print(f"| {i} | {rps[i]:,.0f} | {steal[i]:.1f} | {jvm[i]:.0f} | {compiling[i]:.0f} | {cpu_speed[i]:.1f} |")
    floor = dict((k, cv) for k, _, cv in block_cvs(rps))
    if 6 in floor:
        print(f"\nnoise floor: two 6 s measurements of one configuration differ by a CV of about {floor[6]:.1f}% "
              "on this machine now")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
