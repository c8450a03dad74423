"""How stable a sweep's numbers are, read from finished run directories.

    python benchmarks/bench_stability.py RUN_DIR [RUN_DIR ...] [--baseline-s 379]

For each run: the runs and failures, the trial time (sum of `wall_s`) against a baseline
(default 379 s: what the batching sweep's trials took with fixed 5 s windows on a quiet
machine, docs/measurements.md#code-stability-baseline; pass your own), the unstable runs, and the repeat-to-repeat coefficient of
variation (sample standard deviation over mean, across a trial's ok repeats) of closed-loop
throughput and of open-loop p99: median and worst over the trials. Then, for two or more
runs, whether they recommend the same configuration (the recommendation's own rule,
sweeper.report.recommend, with each run's SLO) and what each says of its runner-up.

The stability goals, printed beside the figures: closed-loop throughput CV median <= 3% and worst
<= 8%; open-loop p99 CV median <= 8%; trial time at most 1.5x the baseline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sweeper.analysis import speed  # noqa: E402
from sweeper.analysis.aggregate import aggregate_trials  # noqa: E402
from sweeper.hoststat import STEAL_NOTE_PCT  # noqa: E402
from sweeper.report.recommend import recommend  # noqa: E402
from sweeper.sweepfile import load_sweep  # noqa: E402

GOALS = {"closed_median": 3.0, "closed_worst": 8.0, "open_median": 8.0, "time_ratio": 1.5}


def repeat_cv(rows: pd.DataFrame, column: str) -> pd.Series:
    """Per trial: sample std / mean of `column` over its ok repeats (trials with 2+ of them)."""
    return speed.repeat_cv_pct(rows[rows["status"] == "ok"], column) / 100.0


def describe(run_dir: Path, baseline_s: float) -> dict:
    rows = pd.read_csv(run_dir / "results.csv")
    closed = rows[rows["load_mode"] == "closed"]
    opened = rows[rows["load_mode"] == "open"]
    cv_closed = repeat_cv(closed, "client_throughput_rps") * 100
    cv_open = repeat_cv(opened, "client_latency_p99_ms") * 100
    unstable = rows["client_unstable"].fillna(False).astype(bool) if "client_unstable" in rows else pd.Series([False] * len(rows))
    wall = float(rows["wall_s"].sum())
    spec = load_sweep(run_dir / "sweep.yaml")
    rec = recommend(aggregate_trials(rows, spec.settings.min_success_rate), spec.settings.slo_p99_ms)
    return {
        "run": run_dir.name,
        "runs": len(rows),
        "failed": int((rows["status"] != "ok").sum()),
        "unstable": f"{int(unstable.sum())} ({int((unstable & (rows['load_mode'] == 'closed')).sum())} closed)",
        "trial_min": wall / 60,
        "time_ratio": wall / baseline_s,
        "closed_median": float(cv_closed.median()) if len(cv_closed) else float("nan"),
        "closed_worst": float(cv_closed.max()) if len(cv_closed) else float("nan"),
        "open_median": float(cv_open.median()) if len(cv_open) else float("nan"),
        "open_worst": float(cv_open.max()) if len(cv_open) else float("nan"),
        "recommendation": rec,
        # the hypervisor's steal over each run's window (sweeper.hoststat; absent in older runs)
        "steal_mean": float(rows["host_steal_pct"].mean()) if "host_steal_pct" in rows else float("nan"),
        "steal_max": float(rows["host_steal_pct"].max()) if "host_steal_pct" in rows else float("nan"),
        "steal_runs": int((rows["host_steal_pct"] > STEAL_NOTE_PCT).sum()) if "host_steal_pct" in rows else 0,
        # the same CVs over the trials none of whose repeats ran under steal above STEAL_NOTE_PCT
        "clean": clean_cvs(closed, opened) if "host_steal_pct" in rows else None,
        # the host's CPU speed (sweeper.hostspeed; absent in older runs)
        "speed": speed.summarize(rows),
    }


def clean_cvs(closed: pd.DataFrame, opened: pd.DataFrame) -> dict:
    def clean(rows: pd.DataFrame) -> pd.DataFrame:
        stolen = pd.to_numeric(rows["host_steal_pct"], errors="coerce") > STEAL_NOTE_PCT
        dirty = set(rows.loc[stolen, "trial_id"])
        return rows[~rows["trial_id"].isin(dirty)]

    c = repeat_cv(clean(closed), "client_throughput_rps") * 100
    o = repeat_cv(clean(opened), "client_latency_p99_ms") * 100
    return {"closed_n": len(c), "closed_median": float(c.median()) if len(c) else float("nan"),
            "closed_worst": float(c.max()) if len(c) else float("nan"), "open_n": len(o),
            "open_median": float(o.median()) if len(o) else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--baseline-s", type=float, default=379.0, help="trial time to compare with (default 379 s)")
    args = parser.parse_args(argv)
    for d in args.run_dirs:
        if not (d / "results.csv").is_file():
            print(f"error: {d}/results.csv: not found (a finished run directory is needed)", file=sys.stderr)
            return 2
    runs = [describe(d, args.baseline_s) for d in args.run_dirs]
    print(f"{'run':<34} {'runs':>4} {'fail':>4} {'unstable':>12} {'trials':>8} {'x base':>6} "
          f"{'closed tput CV med/worst':>25} {'open p99 CV med/worst':>22}")
    for r in runs:
        print(f"{r['run']:<34} {r['runs']:>4} {r['failed']:>4} {r['unstable']:>12} {r['trial_min']:>6.2f} m "
              f"{r['time_ratio']:>5.2f}x {r['closed_median']:>11.1f}% / {r['closed_worst']:>5.1f}% "
              f"{r['open_median']:>10.1f}% / {r['open_worst']:>5.1f}%")
    for r in runs:
        if r["steal_mean"] == r["steal_mean"]:
            print(f"{r['run']} host steal: mean {r['steal_mean']:.1f}%, worst run {r['steal_max']:.1f}%, "
                  f"{r['steal_runs']} of {r['runs']} runs above {STEAL_NOTE_PCT:g}%")
        if r.get("clean"):
            c = r["clean"]
            print(f"{r['run']} without steal (trials none of whose repeats had more than {STEAL_NOTE_PCT:g}%): "
                  f"closed tput CV median {c['closed_median']:.1f}% / worst {c['closed_worst']:.1f}% over "
                  f"{c['closed_n']} trials; open p99 CV median {c['open_median']:.1f}% over {c['open_n']}")
    for r in runs:
        if r.get("speed"):
            v = r["speed"]
            print(f"{r['run']} host CPU speed: {v.min_rel:.2f}-{v.max_rel:.2f}x the run's median; Pearson r(throughput, "
                  f"speed) between repeats of a closed-loop trial {v.r:.2f} over {v.paired_repeats} repeats. Closed tput CV "
                  f"with each repeat divided by its CPU speed: median {v.cv_adjusted_pct:.1f}% / worst "
                  f"{v.worst_adjusted_pct:.1f}% (as served {v.cv_raw_pct:.1f}% / {v.worst_raw_pct:.1f}%)")
    print(f"goals: closed CV median <= {GOALS['closed_median']:g}%, worst <= {GOALS['closed_worst']:g}%; "
          f"open p99 CV median <= {GOALS['open_median']:g}%; trials <= {GOALS['time_ratio']:g}x")
    for r in runs:
        for label, pick in (("throughput", r["recommendation"].throughput), ("latency", r["recommendation"].latency)):
            if pick is None:
                print(f"{r['run']} {label}: no pick")
                continue
            print(f"{r['run']} {label}: {_config(pick.winner)} (runner-up {_config(pick.runner_up)}): {pick.confidence}")
    return 0


def _config(row: dict | None) -> str:
    if row is None:
        return "none"
    keys = sorted(k for k in row if k.startswith("param_") and isinstance(row[k], (int, float, str)))
    varying = [k for k in keys if k in ("param_model_batch_size", "param_model_max_batch_delay_ms", "param_model_min_workers")]
    return " ".join(f"{k.rsplit('_model_', 1)[-1]}={row[k]}" for k in varying) or str(row.get("trial_id"))


if __name__ == "__main__":
    raise SystemExit(main())
