"""Time ``sweeper.report.render_report`` on a synthetic run of many trials.

    python benchmarks/bench_report.py [--trials 500] [--repeats 2] [--keep]

Writes a run directory (results.csv with every column of sweeper.results, machine.json,
sweep.yaml, result.json with a log tail for failed trials) into a temporary directory,
renders the report three times and prints the times. Goal: under 5 s for 500 trials.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sweeper.report import render_report  # noqa: E402

BATCH = (1, 4, 8, 16, 32)
DELAY = (5, 50)
WORKERS = (1, 2, 4, 8)
THREADS = (1, 2, 4)
LOADS = (("closed", 16), ("closed", 64), ("open", 300), ("open", 1200), ("open", 2400))


def synthetic_results(n_trials: int, repeats: int, seed: int = 7) -> pd.DataFrame:
    """A plausible CPU-bound model: batching raises capacity, oversubscribing the cores
    (workers x threads > 2) lowers it, queueing raises latency near capacity."""
    rng = np.random.default_rng(seed)
    rows = []
    grid = itertools.product(BATCH, DELAY, WORKERS, THREADS, LOADS)
    for i, (bs, delay, workers, threads, (mode, level)) in enumerate(itertools.islice(grid, n_trials)):
        trial_id = f"t{i:05d}"
        oversub = max(1.0, workers * threads / 2)
        capacity = 1100 * (1 + 0.9 * np.log2(bs)) / oversub**0.5
        service_ms = 1000 / capacity
        failed = rng.random() < 0.03
        for rep in range(repeats):
            noise = rng.normal(1, 0.03)
            base = {
                "sweep": "bench", "run_id": "bench-20240101-000000", "trial_id": trial_id, "repeat": rep,
                "group_id": f"g{workers}{threads}", "status": "failed" if failed else "ok",
                "error": "ServerError: worker died (exit 137)" if failed else "",
                "started_at": f"2024-01-01T{(i // 120) % 24:02d}:{(i // 2) % 60:02d}:{rep * 30:02d}Z",
                "wall_s": 24.5, "measure_s": 20.0, "overhead_s": 4.5,
                "param_model_name": "mlp", "param_model_batch_size": bs,
                "param_model_max_batch_delay_ms": delay, "param_model_min_workers": workers,
                "param_model_max_workers": workers, "param_model_response_timeout_s": 120,
                "param_server_number_of_netty_threads": 4, "param_env_OMP_NUM_THREADS": threads,
                "param_env_MKL_NUM_THREADS": threads, "load_mode": mode,
                "load_concurrency": level if mode == "closed" else np.nan,
                "load_rate_rps": level if mode == "open" else np.nan,
                "load_duration_s": 20, "load_requests": np.nan, "load_processes": 1,
            }
            if failed:
                rows.append(base)
                continue
            if mode == "closed":
                tput = min(capacity, level / (service_ms * 1.5) * 1000) * noise
                p50 = level / tput * 1000
                target = achieved = np.nan
            else:
                tput = min(level, capacity) * noise
                rho = min(level / capacity, 0.98)
                p50 = service_ms * (1 + rho / (1 - rho)) + (delay / 2 if bs > 1 else 0)
                if level > capacity:
                    p50 *= 20
                target, achieved = level, level * rng.normal(1, 0.002)
            p99 = p50 * rng.uniform(1.8, 2.6)
            ok = int(tput * 20)
            bound = mode == "closed" and level == 64 and rng.random() < 0.2
            rows.append(base | {
                "client_requests": ok, "client_ok": ok, "client_errors": 0, "client_status_counts": f"200:{ok}",
                "client_success_rate": 1.0, "client_throughput_rps": tput, "client_latency_mean_ms": p50 * 1.1,
                "client_latency_p50_ms": p50, "client_latency_p90_ms": p50 * 1.5, "client_latency_p99_ms": p99,
                "client_latency_max_ms": p99 * 1.6, "client_target_rate_rps": target,
                "client_achieved_rate_rps": achieved, "client_send_lag_p50_ms": 0.1, "client_send_lag_p99_ms": 0.7,
                "client_send_lag_max_ms": 2.0, "client_cpu_pct": 40 + tput / 50, "client_bound": bound,
                "client_bound_reason": "load client CPU 96% of one core" if bound else "",
                "client_batch_size_mean": min(bs, max(1.0, tput * delay / 1000)), "client_handler_ms_mean": 1 + 0.3 * bs,
                "server_requests": ok, "server_inference_latency_mean_ms": p50 * 0.8,
                "server_queue_latency_mean_ms": p50 * 0.3, "proc_cpu_pct": 190.0, "proc_cpu_pct_frontend": 50.0,
                "proc_cpu_pct_workers": 140.0, "proc_rss_mb": 600 + 300 * workers, "proc_threads": 60 + 20 * workers * threads,
                "proc_ctx_voluntary": int(ok * 2 * oversub), "proc_ctx_involuntary": int(ok * oversub),
                "proc_ctx_per_req": 3 * oversub,
            })
    return pd.DataFrame(rows)


def write_run(root: Path, n_trials: int, repeats: int) -> Path:
    run = root / "bench-20240101-000000"
    run.mkdir()
    df = synthetic_results(n_trials, repeats)
    df.to_csv(run / "results.csv", index=False)
    (run / "machine.json").write_text(json.dumps({"cpu_model": "synthetic", "cpu_count_logical": 2}))
    (run / "sweep.yaml").write_text("name: bench\nsettings:\n  repeats: 2\n  slo_p99_ms: 25\n")
    for r in df[df["status"] == "failed"].itertuples():
        d = run / "trials" / f"{r.trial_id}-r{r.repeat}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"log_tail": "worker died\n" * 60}))
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the run directory and print its path")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_report-")
    run = write_run(Path(tmp), args.trials, args.repeats)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        html, md = render_report(run)
        times.append(time.perf_counter() - t0)
    n_plots = html.read_text().count('<figure class="plot"')
    print(
        f"render_report: {args.trials} trials x {args.repeats} repeats, {n_plots} plots, "
        f"html {html.stat().st_size / 1e6:.2f} MB, md {md.stat().st_size / 1e3:.0f} kB; "
        f"first {times[0]:.2f} s, median {statistics.median(times):.2f} s, best {min(times):.2f} s"
    )
    if args.keep:
        print(run)
    else:
        import shutil

        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
