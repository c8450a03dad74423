"""Open-loop accuracy: does the engine send at the rate asked, on schedule?

    python benchmarks/bench_load_open_loop.py [--rate 1000] [--duration-s 10] [--repeats 3]
                                              [--processes 1] [--torchserve]

Against a fast endpoint (the fake server of tests/fakeserver.py, or TorchServe's /ping
with --torchserve), prints per run: achieved rate and its error against the target, send
lag p50/p99/max (how late requests left against their schedule), latency p50/p99 from the
scheduled time, engine CPU, and whether summarize() flagged the run as client-bound.
The goal: achieved within 1% of 1,000 req/s over 10 s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_load_common import ping_target  # noqa: E402

from sweeper.load import LoadProfile, Target, run_load, summarize  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--torchserve", action="store_true", help="TorchServe /ping, not the fake server")
    args = parser.parse_args()

    with ping_target(args.torchserve, fake_delay_s=0.0005) as (url, what):
        target = Target(url, method="GET")
        profile = LoadProfile(
            "open", rate_rps=args.rate, duration_s=args.duration_s, processes=args.processes
        )
        print(f"target: {what}; open loop {args.rate:g} req/s x {args.duration_s:g} s, "
              f"{args.processes} engine process(es)")
        print("| run | requests | 2xx | achieved req/s | error vs target | send lag p50 / p99 / max ms "
              "| latency p50 / p99 ms | client CPU % | client bound |")
        print("| ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |")
        for r in range(args.repeats):
            s = summarize(run_load(target, profile))
            err = (s["client_achieved_rate_rps"] - args.rate) / args.rate
            print(
                f"| {r + 1} | {s['client_requests']} | {s['client_ok']} | {s['client_achieved_rate_rps']:,.2f} "
                f"| {err:+.3%} | {s['client_send_lag_p50_ms']:.2f} / {s['client_send_lag_p99_ms']:.2f} / "
                f"{s['client_send_lag_max_ms']:.2f} | {s['client_latency_p50_ms']:.2f} / "
                f"{s['client_latency_p99_ms']:.2f} | {s['client_cpu_pct']:.1f} "
                f"| {s['client_bound_reason'] or 'no'} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
