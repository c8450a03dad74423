"""Replay a recorded grid to measure how fast each search strategy finds a good configuration.

    python benchmarks/bench_search.py [--csv benchmarks/data/search_grid.csv]
        [--sweep benchmarks/data/search_grid_replay.yaml] [--seeds 30] [--budget-pct 50] [--slo-p99-ms MS]

The grid is a results.csv of a real full-grid run (benchmarks/data/README.md says how it was
recorded; search_grid.yaml is the sweep it ran, search_grid_replay.yaml the same sweep with
the SLO the replay uses, and why). The real strategies (sweeper.search.STRATEGIES: grid, random, optuna) run against
it through their protocol: `suggest()` until None, each run answered with `observe()` and a
recorded repeat of that configuration (matched by its param_* values), picked at random with
a seeded RNG, without replacement until the configuration's recorded repeats are used up:
the noise a search sees is the noise the real run had.

The target is the best feasible configuration of the full grid: the highest mean throughput
over its repeats among the closed-loop configurations that served every request in every
repeat and whose mean p99 is within the sweep's settings.slo_p99_ms (sweeper.analysis:
aggregate_trials + objective.best, the recommendation's rule). After each run, the search's
current best is the same rule applied to what it has observed so far (means of its observed
repeats). It has *reached* the target once that configuration is feasible on the full grid
too and its full-grid mean throughput is within 5% of the target's. The figure is the number
of runs (trials x repeats, the unit of the grid's size) spent until then, as a % of the
grid's runs; a seed that never reaches it within the budget counts as 100%.

Random and optuna get the same budget (--budget-pct of the grid's runs); the grid runs whole
in the sweep's order (settings.order), so only the repeat picks vary between its seeds.
Exit status: 0 when optuna's median is at most 25% and below random's (the goal),
1 when it is not or optuna is not registered, 2 for a bad input file.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sweeper.analysis.aggregate import PARAM_PREFIX, aggregate_trials  # noqa: E402
from sweeper.analysis.objective import P99, THROUGHPUT, best  # noqa: E402
from sweeper.analysis.objective import _number  # noqa: E402  (the same parsing as the search's)
from sweeper.trialresult import TrialResult  # noqa: E402
from sweeper.plan import Axis, Trial, make_trial, points, space  # noqa: E402
from sweeper.search import STRATEGIES, SearchOptions  # noqa: E402
from sweeper.spec import SweepSpec  # noqa: E402
from sweeper.sweepfile import load_sweep

DATA = Path(__file__).resolve().parent / "data"
WITHIN = 0.05  # "within 5% of the best"
GOAL_PCT = 25.0  # the goal: optuna's median at most 25% of the grid's runs, and below random's
STRATEGY_ORDER = ("grid", "random", "optuna")


class BenchInputError(ValueError):
    """A recorded grid that cannot be replayed: one line naming the file and the rule."""


def config_key(params: dict[str, object], columns: tuple[str, ...]) -> tuple[str, ...]:
    """The configuration's identity: its param_* values as text, the same whether they come
    from a Trial (ints, None) or a CSV (ints, floats, NaN)."""
    return tuple(_text(params.get(c)) for c in columns)


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isnan(number):
        return ""
    return str(int(number)) if number.is_integer() else repr(number)


@dataclass(frozen=True)
class Config:
    """One configuration of the full grid: its recorded repeats and what they add up to."""

    key: tuple[str, ...]
    rows: tuple[dict, ...]  # the recorded runs (results.csv rows), in file order
    feasible: bool  # eligible, closed loop, mean p99 within the SLO (objective.best's pool)
    throughput_rps: float  # mean over its ok repeats (NaN when none)


@dataclass
class Grid:
    """A recorded full grid, keyed by configuration."""

    param_columns: tuple[str, ...]
    configs: dict[tuple[str, ...], Config]
    runs: int  # the grid's size in runs: configurations x settings.repeats
    slo_p99_ms: float | None
    best_key: tuple[str, ...]
    best_rps: float

    def near_best(self, key: tuple[str, ...]) -> bool:
        """Feasible on the full grid and within 5% of the best's mean throughput."""
        c = self.configs[key]
        return c.feasible and c.throughput_rps >= (1 - WITHIN) * self.best_rps


def load_grid(csv_path: Path, spec: SweepSpec, axes: list[Axis]) -> Grid:
    """Read results.csv, check it covers every point of the sweep, find the best feasible
    configuration with the recommendation's rule (aggregate_trials + objective.best)."""
    df = pd.read_csv(csv_path)
    params = tuple(sorted(c for c in df.columns if c.startswith(PARAM_PREFIX)))
    if df.empty or not params:
        raise BenchInputError(f"{csv_path}: no rows with param_* columns (a results.csv of a full grid run)")
    df["_key"] = [config_key(r, params) for r in df[list(params)].to_dict("records")]
    # one configuration is one key; a run's trial_id must not split it (another sweep name)
    df["trial_id"] = df["_key"].map({k: f"c{i}" for i, k in enumerate(dict.fromkeys(df["_key"]))})
    trials = aggregate_trials(df.drop(columns="_key"))
    slo = spec.settings.slo_p99_ms
    winner = best(trials, slo)
    if winner is None:
        if slo is None:
            raise BenchInputError(f"{csv_path}: no eligible closed-loop configuration (every repeat ok, every request served)")
        lowest = trials.loc[trials["eligible"], f"{P99}_mean"].min()
        raise BenchInputError(
            f"{csv_path}: settings.slo_p99_ms: no configuration is feasible (every request served, mean p99 <= {slo:g} ms); "
            f"the lowest mean p99 of an eligible one is {lowest:.1f} ms (--slo-p99-ms replays with another SLO)"
        )
    pool = trials[trials["eligible"] & (trials["load_mode"] == "closed") & trials[f"{THROUGHPUT}_mean"].notna()]
    if slo is not None:
        pool = pool[pool[f"{P99}_mean"] <= slo]
    feasible_ids = set(pool["trial_id"])
    rps = dict(zip(trials["trial_id"], trials[f"{THROUGHPUT}_mean"]))
    records = df.drop(columns="_key").to_dict("records")
    configs: dict[tuple[str, ...], Config] = {}
    for key, group in df.groupby("_key", sort=False).groups.items():
        tid = df.at[group[0], "trial_id"]
        configs[key] = Config(key, tuple(records[i] for i in group), tid in feasible_ids, float(rps[tid]))
    n_points = 0
    for point in points(axes):
        n_points += 1
        trial_params = {k: v for k, v in make_trial(spec, point, 0).params().items() if k.startswith(PARAM_PREFIX)}
        if set(trial_params) != set(params):
            raise BenchInputError(
                f"{csv_path}: param columns {sorted(params)} are not the sweep's {sorted(trial_params)}"
            )
        if config_key(trial_params, params) not in configs:
            raise BenchInputError(f"{csv_path}: no recorded run of the sweep's configuration {trial_params}")
    runs = n_points * spec.settings.repeats
    best_key = config_key(winner.to_dict(), params)
    return Grid(params, configs, runs, slo, best_key, float(winner[f"{THROUGHPUT}_mean"]))


class Replay:
    """Answers runs with recorded repeats: for each configuration a seeded random
    permutation of its recorded repeats, used in turn (cycling when a search runs a
    configuration more often than it was recorded)."""

    def __init__(self, grid: Grid, seed: int):
        self._grid = grid
        self._rng = random.Random(seed)
        self._order: dict[tuple[str, ...], list[int]] = {}
        self._used: dict[tuple[str, ...], int] = {}

    def pick(self, key: tuple[str, ...]) -> dict:
        rows = self._grid.configs[key].rows
        if key not in self._order:
            order = list(range(len(rows)))
            self._rng.shuffle(order)
            self._order[key] = order
        n = self._used.get(key, 0)
        self._used[key] = n + 1
        return rows[self._order[key][n % len(rows)]]

    def answer(self, trial: Trial) -> TrialResult:
        """The TrialResult a runner would hand the strategy: the recorded row with this
        trial's identity and param_*/load_* columns (as runner._complete_row makes them)."""
        key = config_key(trial.params(), self._grid.param_columns)
        if key not in self._grid.configs:
            raise BenchInputError(f"the strategy proposed a configuration the grid did not record: {trial.params()}")
        row = dict(self.pick(key))
        row.update(trial_id=trial.trial_id, repeat=trial.repeat, group_id=trial.group_id, **trial.params())
        return TrialResult(trial, row, key=trial.key)


@dataclass
class _Seen:
    ok: int = 0
    failed: int = 0
    closed: bool = True
    throughput: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    min_success: float = math.inf


class Observed:
    """The search's current best from the runs it has observed: objective.best's rule
    (eligible, closed loop, mean p99 within the SLO, highest mean throughput, ties to the
    first seen) on the means of its observed repeats. Incremental: aggregate_trials per run
    would cost seconds per seed (tests check they agree)."""

    def __init__(self, slo_p99_ms: float | None):
        self._slo = slo_p99_ms
        self._seen: dict[tuple[str, ...], _Seen] = {}

    def add(self, key: tuple[str, ...], row: dict) -> None:
        s = self._seen.setdefault(key, _Seen())
        s.closed = s.closed and row.get("load_mode") == "closed"
        status = str(row.get("status", ""))
        if status == "failed":
            s.failed += 1
        if status != "ok":
            return
        s.ok += 1
        success = _number(row.get("client_success_rate"))
        s.min_success = min(s.min_success, success if success is not None else 0.0)
        for values, column in ((s.throughput, THROUGHPUT), (s.p99, P99)):
            x = _number(row.get(column))
            if x is not None:
                values.append(x)

    def best(self) -> tuple[str, ...] | None:
        winner, top = None, -math.inf
        for key, s in self._seen.items():
            if not s.closed or s.failed or not s.ok or s.min_success < 1.0 or not s.throughput:
                continue
            if self._slo is not None and (not s.p99 or statistics.fmean(s.p99) > self._slo):
                continue
            rps = statistics.fmean(s.throughput)
            if rps > top:
                winner, top = key, rps
        return winner


def runs_to_target(strategy, replay: Replay, grid: Grid) -> tuple[int | None, int]:
    """Drive the strategy to the end of its budget; (runs until its current best was near
    the grid's best, or None if never; runs spent)."""
    observed = Observed(grid.slo_p99_ms)
    reached: int | None = None
    runs = 0
    while (trial := strategy.suggest()) is not None:
        result = replay.answer(trial)
        strategy.observe(trial, result)
        runs += 1
        observed.add(config_key(trial.params(), grid.param_columns), dict(result.row))
        if reached is None:
            current = observed.best()
            if current is not None and grid.near_best(current):
                reached = runs
    return reached, runs


@dataclass(frozen=True)
class Outcome:
    strategy: str
    pcts: tuple[float, ...]  # per seed: % of the grid's runs until reached (100 when never)
    reached: int  # seeds that reached the target within the budget
    spent_pct: float  # median % of the grid's runs the strategy spent in all

    @property
    def median(self) -> float:
        return statistics.median(self.pcts)

    def quartiles(self) -> tuple[float, float]:
        if len(self.pcts) < 2:
            return self.pcts[0], self.pcts[0]
        q = statistics.quantiles(self.pcts, n=4, method="inclusive")
        return q[0], q[2]


def run_strategy(name: str, spec: SweepSpec, axes: list[Axis], grid: Grid, seeds: list[int], budget: int | None) -> Outcome:
    pcts, spent, reached = [], [], 0
    for seed in seeds:
        strategy = STRATEGIES[name](spec, axes, SearchOptions(seed=seed, budget=budget))
        at, runs = runs_to_target(strategy, Replay(grid, seed), grid)
        reached += at is not None
        pcts.append(100.0 * (at if at is not None else grid.runs) / grid.runs)
        spent.append(100.0 * runs / grid.runs)
    return Outcome(name, tuple(pcts), reached, statistics.median(spent))


def last_line(optuna_pct: float, random_pct: float) -> str:
    return (
        f"search: optuna reached within 5% of the feasible grid best in a median of {optuna_pct:.1f}% "
        f"of the grid's trials (random: {random_pct:.1f}%)"
    )


def describe(grid: Grid, spec: SweepSpec, axes: list[Axis]) -> list[str]:
    feasible = [c for c in grid.configs.values() if c.feasible]
    near = [c for c in feasible if grid.near_best(c.key)]
    slo = f"mean p99 <= {grid.slo_p99_ms:g} ms, " if grid.slo_p99_ms is not None else ""
    named = dict(zip(grid.param_columns, grid.best_key))
    varying = {c[len(PARAM_PREFIX):]: v for c, v in named.items() if len({k[grid.param_columns.index(c)] for k in grid.configs}) > 1}
    return [
        f"grid: {len(grid.configs)} configurations x {spec.settings.repeats} repeats = {grid.runs} runs; "
        f"{len(feasible)} feasible ({slo}every request served); "
        f"{len(near)} within 5% of the best",
        f"best feasible: {grid.best_rps:.1f} req/s at {', '.join(f'{k}={v}' for k, v in varying.items())}",
        # grid and random run their points in plan order (random: its sample, sorted), so how
        # early they find a configuration depends on where it lies in that order
        f"plan order: the best is configuration {position(grid, spec, axes, grid.best_key)} of {len(grid.configs)}; "
        f"the first within 5% is {min(position(grid, spec, axes, c.key) for c in near)}",
    ]


def position(grid: Grid, spec: SweepSpec, axes: list[Axis], key: tuple[str, ...]) -> int:
    """1-based index of the configuration in plan order (plan.points)."""
    for i, point in enumerate(points(axes), 1):
        if config_key(make_trial(spec, point, 0).params(), grid.param_columns) == key:
            return i
    raise KeyError(key)


def with_slo(spec: SweepSpec, slo_p99_ms: float) -> SweepSpec:
    settings = spec.settings.model_copy(update={"slo_p99_ms": slo_p99_ms})
    return spec.model_copy(update={"settings": settings})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DATA / "search_grid.csv", help="results.csv of a full grid run")
    parser.add_argument(
        "--sweep", type=Path, default=DATA / "search_grid_replay.yaml", help="the sweep file it ran (its axes, repeats, SLO)"
    )
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--budget-pct", type=float, default=50.0, help="random's and optuna's budget, %% of the grid's runs")
    parser.add_argument(
        "--slo-p99-ms", type=float, default=None,
        help="replay as if the sweep had this settings.slo_p99_ms (the target and the strategies both see it); "
        "default: the sweep's",
    )
    args = parser.parse_args(argv)

    try:
        spec = load_sweep(args.sweep)
        if args.slo_p99_ms is not None:
            spec = with_slo(spec, args.slo_p99_ms)
        axes = space(spec)
        grid = load_grid(args.csv, spec, axes)
    except (BenchInputError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    budget = max(spec.settings.repeats, round(grid.runs * args.budget_pct / 100))
    seeds = list(range(args.seeds))
    for line in describe(grid, spec, axes):
        print(line)
    print(
        f"replay: {args.seeds} seeds; each run answered with a recorded repeat picked at random; "
        f"random and optuna budget {budget} runs ({100 * budget / grid.runs:.0f}% of the grid); "
        f"a seed that never gets within 5% counts as 100%"
    )
    print(f"{'strategy':<9} {'median':>7} {'q1':>7} {'q3':>7} {'reached':>9} {'spent':>7}   (% of the grid's {grid.runs} runs)")
    outcomes: dict[str, Outcome] = {}
    for name in STRATEGY_ORDER:
        if name not in STRATEGIES:
            print(f"{name:<9} not registered in sweeper.search.STRATEGIES: skipped")
            continue
        o = run_strategy(name, spec, axes, grid, seeds, None if name == "grid" else budget)
        outcomes[name] = o
        q1, q3 = o.quartiles()
        print(
            f"{name:<9} {o.median:>6.1f}% {q1:>6.1f}% {q3:>6.1f}% {o.reached:>4}/{len(seeds):<4} {o.spent_pct:>6.1f}%"
        )
    if "optuna" not in outcomes or "random" not in outcomes:
        missing = ", ".join(n for n in ("optuna", "random") if n not in outcomes)
        print(f"search: no comparison: {missing} not registered in sweeper.search.STRATEGIES")
        return 1
    x, y = outcomes["optuna"].median, outcomes["random"].median
    print(last_line(x, y))
    return 0 if x <= GOAL_PCT and x < y else 1


if __name__ == "__main__":
    sys.exit(main())
