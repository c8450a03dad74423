"""How long a newly registered model serves slower than one that has served before.

    python benchmarks/bench_registration_warmup.py [--seconds 20] [--registrations 3]
                                                   [--batch-size 1] [--delay-ms 50]
                                                   [--workers 2] [--concurrency 32]

One TorchServe (OMP_NUM_THREADS = MKL_NUM_THREADS = 1, as the batching sweep sets them),
the MLP registered as `mlp` and warmed as a sweep warms a fresh server
(sweeper.warmup.warm_server). Then, --registrations times:

1. register the MLP again under a new name (mlp_1, mlp_2, ...; --batch-size, --delay-ms),
   as the sweep's local executor does when a trial needs per-model settings not yet
   registered, and run a closed loop of --seconds on it at once (`new`);
2. run the same closed loop on that registration again (`reused`: its workers and the
   frontend's path for it have served --seconds before).

A sampler reads, once a second, the JVM's JIT compiler threads' CPU (sweeper.torchserve.jit)
and the whole server's CPU. Prints, per second since the loop started, the mean req/s,
JIT % of a core and server CPU ms per request over the `new` and over the `reused` runs,
and the ratio new / reused of the mean req/s over the first 2, 4, 6, 8, 10 s. Where the
ratio reaches ~1 is how long a trial on a new registration must warm up before its
windows measure what a later repeat on the same registration would.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_load_common import torchserve  # noqa: E402

from sweeper.load import LoadProfile, Target, run_load  # noqa: E402
from sweeper.load import windows as load_windows  # noqa: E402
from sweeper.load.launch import START_DELAY_S  # noqa: E402
from sweeper.warmup import warm_server  # noqa: E402
from sweeper.spec import Settings  # noqa: E402
from sweeper.torchserve import jit, management  # noqa: E402


class Sampler:
    """Once a second on a background thread: (wall time, server tree CPU s, JIT CPU s)."""

    def __init__(self, root_pid: int, jvm_pid: int | None):
        self.root, self.watch = psutil.Process(root_pid), jit.Watch(jvm_pid)
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_cpu(self) -> float:
        total = 0.0
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def _run(self):
        while not self._stop.is_set():
            self.watch.sample()
            self.samples.append((time.time(), self._tree_cpu(), self.watch.total_s))
            self._stop.wait(1.0)

    def per_second(self, t0: float, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Server CPU and JIT CPU, % of one core, in each 1 s window from t0."""
        stamps = np.array([s[0] for s in self.samples])
        edges = t0 + np.arange(count + 1)
        out = []
        for col in (1, 2):
            v = np.interp(edges, stamps, np.array([s[col] for s in self.samples]))
            out.append(100.0 * np.diff(v))
        return out[0], out[1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def closed_loop(target: Target, load: LoadProfile, seconds: int) -> tuple[float, np.ndarray]:
    """One closed loop; (wall time of its start, req/s in each 1 s window)."""
    started: dict[str, float] = {}
    run = run_load(target, load, on_ready=lambda: started.setdefault("t0", time.time() + START_DELAY_S))
    return started["t0"], np.array([w.rps for w in load_windows.cut(run.records, 1.0, float(seconds))])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--registrations", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--delay-ms", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    from handlers.models import MODELS

    print(f"MLP batch {args.batch_size}, delay {args.delay_ms} ms, {args.workers} workers, closed loop c={args.concurrency}, "
          f"{args.seconds} s per run, {args.registrations} registrations; cores {os.cpu_count()}, "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    body = MODELS["mlp"].example_request()
    headers = (("Content-Type", "application/json"),)
    load = LoadProfile(mode="closed", concurrency=args.concurrency, duration_s=float(args.seconds), timeout_s=30.0)
    register = dict(batch_size=args.batch_size, max_batch_delay_ms=args.delay_ms, response_timeout_s=120,
                    min_workers=args.workers, max_workers=args.workers)
    runs: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"new": [], "reused": []}
    with torchserve(env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}) as server:
        management.register_model(server, "mlp", **register)
        first = Target(f"{server.inference_url}/predictions/mlp", body, headers)
        warmed = warm_server(server, first, load, Settings())
        print(f"server warm-up on mlp: {warmed['server_warmup_s']:.1f} s, JIT at the end "
              f"{warmed['server_warmup_jit_pct']:.1f}% of a core", flush=True)
        with Sampler(server.root_pid, jit.jvm_pid(server.root_pid)) as sampler:
            for i in range(1, args.registrations + 1):
                name = f"mlp_{i}"
                t = time.monotonic()
                management.register_model(server, name, url="mlp.mar", **register)
                print(f"registered {name} in {time.monotonic() - t:.1f} s", flush=True)
                target = Target(f"{server.inference_url}/predictions/{name}", body, headers)
                for kind in ("new", "reused"):
                    t0, rps = closed_loop(target, load, args.seconds)
                    time.sleep(1.1)  # the sampler's next sample covers the run's last second
                    cpu, compiling = sampler.per_second(t0, len(rps))
                    runs[kind].append((rps, cpu, compiling))
                    print(f"  {kind:6s} {rps.mean():7,.0f} req/s; first 4 s {rps[:4].mean():,.0f}, JIT over the run "
                          f"{compiling.mean():.1f}% of a core", flush=True)

    def mean_of(kind: str, col: int) -> np.ndarray:
        n = min(len(r[col]) for r in runs[kind])
        return np.mean([r[col][:n] for r in runs[kind]], axis=0)

    new_rps, reused_rps = mean_of("new", 0), mean_of("reused", 0)
    new_cpu, reused_cpu = mean_of("new", 1), mean_of("reused", 1)
    new_jit, reused_jit = mean_of("new", 2), mean_of("reused", 2)
    print("\nmeans over the registrations, by second since the loop started\n")
    print("| s | new req/s | reused req/s | new JIT % | reused JIT % | new CPU ms/req | reused CPU ms/req |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for s in range(len(new_rps)):
        print(f"| {s} | {new_rps[s]:,.0f} | {reused_rps[s]:,.0f} | {new_jit[s]:.0f} | {reused_jit[s]:.0f} | "
              f"{10 * new_cpu[s] / new_rps[s]:.2f} | {10 * reused_cpu[s] / reused_rps[s]:.2f} |")
    print("\n| first k s | new / reused req/s | new, from s k on / reused, from s k on |\n|---:|---:|---:|")
    for k in (2, 4, 6, 8, 10):
        if k < len(new_rps):
            print(f"| {k} | {new_rps[:k].mean() / reused_rps[:k].mean():.3f} | "
                  f"{new_rps[k:].mean() / reused_rps[k:].mean():.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
