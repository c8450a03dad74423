"""Load engine throughput on a fast endpoint: closed loop against TorchServe's /ping.

    python benchmarks/bench_load_ping.py [--duration-s 5] [--concurrency 16 64] [--repeats 3]
                                         [--fake] [--aiohttp]

Prints 2xx per second, errors and engine CPU for each concurrency and repeat, from one
engine process. The goal is >= 8,000 req/s from one engine process. With
--aiohttp, an aiohttp + uvloop closed loop runs alternately against the same server as a
reference (a fast general-purpose client). With --fake, the
target is tests/fakeserver.py in this process instead of TorchServe (no Java needed).

On a machine with few cores the client and the server share the CPU: the figure is the pair's
throughput, and a faster client leaves more CPU to the server.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_load_common import aiohttp_closed_loop, ping_target  # noqa: E402

from sweeper.load import LoadProfile, Target, run_load, summarize  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fake", action="store_true", help="use the fake server, not TorchServe")
    parser.add_argument("--aiohttp", action="store_true", help="also run the aiohttp reference")
    args = parser.parse_args()

    with ping_target(not args.fake) as (url, what):
        print(f"target: {what}: {url}")
        target = Target(url, method="GET")
        # Warm-up: JIT of the JVM's request path, connections, page cache.
        run_load(target, LoadProfile("closed", concurrency=16, duration_s=2.0))
        print("| client | concurrency | repeat | 2xx req/s | errors | client CPU % | client bound |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        best: dict[tuple[str, int], list[float]] = {}
        for c in args.concurrency:
            for r in range(args.repeats):
                s = summarize(run_load(target, LoadProfile("closed", concurrency=c, duration_s=args.duration_s)))
                best.setdefault(("engine", c), []).append(s["client_throughput_rps"])
                print(
                    f"| engine | {c} | {r + 1} | {s['client_throughput_rps']:,.0f} | {s['client_errors']} "
                    f"| {s['client_cpu_pct']:.0f} | {s['client_bound_reason'] or 'no'} |",
                    flush=True,
                )
                if args.aiohttp:
                    a = aiohttp_closed_loop(url, c, args.duration_s)
                    best.setdefault(("aiohttp", c), []).append(a["ok_rps"])
                    print(
                        f"| aiohttp+uvloop | {c} | {r + 1} | {a['ok_rps']:,.0f} | {a['errors']} "
                        f"| {a['cpu_pct']:.0f} | |",
                        flush=True,
                    )
        print()
        for (client, c), values in best.items():
            print(f"{client:15s} concurrency {c:3d}: median {statistics.median(values):,.0f} req/s "
                  f"(min {min(values):,.0f}, max {max(values):,.0f}, {len(values)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
