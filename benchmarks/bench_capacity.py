"""Capacity under the SLO: does the rate search (search.objective capacity) find what a fine
open-loop rate sweep of the same configuration finds?

    python benchmarks/bench_capacity.py [--slo-p99-ms 100] [--batch-size 8] [--delay-ms 5]
                                        [--workers 2] [--step-s 3] [--fine-pct 5] [--rounds 1]

One TorchServe, the MLP registered once (batch 8, 5 ms delay, 2 workers by default), warmed
up; then per round:
1. the capacity search exactly as a capacity trial runs it (sweeper.capacity.find_capacity
   over sweeper.measure.capacity_step: x2 from start_rps, then halving to --precision);
2. a fine sweep of the same steps (same length, same verdict) at rates --fine-pct apart,
   from --fine-from x the found capacity upwards until two consecutive rates fail. Each
   rate is judged as the search judges one (--fine-rule same: a failing step is run once
   more and the rate fails only if that fails too; --fine-rule single: one step). Its
   capacity is the highest passing rate (the first failing step's rate is printed too).
Prints every step of both, the two capacities and their ratio (the goal: within 10%),
and the load average during the run (the machine is shared).

--fake-service-ms X runs the same against the tests' fake server as one FIFO server of X ms
a request (tests/fakeserver.py service_s: a known knee at 1000 / X req/s) instead of
TorchServe: the search itself, apart from the model's noise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_load_common import torchserve  # noqa: E402

from sweeper.capacity import CapacityRule, find_capacity  # noqa: E402
from sweeper.load import LoadProfile, Target, run_load  # noqa: E402
from sweeper.measure import capacity_step  # noqa: E402
from sweeper.warmup import warm_server  # noqa: E402
from sweeper.spec import Settings  # noqa: E402
from sweeper.torchserve import management  # noqa: E402


def _line(kind: str, s) -> str:
    return (f"| {kind} | {s.rate_rps:8.1f} | {s.throughput_rps:8.1f} | {s.p99_ms:9.1f} | {s.success_rate:.4f} "
            f"| {'pass' if s.passed else 'FAIL ' + s.reason} |")


def _server(args):
    if args.fake_service_ms is None:
        threads = str(args.threads)
        return torchserve(env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fakeserver import FakeServer

    return FakeServer(service_s=args.fake_service_ms / 1000.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slo-p99-ms", type=float, default=100.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--delay-ms", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--start-rps", type=float, default=50.0)
    parser.add_argument("--precision", type=float, default=0.05)
    parser.add_argument("--step-s", type=float, default=3.0)
    parser.add_argument("--warmup-s", type=float, default=0.5, help="of each step, sent but not judged")
    parser.add_argument("--fine-pct", type=float, default=5.0, help="the fine sweep's rate step, percent")
    parser.add_argument("--fine-from", type=float, default=0.7, help="the fine sweep starts at this x the found capacity")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--fine-rule", choices=("same", "single"), default="same",
                        help="same: each fine rate judged as the search judges one (a failing step once more); "
                        "single: one step per rate")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS and MKL_NUM_THREADS of the workers (as the sweeps set them)")
    parser.add_argument("--server-warmup-s", type=float, default=15.0, help="closed-loop load before round 1")
    parser.add_argument("--fake-service-ms", type=float, default=None, help="the fake FIFO server instead of TorchServe")
    args = parser.parse_args()

    rule = CapacityRule(
        slo_p99_ms=args.slo_p99_ms, min_success_rate=0.99, start_rps=args.start_rps, max_rps=100000.0,
        growth=2.0, precision=args.precision, step_s=args.step_s, warmup_s=args.warmup_s, max_steps=30,
    )
    from handlers.models import MODELS  # here, not at the top: every engine process re-imports this module (spawn) and would import torch

    info = MODELS["mlp"]
    loads = [os.getloadavg()]
    print(f"MLP batch {args.batch_size}, delay {args.delay_ms} ms, {args.workers} workers of {args.threads} torch "
          f"thread(s); SLO p99 <= {args.slo_p99_ms:g} ms, "
          f"success >= 0.99; steps of {args.step_s:g} s ({args.warmup_s:g} s not judged); search precision "
          f"{args.precision:.0%}; fine sweep every {args.fine_pct:g}%; load average at start {loads[0][0]:.2f}", flush=True)
    with _server(args) as server:
        if args.fake_service_ms is not None:
            print(f"target: the fake FIFO server, {args.fake_service_ms:g} ms a request (knee {1000 / args.fake_service_ms:g} req/s)")
            target = Target(server.url("/predict"), b"x")
        else:
            management.register_model(
                server, "mlp", batch_size=args.batch_size, max_batch_delay_ms=args.delay_ms, response_timeout_s=120,
                min_workers=args.workers, max_workers=args.workers,
            )
            target = Target(f"{server.inference_url}/predictions/mlp", info.example_request(),
                            (("Content-Type", "application/json"),))
        load = LoadProfile(mode="open", rate_rps=args.start_rps, duration_s=args.step_s, timeout_s=30.0)
        # the server warm-up a sweep gives a fresh server (sweeper.warmup.warm_server: at least
        # --server-warmup-s, then until the JVM's JIT compiler threads are quiet), so that round
        # 1's search, which runs first, does not meet a colder server than its fine sweep
        warm = LoadProfile(mode="closed", concurrency=16, duration_s=args.server_warmup_s)
        if args.fake_service_ms is None:
            warmed = warm_server(server, target, warm, Settings(server_warmup_s=args.server_warmup_s))
            print(f"server warm-up: {warmed['server_warmup_s']:.1f} s, JIT compiler threads at the end "
                  f"{warmed['server_warmup_jit_pct']:.1f}% of a core", flush=True)
        else:
            run_load(target, warm)
        results = []
        for round_ in range(args.rounds):
            print(f"\n## round {round_ + 1}\n\n| kind | rate req/s | served req/s | p99 ms | success | verdict |\n|---|---:|---:|---:|---:|---|")
            t0 = time.monotonic()

            def step(rate: float):
                s = capacity_step(target, load, rate, rule, 200)[0]
                print(_line("search", s), flush=True)
                return s

            found = find_capacity(step, rule)
            search_s = time.monotonic() - t0
            loads.append(os.getloadavg())
            rate, fails, fine_cap, first_fail = max(args.start_rps, args.fine_from * found.rps), 0, 0.0, None
            fine_steps = 0
            while fails < 2 and fine_steps < 60:
                s = capacity_step(target, load, rate, rule, 200)[0]
                fine_steps += 1
                print(_line("fine", s), flush=True)
                if not s.passed and args.fine_rule == "same":
                    # the search's verdict on a rate: a failing step is run once more, and
                    # the rate fails only when that fails too (sweeper.capacity.find_capacity)
                    s = capacity_step(target, load, rate, rule, 200)[0]
                    fine_steps += 1
                    print(_line("fine", s), flush=True)
                if s.passed:
                    fine_cap = rate
                else:
                    first_fail = first_fail or rate
                fails = 0 if s.passed else fails + 1
                rate *= 1 + args.fine_pct / 100.0
            loads.append(os.getloadavg())
            ratio = found.rps / fine_cap if fine_cap else float("nan")
            results.append((found.rps, len(found.steps), search_s, fine_cap, first_fail, fine_steps, ratio))
            print(f"\nsearch: {found.rps:.1f} req/s in {len(found.steps)} steps ({search_s:.0f} s, limited by "
                  f"{found.limited_by}); fine sweep: {fine_cap:.1f} req/s (first failure {first_fail or float('nan'):.1f}, "
                  f"{fine_steps} steps); ratio search/fine {ratio:.3f}", flush=True)
    print("\n| round | search req/s | steps | search s | fine req/s | fine first fail | ratio |\n|---:|---:|---:|---:|---:|---:|---:|")
    for i, (cap, n, secs, fine, fail, _, ratio) in enumerate(results, 1):
        print(f"| {i} | {cap:.1f} | {n} | {secs:.0f} | {fine:.1f} | {fail or float('nan'):.1f} | {ratio:.3f} |")
    print(f"load average (1 min) seen: {', '.join(f'{x[0]:.2f}' for x in loads)}; cores {os.cpu_count()}")
    ok = all(abs(r[-1] - 1.0) <= 0.10 for r in results)
    print("within 10%: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
