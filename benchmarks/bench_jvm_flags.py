"""JVM flags for TorchServe's frontend, A against B: how soon the JIT compiler settles, and
whether the settled server serves as fast.

    python benchmarks/bench_jvm_flags.py --flags=-XX:CompileThresholdScaling=0.1 \
        [--batch-sizes 1 8] [--workers 1] [--threads 1] [--concurrency 16] \
        [--block-s 4] [--quads 8] [--cap-s 120]

For each batch size, two TorchServes run side by side on loopback (A: TorchServe's
default JVM arguments; B: --flags through config.properties' vmargs), each with the MLP
registered. Both are warmed up as a sweep warms a fresh server (sweeper.warmup.warm_server
with a minimum of 1 s: closed-loop load until the JIT compiler threads are quiet, twice),
A first for the first batch size and B first for the next, and the seconds each took are
printed: how long a fresh server of each kind costs a sweep. Then the settled servers are
measured in alternating blocks, A B B A per quad, --block-s seconds each, so that a drift
of the machine falls on both alike; the idle server waits. Printed per batch size: each
side's mean throughput, and B/A as the mean of the quads' ratios with a 95% t-interval.

A flag set earns a place in a sweep's vmargs only where both batch sizes read B/A within
1% of 1.00 (the interval inside 0.99-1.01, or its mean there with the interval across 1).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeper.load import LoadProfile, Target, run_load, summarize  # noqa: E402
from sweeper.payload import example_body  # noqa: E402
from sweeper.spec import Settings  # noqa: E402
from sweeper.torchserve import management  # noqa: E402
from sweeper.torchserve.config import Ports  # noqa: E402
from sweeper.torchserve.process import TorchServe, check_java  # noqa: E402
from sweeper.warmup import warm_server  # noqa: E402

T_975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23,
         11: 2.20, 12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 16: 2.12}


def config(store: Path, vmargs: str):
    def render(ports: Ports) -> str:
        lines = [
            f"inference_address=http://127.0.0.1:{ports.inference}",
            f"management_address=http://127.0.0.1:{ports.management}",
            f"metrics_address=http://127.0.0.1:{ports.metrics}",
            "grpc_inference_address=127.0.0.1",
            f"grpc_inference_port={ports.grpc_inference}",
            "grpc_management_address=127.0.0.1",
            f"grpc_management_port={ports.grpc_management}",
            f"model_store={store}",
            "enable_model_api=true",
            "metrics_mode=prometheus",
            "disable_token_authorization=true",
        ]
        if vmargs:
            lines.append(f"vmargs={vmargs}")
        return "\n".join(lines) + "\n"

    return render


def t_interval(values: list[float]) -> tuple[float, float, float]:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = T_975.get(len(values) - 1, 2.0) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flags", required=True, help="B's vmargs, e.g. -XX:CompileThresholdScaling=0.1")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS and MKL_NUM_THREADS")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--block-s", type=float, default=4.0)
    parser.add_argument("--quads", type=int, default=8)
    parser.add_argument("--cap-s", type=float, default=120.0, help="the longest warm-up of one server")
    args = parser.parse_args()
    check_java()
    store = (ROOT / "model_store").resolve()
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    settings = Settings(server_warmup_s=1.0, server_warmup_max_s=args.cap_s)
    body = example_body("mlp")
    summary = []
    for i, batch in enumerate(args.batch_sizes):
        with ExitStack() as stack:
            servers = {}
            for side, vmargs in (("A", ""), ("B", args.flags)):
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-jvm-{side}-")))
                server = stack.enter_context(TorchServe(tmp, config(store, vmargs), env, store, token_auth=False))
                management.register_model(server, "mlp", batch_size=batch, max_batch_delay_ms=5, response_timeout_s=120,
                                          min_workers=args.workers, timeout_s=180.0)
                servers[side] = server
            targets = {s: Target(f"{sv.inference_url}/predictions/mlp", body=body,
                                 headers=(("Content-Type", "application/json"),)) for s, sv in servers.items()}
            profile = LoadProfile("closed", concurrency=args.concurrency, duration_s=args.block_s)
            warm_order = ("A", "B") if i % 2 == 0 else ("B", "A")
            warmed = {}
            for side in warm_order:
                w = warm_server(servers[side], targets[side], profile, settings)
                warmed[side] = w
                print(f"batch {batch}: {side} warm-up {w['server_warmup_s']:.1f} s, JIT at the end "
                      f"{w['server_warmup_jit_pct']:.1f}% of a core", flush=True)
            rps: dict[str, list[float]] = {"A": [], "B": []}
            ratios = []
            for q in range(args.quads):
                quad = {}
                for k, side in enumerate("ABBA"):
                    run = run_load(targets[side], profile)
                    value = summarize(run)["client_throughput_rps"]
                    rps[side].append(value)
                    quad.setdefault(side, []).append(value)
                ratios.append(statistics.fmean(quad["B"]) / statistics.fmean(quad["A"]))
                print(f"batch {batch}: quad {q + 1}: A {statistics.fmean(quad['A']):.0f} req/s, "
                      f"B {statistics.fmean(quad['B']):.0f} req/s, B/A {ratios[-1]:.3f}", flush=True)
            mean, low, high = t_interval(ratios)
            line = (f"batch {batch}: warm-up A {warmed['A']['server_warmup_s']:.1f} s, B {warmed['B']['server_warmup_s']:.1f} s; "
                    f"throughput A {statistics.fmean(rps['A']):.0f} req/s, B {statistics.fmean(rps['B']):.0f} req/s; "
                    f"B/A {mean:.3f} (95% {low:.3f}-{high:.3f}, {len(ratios)} quads of {args.block_s:g} s blocks)")
            print(line, flush=True)
            summary.append(line)
            time.sleep(1.0)
    print(f"\nB = vmargs {args.flags!r}; A = TorchServe's defaults; {args.workers} worker(s), "
          f"{args.threads} thread(s), {args.concurrency} in flight")
    for line in summary:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
