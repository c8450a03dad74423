"""In-process throughput of every model: the ceiling that served throughput is compared to.

    python benchmarks/bench_baseline.py [--duration-s 2] [--models mlp cnn] [--forward]

For each model, batch sizes {1, 8, 32} x threads {1, 2}: samples/s through the handler
code (JSON decode, one batched forward, JSON encode) and, with --forward, of the forward
pass alone. Each thread count runs in its own process (see sweeper.ceiling).
The last column is the worst CPU share the measuring process got: on a shared machine,
rows well below 90 % were starved by other processes and understate the ceiling.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handlers.models import MODELS  # noqa: E402
from sweeper.ceiling import measure_grid  # noqa: E402

BATCH_SIZES = [1, 8, 32]
THREADS = [1, 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=2.0, help="timed seconds per cell")
    parser.add_argument("--models", nargs="+", default=sorted(MODELS), choices=sorted(MODELS))
    parser.add_argument("--forward", action="store_true", help="also measure the forward pass alone")
    args = parser.parse_args()

    paths = ["handler", "forward"] if args.forward else ["handler"]
    header = " | ".join(f"batch {b} samples/s" for b in BATCH_SIZES)
    print(f"| model | path | threads | {header} | min CPU / (threads x wall) |")
    print("| --- | --- | --- | " + " | ".join("---:" for _ in BATCH_SIZES) + " | ---: |")
    for model in args.models:
        for path in paths:
            results = measure_grid(model, BATCH_SIZES, THREADS, args.duration_s, path)
            for threads in THREADS:
                row = {r.batch_size: r for r in results if r.threads == threads}
                cells = " | ".join(f"{row[b].samples_per_s:,.0f}" for b in BATCH_SIZES)
                # Below ~90 %: other processes took the cores, and the figures are low.
                busy = min(r.cpu_s / (threads * r.duration_s) for r in row.values())
                print(f"| {model} | {path} | {threads} | {cells} | {busy:.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
