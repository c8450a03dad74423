"""A search run in figures (search.strategy random or optuna): which configurations were
measured, in which order, how good each was by the search's objective (analysis.objective:
the mean over its repeats, with its constraints), the best feasible one after each (the
trace), each relative to TorchServe's default configuration (plan.default_point), which
axes mattered (Optuna's parameter importances, from the measured configurations only),
and what the run cost in server starts and model registrations.

`summarize(results, spec, cores)` takes the tidy table (results.csv) and the run's sweep
(`run_search(run_dir, results)` reads the sweep from the run directory); results.md and
the report show what it returns. Pure apart from importing optuna for the
importances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..plan import count_trials, default_point, make_trial, run_costs, space, value_label
from ..spec import SweepSpec
from .objective import MAXIMIZE, RunScore, config_score, searchable

# Optuna's default importance evaluator (PED-ANOVA) compares the top 10% of the
# configurations with the rest: below about 10 there is no top to speak of.
MIN_FOR_IMPORTANCE = 10


@dataclass(frozen=True)
class Step:
    """One measured configuration, in the order measured."""

    n: int  # 1-based
    trial_id: str
    label: str  # the searched axes' values, e.g. "batch_size=8 max_batch_delay_ms=5"
    value: float | None  # the objective (mean over repeats); None: a repeat failed
    feasible: bool
    best: float | None  # the best feasible value after this configuration
    vs_default: float | None  # value / the default configuration's value - 1
    default: bool  # this is TorchServe's default configuration (or its stand-in)


@dataclass(frozen=True)
class SearchSummary:
    strategy: str
    objective: str
    unit: str  # "req/s" or "ms"
    grid: int  # configurations in the whole grid
    steps: tuple[Step, ...]
    default_trial_id: str
    default_value: float | None  # None: not measured, failed or infeasible
    default_notes: tuple[str, ...]  # axes where TorchServe's default is not on the axis
    importances: tuple[tuple[str, float], ...]  # axis name, share (sums to 1), largest first
    importance_note: str  # why there is no importance table, when there is none
    server_starts: int
    registrations: int
    # search.confirm: configurations measured again after the search, and those extra runs
    confirmed: int = 0
    confirm_runs: int = 0

    @property
    def measured(self) -> int:
        return len(self.steps)

    @property
    def best(self) -> Step | None:
        feasible = [s for s in self.steps if s.feasible]
        if not feasible:
            return None
        better = max if MAXIMIZE[self.objective] else min
        return better(feasible, key=lambda s: s.value)  # type: ignore[arg-type,return-value]

    @property
    def headline(self) -> str:
        """'N of M grid configurations measured', and the best against the default."""
        text = f"{self.measured} of {self.grid} grid configurations measured ({self.strategy} search, objective {self.objective})"
        best = self.best
        if best is not None:
            text += f"; the best feasible, {best.value:.1f} {self.unit}, came at configuration {best.n}"
            if best.vs_default is not None and not best.default:
                text += f", {100 * best.vs_default:+.0f}% against TorchServe's default configuration"
        if self.confirmed:
            text += (f"; the best {self.confirmed} were then measured again ({self.confirm_runs} more runs), "
                     "and each configuration's figures are over all its runs")
        return text


def run_search(run_dir: Path, results: pd.DataFrame) -> "SearchSummary | None":
    """The search of a run directory's table, when its sweep.yaml names one (None for a
    grid, an empty table, or a sweep.yaml this version cannot read)."""
    from ..errors import SweeperError
    from ..rundir import RunDir
    from ..sweepfile import load_sweep

    run = RunDir(run_dir)
    if results.empty or not run.sweep_yaml.is_file():
        return None
    try:
        spec = load_sweep(run.sweep_yaml)
    except SweeperError:  # from an older version: no search section
        return None
    return summarize(results, spec, run.cores())


def summarize(results: pd.DataFrame, spec: SweepSpec, cores: int | None) -> SearchSummary | None:
    """The search of this run, or None for a grid (or a table without trials)."""
    if spec.search.strategy == "grid" or results.empty or "trial_id" not in results:
        return None
    objective, settings = spec.search.objective, spec.settings
    axes = searchable(space(spec), objective)
    shown = [a for a in axes if len(a.values) > 1]
    point, notes = default_point(axes, cores or 1)
    default_id = make_trial(spec, point, 0).trial_id
    df = results.copy()
    df["_seq"] = pd.to_numeric(df.get("seq"), errors="coerce")
    df = df.sort_values("_seq", kind="stable")
    by_trial = {tid: g for tid, g in df.groupby(df["trial_id"].astype(str), sort=False)}
    scores: dict[str, RunScore] = {}
    for tid, rows in by_trial.items():
        records = rows.drop(columns="_seq").to_dict("records")
        mode = str(records[0].get("load_mode") or "closed")
        scores[tid] = config_score(records, mode, settings.slo_p99_ms, objective, settings.min_success_rate)
    default_score = scores.get(default_id)
    default_value = default_score.value if default_score is not None and default_score.feasible else None
    better = max if MAXIMIZE[objective] else min
    steps: list[Step] = []
    best: float | None = None
    for n, (tid, rows) in enumerate(by_trial.items(), start=1):
        score = scores[tid]
        if score.feasible:
            best = score.value if best is None else better(best, score.value)  # type: ignore[type-var]
        vs = score.value / default_value - 1 if score.value is not None and default_value else None
        steps.append(Step(n, tid, _label(rows.iloc[0], shown), score.value, score.feasible, best, vs, tid == default_id))
    importances, why = _importances(by_trial, scores, shown, objective)
    starts, registrations = _costs(df)
    repeat = pd.to_numeric(df.get("repeat"), errors="coerce")
    again = df[repeat >= settings.repeats] if "repeat" in df else df.iloc[0:0]
    return SearchSummary(
        strategy=spec.search.strategy, objective=objective, unit="ms" if objective == "latency" else "req/s",
        grid=count_trials(spec), steps=tuple(steps), default_trial_id=default_id, default_value=default_value,
        default_notes=tuple(notes), importances=importances, importance_note=why,
        server_starts=starts, registrations=registrations,
        confirmed=int(again["trial_id"].nunique()) if len(again) else 0, confirm_runs=len(again),
    )


def _label(row: pd.Series, axes: list) -> str:
    parts = []
    for axis in axes:
        name = axis.name.partition(".")[2] or axis.name
        if axis.name == "load":
            mode = row.get("load_mode")
            value = f"closed c={row.get('load_concurrency')}" if mode == "closed" else f"open {row.get('load_rate_rps')}/s"
        else:
            value = row.get(axis.column or "", "")
            value = f"{value:g}" if isinstance(value, float) and not math.isnan(value) else value
        parts.append(f"{name}={value}")
    return " ".join(parts)


def _index_of(axis: Any, row: pd.Series) -> int | None:
    """Which value of `axis` this result row was measured at."""
    if axis.name == "load":
        wanted = f"closed c={row.get('load_concurrency')}" if row.get("load_mode") == "closed" else None
        labels = [value_label(v) for v in axis.values]
        if wanted in labels:
            return labels.index(wanted)
        rate = row.get("load_rate_rps")
        for i, v in enumerate(axis.values):
            if v.mode == row.get("load_mode") and v.rate_rps is not None and float(v.rate_rps) == float(rate):
                return i
        return None
    value = row.get(axis.column or "")
    for i, v in enumerate(axis.values):
        if str(value_label(v)) == str(value):
            return i
        try:
            if float(v) == float(value):  # type: ignore[arg-type]
                return i
        except (TypeError, ValueError):
            continue
    return None


def _importances(by_trial, scores, axes, objective) -> tuple[tuple[tuple[str, float], ...], str]:
    """Optuna's parameter importances over the measured configurations with a value (an
    infeasible one counts as the worst value seen, so that what matters is reaching a good
    feasible value), from an in-memory study of those configurations only."""
    valued = {tid: s for tid, s in scores.items() if s.value is not None}
    if not axes:
        return (), "no axis has more than one value"
    if len(valued) < MIN_FOR_IMPORTANCE or not any(s.feasible for s in valued.values()):
        return (), (f"parameter importances need at least {MIN_FOR_IMPORTANCE} measured configurations "
                    f"with a value and one feasible; this run has {len(valued)}")
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    maximize = MAXIMIZE[objective]
    values = [s.value for s in valued.values()]
    worst = min(values) if maximize else max(values)  # type: ignore[type-var]
    dists = {a.name: CategoricalDistribution(list(range(len(a.values)))) for a in axes}
    study = optuna.create_study(direction="maximize" if maximize else "minimize")
    for tid, score in valued.items():
        row = by_trial[tid].iloc[0]
        params = {a.name: _index_of(a, row) for a in axes}
        if any(v is None for v in params.values()):
            continue
        target = score.value if score.feasible else worst
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=target))
    try:
        found = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # too few distinct values
        return (), f"parameter importances could not be computed: {exc}"
    return tuple((name, float(share)) for name, share in found.items()), ""


def _costs(df: pd.DataFrame) -> tuple[int, int]:
    """Server starts and model registrations of running the rows in their order
    (plan.run_costs over the rows as run). The registrations are the rows' own count
    (server_registered) where they have it; older runs: a registration whenever the
    per-model settings changed."""
    model_cols = [c for c in df.columns if c.startswith("param_model_")]
    runs = [(row.get("group_id"), tuple(str(row.get(c)) for c in model_cols)) for _, row in df.iterrows()]
    starts, registrations, _ = run_costs(runs)
    if "server_registered" in df.columns:
        registrations = int((pd.to_numeric(df["server_registered"], errors="coerce") == 1).sum())
    return starts, registrations
