"""How steady this machine's CPUs are by themselves: the floor under every trial's noise.

    python benchmarks/bench_host_speed.py [--seconds 240] [--processes N]

No TorchServe, no network: N processes (default: one per CPU) each run the fixed unit of
sweeper.hostspeed back to back for --seconds and count, each second, how many units they
did per second of their own CPU time (so waiting for a CPU or for the hypervisor is left
out; what is left is how fast the CPU executed a fixed instruction stream). Run it on an
otherwise idle machine.

Prints, for blocks of k seconds (k = 1, 3, 6, 12, 30, 60): the coefficient of variation
(CV) of the block means of each process and of their sum, and the Pearson correlation
between the processes' per-second series. On a bare-metal machine with a fixed clock
the CVs are near 0. On a virtual machine whose physical cores are shared with other
guests they are not, and a CPU-bound trial of k seconds cannot be repeated more closely
than the sum's row for k: two measurements of one configuration differ by about that much
before the server adds any noise of its own.

On a shared VM the 6 s figure can be several percent
(docs/measurements.md#code-host-speed-floor): more than the batching sweep's stability goal
(median repeat CV <= 3%, worst <= 8%, trials of about 6 s) allows, so on such a machine
that goal can be met only in its quieter stretches.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sweeper import hostspeed  # noqa: E402

BLOCKS = (1, 3, 6, 12, 30, 60)


def loop(seconds: float, out) -> None:
    """Units per CPU second, once a wall-clock second, for `seconds`."""
    rates = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0, c0, n = time.monotonic(), time.process_time(), 0
        while time.monotonic() - t0 < 1.0:
            hostspeed.unit()
            n += 1
        cpu = time.process_time() - c0
        rates.append(n / cpu if cpu > 0 else math.nan)
    out.send(rates)
    out.close()


def cv_pct(values) -> float:
    arr = np.asarray(values, dtype=float)
    return float(arr.std(ddof=1) / arr.mean() * 100.0) if len(arr) >= 2 and arr.mean() > 0 else math.nan


def block_cv(series: np.ndarray, k: int) -> tuple[int, float]:
    n = len(series) // k
    if n < 3:
        return n, math.nan
    return n, cv_pct(series[: n * k].reshape(n, k).mean(axis=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    print(f"{args.processes} process(es) x {args.seconds:g} s of sweeper.hostspeed units; cores {os.cpu_count()}, "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    try:
        for _ in range(args.processes):
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=loop, args=(args.seconds, send), daemon=True)
            p.start()
            pipes.append(recv)
            procs.append(p)
        series = [np.array(r.recv(), dtype=float) for r in pipes]
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
    n = min(len(s) for s in series)
    series = [s[:n] for s in series]
    total = np.sum(series, axis=0)
    names = [f"cpu process {i}" for i in range(len(series))] + (["sum"] if len(series) > 1 else [])
    columns = series + ([total] if len(series) > 1 else [])
    print(f"\n{n} s; mean units per CPU second: " + ", ".join(f"{s.mean():,.0f}" for s in series))
    print("\n| block | blocks | " + " | ".join(f"CV, {name}" for name in names) + " |")
    print("|---:|---:|" + "---:|" * len(names))
    for k in BLOCKS:
        count = n // k
        if count < 3:
            continue
        print(f"| {k} s | {count} | " + " | ".join(f"{block_cv(c, k)[1]:.1f}%" for c in columns) + " |")
    if len(series) > 1:
        corr = np.corrcoef(np.vstack(series))
        pairs = [f"{corr[i, j]:.2f}" for i in range(len(series)) for j in range(i + 1, len(series))]
        print(f"\nPearson r between the processes' per-second series: {', '.join(pairs)}")
    six = block_cv(columns[-1], 6)[1]
    if six == six:
        print(f"\nfloor: two 6 s measurements of CPU-bound work on this machine differ by a CV of about {six:.1f}% "
              "before any server noise")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
