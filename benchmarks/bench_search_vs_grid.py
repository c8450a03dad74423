"""Does a real search find what the full grid finds? Read from two
finished run directories of the same sweep file: one searched (random or optuna), one run
as a grid (`search.strategy: grid`).

    python benchmarks/bench_search_vs_grid.py SEARCH_RUN_DIR GRID_RUN_DIR

Each run's pick is what its own recommendation says (sweeper.report.recommend over
sweeper.analysis.aggregate, with the run's SLO and min_success_rate): the best feasible
configuration by mean closed-loop throughput over all its repeats (a search's confirmation
repeats included). Prints both picks, the search pick's figure *in the grid run*, its rank
there, the ratio to the grid's best (the goal: at least 0.95), how many of the grid's
feasible configurations lie within 5% of its best (how wide the target is at this noise),
and what each run cost (runs, wall time of its trials, server starts, host steal).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sweeper.analysis.aggregate import aggregate_trials, param_columns  # noqa: E402
from sweeper.analysis.search import _costs  # noqa: E402
from sweeper.report.recommend import recommend  # noqa: E402
from sweeper.sweepfile import load_sweep  # noqa: E402

THROUGHPUT = "client_throughput_rps_mean"


def load(run_dir: Path):
    rows = pd.read_csv(run_dir / "results.csv")
    spec = load_sweep(run_dir / "sweep.yaml")
    trials = aggregate_trials(rows, spec.settings.min_success_rate)
    rec = recommend(trials, spec.settings.slo_p99_ms)
    pick = rec.latency.winner if rec.latency is not None else (rec.throughput.winner if rec.throughput else None)
    return rows, trials, pick, spec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("search_run", type=Path)
    parser.add_argument("grid_run", type=Path)
    args = parser.parse_args()
    s_rows, s_trials, s_pick, s_spec = load(args.search_run)
    g_rows, g_trials, g_pick, g_spec = load(args.grid_run)
    if s_pick is None or g_pick is None:
        print("no feasible pick in " + ("the search run" if s_pick is None else "the grid run"))
        return 1
    params = [c for c in param_columns(g_trials)]
    key = lambda r: tuple(str(r[c]) for c in params)  # noqa: E731
    shown = [c for c in params if g_trials[c].astype(str).nunique() > 1]
    label = lambda r: " ".join(f"{c.removeprefix('param_').removeprefix('model_').removeprefix('env_')}={r[c]}" for c in shown)  # noqa: E731
    slo = g_spec.settings.slo_p99_ms
    feasible = g_trials[g_trials["eligible"] & (g_trials["load_mode"] == "closed")]
    if slo is not None:
        feasible = feasible[feasible["client_latency_p99_ms_mean"] <= slo]
    feasible = feasible.sort_values(THROUGHPUT, ascending=False)
    in_grid = {key(r): r for _, r in feasible.iterrows()}
    best = float(g_pick[THROUGHPUT])
    print(f"search pick: {label(s_pick)}: {s_pick[THROUGHPUT]:,.0f} req/s in the search "
          f"(over {int(s_pick['n_ok'])} runs)")
    print(f"grid pick:   {label(g_pick)}: {best:,.0f} req/s")
    there = in_grid.get(key(s_pick))
    if there is None:
        print("the search pick is not feasible in the grid run")
        ratio = float("nan")
    else:
        rank = list(in_grid).index(key(s_pick)) + 1
        ratio = float(there[THROUGHPUT]) / best
        print(f"the search pick in the grid: {there[THROUGHPUT]:,.0f} req/s, rank {rank} of {len(in_grid)} feasible; "
              f"{ratio:.1%} of the grid's best")
    near = int((feasible[THROUGHPUT] >= 0.95 * best).sum())
    print(f"grid configurations within 5% of its best: {near} of {len(feasible)} feasible")
    measured = key(g_pick) in {key(r) for _, r in s_trials.iterrows()}
    print(f"the grid's best was measured by the search: {'yes' if measured else 'no'}")
    for name, rows in (("search", s_rows), ("grid", g_rows)):
        starts, _ = _costs(rows.sort_values("seq"))
        print(f"{name}: {len(rows)} runs, {rows['wall_s'].sum() / 60:.1f} min of trials, {starts} server starts, "
              f"host steal mean {rows['host_steal_pct'].mean():.1f}% ({int((rows['host_steal_pct'] > 5).sum())} runs above 5%)")
    print(f"within 5% of the grid's best: {'yes' if ratio >= 0.95 else 'NO'}")
    return 0 if ratio >= 0.95 else 1


if __name__ == "__main__":
    raise SystemExit(main())
