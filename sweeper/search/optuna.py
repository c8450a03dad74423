"""`OptunaSearch`: Optuna's TPE proposes the next configuration from the results so far.

Ask-and-tell, the way Optuna intends it for an objective that is not a Python function:
`study.ask()` a configuration, run it `settings.repeats` times (back to back), `study.tell()`
the mean over its repeats. The search space is the sweep's own axes (sweeper.plan.space):
an axis of numbers in increasing or decreasing order is an ordered dimension (an integer
index, so TPE's kernel sees that 8 lies between 4 and 16), any other axis (load profiles,
request sets, text) a categorical one; an axis of one value is no dimension.

- Objective: search.objective (sweeper.analysis.objective.run_score), maximized or
  minimized, subject to p99 <= settings.slo_p99_ms and success rate >=
  settings.min_success_rate through `trial.set_constraint` (c-TPE: an infeasible
  configuration is ranked by how far it missed, so a near miss ranks above a far one). A
  configuration with a failed repeat is told as failed, an infeasible one as infeasible;
  none is dropped.
- First trial: the configuration TorchServe would use by default (`enqueue_trial`), or the
  nearest point of each axis to it (`default_point`); the report is relative to it.
- Resume: with `SearchOptions.storage_dir` (the run directory) the study lives in Optuna's
  journal file there (RunDir.search_journal), so `sweeper run --resume` loads the same
  study. A trial asked but never told (the run was killed) is proposed again: the runner
  reuses the repeats already on disk and runs the rest. Without a directory the study is
  in memory (a replay, a test).
- A configuration is measured once: when TPE proposes one that is already measured (or in
  flight), that Optuna trial is told the stored result (user attr `reused`: the trial it
  repeats), costs no budget, and the nearest unmeasured configuration is enqueued next.
  The budget (search.budget_trials) counts configurations measured.
- Polish: the last quarter of the budget (at most one neighbourhood: 2 per ordered axis,
  the other values of a categorical one) goes to the unmeasured neighbours of the best
  feasible configuration told so far, enqueued as Optuna trials (user attr `polish`: the
  trial they surround), then to the neighbours of a better one, until the budget is spent
  (a hill-climb from TPE's best; TPE asks again when the best has no unmeasured neighbour).
- Restarts: configurations are asked in batches (the random start-up trials in one batch,
  then a few at a time with Optuna's constant liar) and each batch runs grouped by server
  level (config.properties + environment: one TorchServe start) and then per-model
  settings (one registration), starting with the server that is already up.

optuna is imported in the constructor, so a grid or random sweep never loads it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from ..analysis.objective import MAXIMIZE, METRIC, config_score, searchable
from ..machine import machine_cores
from ..plan import Axis, Trial, axis_number, default_point, make_trial, value_label
from ..rundir import RunDir
from ..spec import SweepSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..trialresult import TrialResult
    from .base import SearchOptions

# How many configurations TPE's start-up samples at random before it models the results:
# a quarter of the budget, at least 4 and at most 10 (Optuna's default). With ~4-6
# categorical dimensions and a budget of ~30, 10 random points would spend a third of the
# budget before TPE learns anything; fewer than 4 give its density estimates nothing to
# separate "good" from "bad" (gamma takes the top ~10% of trials, at least 1).
MIN_STARTUP, MAX_STARTUP = 4, 10
# After the start-up, how many configurations one batch asks at once (constant liar keeps
# them apart): more saves restarts (one batch is ordered by server group), fewer keeps TPE
# closer to sequential (server starts counted per strategy:
# docs/measurements.md#m10-server-starts-and-registrations-per-strategy).
BATCH = 3
# The last part of the budget polishes the best configuration found: its unmeasured
# neighbours (one step along each ordered axis, every other value of a categorical one) are
# measured in one batch, and when one of them is better, its own neighbours next
# (hill-climbing), until the budget is spent. TPE finds the right region but, at ~25 of a
# grid's configurations, often stops one step short of its best point, beside a neighbour
# it never measured (docs/measurements.md#code-optuna-polish). The share is capped at one
# full neighbourhood.
POLISH_SHARE = 0.25

def dimensions(axes: list[Axis]) -> tuple[dict[str, Any], dict[str, bool]]:
    """Optuna's distribution for each axis of more than one value (by axis name) and
    whether it is ordered: an ordered axis is an integer index into its values, another
    one categorical over its labels (over indices when two labels coincide)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    dims: dict[str, Any] = {}
    ordered: dict[str, bool] = {}
    for axis in axes:
        if len(axis.values) < 2:
            continue
        ordered[axis.name] = _ordered(axis.values)
        labels = [value_label(v) for v in axis.values]
        if ordered[axis.name]:
            dims[axis.name] = IntDistribution(0, len(axis.values) - 1)
        elif len(set(labels)) < len(labels):
            dims[axis.name] = CategoricalDistribution(list(range(len(labels))))
        else:
            dims[axis.name] = CategoricalDistribution(labels)
    return dims, ordered


def param_value(dims: Mapping[str, Any], axis: Axis, value: object) -> object:
    """The Optuna parameter value of one axis value (its index, or its label)."""
    index = axis.values.index(value)
    choices = getattr(dims[axis.name], "choices", None)
    return choices[index] if choices is not None else index


def _ordered(values: tuple) -> bool:
    numbers = [axis_number(v) for v in values]
    if any(n is None for n in numbers):
        return False
    pairs = list(zip(numbers, numbers[1:]))
    return all(a < b for a, b in pairs) or all(a > b for a, b in pairs)  # type: ignore[operator]


@dataclass
class _Config:
    """One configuration asked of Optuna: its runs and what came back."""

    trial: Any  # optuna.trial.Trial
    key: tuple[int, ...]  # index of the value on each axis
    runs: list[Trial]
    rows: dict[int, Mapping[str, object]] = field(default_factory=dict)  # repeat -> row
    aliases: list[Any] = field(default_factory=list)  # Optuna trials that proposed it again


class OptunaSearch:
    def __init__(self, spec: SweepSpec, space: list[Axis], options: "SearchOptions"):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress line says it
        self._optuna = optuna
        settings = spec.settings
        self._spec = spec
        self._repeats = settings.repeats
        self._objective = spec.search.objective
        self._slo = settings.slo_p99_ms
        self._min_success = settings.min_success_rate
        self._axes = searchable(space, self._objective)
        self._grid = math.prod(len(a.values) for a in self._axes)
        configs = self._grid if options.budget is None else max(1, options.budget // self._repeats)
        self._budget = min(configs, self._grid)
        seed = options.seed if options.seed is not None else settings.seed
        self._rng = random.Random(seed)
        self._dims, self._ordered = dimensions(self._axes)
        self.startup = max(MIN_STARTUP, min(MAX_STARTUP, self._budget // 4))
        # an inner point's neighbours: 2 on an ordered axis (1 when it has two values), the
        # other values of a categorical one
        inner = sum(min(2, len(a.values) - 1) if self._ordered[a.name] else len(a.values) - 1 for a in self._axes if a.name in self._dims)
        self.polish = min(inner, int(self._budget * POLISH_SHARE))
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup, constant_liar=True)
        storage: Any = None
        if options.storage_dir is not None:
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            storage = JournalStorage(JournalFileBackend(str(RunDir(options.storage_dir).search_journal)))
        self.study = optuna.create_study(
            study_name=spec.name, storage=storage, sampler=sampler, load_if_exists=True,
            direction="maximize" if MAXIMIZE[self._objective] else "minimize",
        )
        told = len(self.study.get_trials(deepcopy=False))
        if told:
            # a resumed study: the seed's random start-up would draw what it drew before
            # (every one a configuration already measured); continue from a seed of its own
            self.study.sampler = optuna.samplers.TPESampler(seed=seed + told, n_startup_trials=self.startup, constant_liar=True)
        self.default, self.default_notes = default_point(self._axes, machine_cores())
        self._pending: dict[tuple[int, ...], _Config] = {}  # asked, not yet told
        self._done: dict[tuple[int, ...], Any] = {}  # key -> FrozenTrial, measured and told
        self._by_trial_id: dict[str, _Config] = {}
        self._queue: list[Trial] = []
        self._measured = 0  # configurations asked for measurement: what the budget counts
        self._group: str | None = None  # the server group of the last run proposed
        self._resume()

    # --- the Strategy protocol ---------------------------------------------------------

    @property
    def total(self) -> int:
        return self._budget * self._repeats

    def suggest(self) -> Trial | None:
        if not self._queue:
            self._ask_batch()
        if not self._queue:
            return None
        trial = self._queue.pop(0)
        self._group = trial.group_id
        return trial

    def observe(self, trial: Trial, result: "TrialResult") -> None:
        config = self._by_trial_id.get(trial.trial_id)
        if config is None or config.key not in self._pending:
            return
        config.rows[trial.repeat] = result.row
        if len(config.rows) == len(config.runs):
            self._tell(config)

    def status(self) -> str:
        """The best feasible result so far, relative to TorchServe's default, for the
        progress line."""
        measured = f"{len(self._done)}/{self._budget} configurations told"
        best = self.best()
        if best is None:
            return f"best feasible: none yet ({measured})"
        unit = "ms p99" if self._objective == "latency" else "req/s"
        point = self._point(self._key(best.params))
        where = " ".join(f"{a.name.partition('.')[2] or a.name}={value_label(point[a.name])}" for a in self._axes if a.name in self._dims)
        text = f"best feasible: {best.value:.1f} {unit} ({where})"
        reference = self.default_trial()
        if reference is not None and reference.value and reference.number != best.number and _feasible(reference):
            text += f" {100.0 * (best.value / reference.value - 1):+.0f}% vs TorchServe's default"
        return text

    # --- what the report reads ---------------------------------------------------------

    def best(self) -> Any | None:
        """The best feasible FrozenTrial so far (not counting reused ones)."""
        feasible = [t for t in self._done.values() if _feasible(t)]
        if not feasible:
            return None
        return (max if MAXIMIZE[self._objective] else min)(feasible, key=lambda t: t.value)

    def measured(self) -> list[Trial]:
        """Repeat 0 of every configuration measured and told, this run or before a resume
        (a resumed study does not propose those again; sweeper.search.confirm needs them)."""
        return [make_trial(self._spec, self._point(key), 0) for key in self._done]

    def default_trial(self) -> Any | None:
        return next((t for t in self._done.values() if t.user_attrs.get("default")), None)

    # --- asking --------------------------------------------------------------------------

    def _resume(self) -> None:
        """Rebuild the state from the study's trials: what was told, what was asked and
        never told (proposed again first), what is still to come."""
        state = self._optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        if not trials:
            self.study.enqueue_trial(self._params(self.default), user_attrs={"default": True})
            return
        for frozen in trials:
            if frozen.state == state.WAITING or "reused" in frozen.user_attrs:
                continue
            key = self._key(frozen.params) if set(frozen.params) == set(self._dims) else None
            if frozen.state == state.RUNNING:
                if key is None or key in self._done or key in self._pending:  # never sampled, or a copy
                    self.study.tell(frozen.number, state=state.FAIL, skip_if_finished=True)
                    continue
                self._measured += 1
                config = self._track(self._optuna.trial.Trial(self.study, frozen._trial_id), key)
                self._queue += config.runs  # measured first; the runner reuses repeats on disk
            elif key is not None:
                self._measured += 1
                self._done.setdefault(key, frozen)
        for frozen in trials:  # copies of a configuration: told its result, now or when it comes
            if frozen.state == state.RUNNING and "reused" in frozen.user_attrs:
                key = self._key(frozen.params) if set(frozen.params) == set(self._dims) else None
                alias = self._optuna.trial.Trial(self.study, frozen._trial_id)
                if key in self._pending:
                    self._pending[key].aliases.append(alias)
                elif key in self._done:
                    self._tell_copy(alias, self._done[key])
                else:
                    self.study.tell(frozen.number, state=state.FAIL, skip_if_finished=True)

    def _ask_batch(self) -> None:
        left = self._budget - self._measured
        if left <= 0:
            return
        size = self.startup if self._measured == 0 else BATCH
        if left <= self.polish:
            if self._pending:
                return  # the polish starts from the best result told: wait for the runs in flight
            size = self._enqueue_polish(left) or BATCH
        else:
            size = min(size, left - self.polish)  # TPE's part ends where the polish starts
        configs = []
        for _ in range(min(left, size)):
            config = self._ask()
            if config is None:
                break
            configs.append(config)
        # cost-aware order: the server that is up first, then each server group once,
        # within a group each model setting once; repeats back to back
        first_seen = {c.runs[0].group_id: i for i, c in reversed(list(enumerate(configs)))}
        configs.sort(key=lambda c: (c.runs[0].group_id != self._group, first_seen[c.runs[0].group_id], repr(c.runs[0].model)))
        self._queue += [run for c in configs for run in c.runs]

    def _ask(self) -> _Config | None:
        """A new configuration to measure, or None when every one is measured."""
        for _ in range(self._grid + 16):
            if len(self._done) + len(self._pending) >= self._grid:
                return None
            trial = self.study.ask(self._dims)
            key = self._key(trial.params)
            if key in self._done:
                self._tell_copy(trial, self._done[key], mark=True)
            elif key in self._pending:
                trial.set_user_attr("reused", self._pending[key].trial.number)
                self._pending[key].aliases.append(trial)
            else:
                self._measured += 1
                return self._track(trial, key)
            nearest = self._nearest_unmeasured(key)
            if nearest is not None:
                self.study.enqueue_trial(self._params(self._point(nearest)))
        return None

    def _enqueue_polish(self, left: int) -> int:
        """Enqueue up to `left` unmeasured neighbours of the best configuration told so far
        (the best feasible one; when none is feasible, the nearest miss); how many. Zero
        when it has none left: TPE asks again. Neighbours enqueued before a resume are still
        waiting in the study and are not enqueued twice."""
        state = self._optuna.trial.TrialState
        waiting = len(self.study.get_trials(deepcopy=False, states=(state.WAITING,)))
        if waiting:
            return min(waiting, left)
        centre = self.best() or self._nearest_miss()
        if centre is None:
            return 0
        keys = self._neighbours(self._key(centre.params))
        self._rng.shuffle(keys)
        for key in keys[:left]:
            self.study.enqueue_trial(self._params(self._point(key)), user_attrs={"polish": centre.number})
        return len(keys[:left])

    def _nearest_miss(self) -> Any | None:
        """The told configuration that missed its constraints by the least (None: none told)."""
        told = [t for t in self._done.values() if t.value is not None]
        return min(told, key=lambda t: sum(max(0.0, v) for v in t.constraints.values()), default=None)

    def _neighbours(self, key: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The configurations one step from `key` that are neither measured nor in flight."""
        out = []
        for i, axis in enumerate(self._axes):
            if axis.name not in self._dims:
                continue
            if self._ordered[axis.name]:
                others = [key[i] + d for d in (-1, 1) if 0 <= key[i] + d < len(axis.values)]
            else:
                others = [j for j in range(len(axis.values)) if j != key[i]]
            for j in others:
                other = key[:i] + (j,) + key[i + 1 :]
                if other not in self._done and other not in self._pending:
                    out.append(other)
        return out

    def _track(self, trial: Any, key: tuple[int, ...]) -> _Config:
        point = self._point(key)
        runs = [make_trial(self._spec, point, r) for r in range(self._repeats)]
        config = _Config(trial, key, runs)
        trial.set_user_attr("trial_id", runs[0].trial_id)
        self._pending[key] = config
        self._by_trial_id[runs[0].trial_id] = config
        return config

    # --- telling -------------------------------------------------------------------------

    def _tell(self, config: _Config) -> None:
        state = self._optuna.trial.TrialState
        rows = [config.rows[r] for r in sorted(config.rows)]
        del self._pending[config.key]
        failed = [r for r in rows if r.get("status") != "ok"]
        trial = config.trial
        if failed:
            trial.set_user_attr("error", str(failed[0].get("error") or failed[0].get("status")))
            frozen = self.study.tell(trial, state=state.FAIL)
        else:
            score = config_score(rows, config.runs[0].load.mode, self._slo, self._objective, self._min_success)
            if score.value is None:
                trial.set_user_attr("error", f"no {METRIC[self._objective]} measured (objective {self._objective})")
                frozen = self.study.tell(trial, state=state.FAIL)
            else:
                for name, value in zip(_constraint_names(self._slo, self._objective), score.constraints):
                    trial.set_constraint(name, value)
                frozen = self.study.tell(trial, score.value)
        self._done[config.key] = frozen
        for alias in config.aliases:
            self._tell_copy(alias, frozen)

    def _tell_copy(self, trial: Any, frozen: Any, mark: bool = False) -> None:
        """Tell `trial` (a proposal of a configuration already measured) the stored result."""
        state = self._optuna.trial.TrialState
        if mark:
            trial.set_user_attr("reused", frozen.number)
        if frozen.state != state.COMPLETE:
            self.study.tell(trial, state=state.FAIL)
            return
        for name, value in frozen.constraints.items():
            trial.set_constraint(name, value)
        self.study.tell(trial, frozen.value)

    # --- points --------------------------------------------------------------------------

    def _params(self, point: Mapping[str, object]) -> dict[str, object]:
        params: dict[str, object] = {}
        for axis in self._axes:
            if axis.name not in self._dims:
                continue
            params[axis.name] = param_value(self._dims, axis, point[axis.name])
        return params

    def _key(self, params: Mapping[str, object]) -> tuple[int, ...]:
        key = []
        for axis in self._axes:
            if axis.name not in self._dims:
                key.append(0)
                continue
            choices = getattr(self._dims[axis.name], "choices", None)
            value = params[axis.name]
            key.append(list(choices).index(value) if choices is not None else int(value))  # type: ignore[arg-type]
        return tuple(key)

    def _point(self, key: tuple[int, ...]) -> dict[str, object]:
        return {axis.name: axis.values[i] for axis, i in zip(self._axes, key)}

    def _nearest_unmeasured(self, key: tuple[int, ...]) -> tuple[int, ...] | None:
        """The unmeasured configuration closest to `key` (ordered axes: distance in steps
        over the axis' length; categorical: 1 when different); ties drawn at random."""
        sizes = [len(a.values) for a in self._axes]
        if self._grid <= 200_000:
            candidates = (_key_at(sizes, i) for i in range(self._grid))
        else:
            candidates = (_key_at(sizes, self._rng.randrange(self._grid)) for _ in range(20_000))
        best, best_d = [], math.inf
        for other in candidates:
            if other in self._done or other in self._pending:
                continue
            d = 0.0
            for axis, a, b in zip(self._axes, key, other):
                if a != b:
                    d += abs(a - b) / (len(axis.values) - 1) if self._ordered.get(axis.name) else 1.0
            if d < best_d:
                best, best_d = [other], d
            elif d == best_d:
                best.append(other)
        return self._rng.choice(best) if best else None


def _key_at(sizes: list[int], index: int) -> tuple[int, ...]:
    out = []
    for size in reversed(sizes):
        index, i = divmod(index, size)
        out.append(i)
    return tuple(reversed(out))


def _constraint_names(slo: float | None, objective: str) -> list[str]:
    if objective == "capacity":
        return ["no_rate_met_slo"]
    return ["success_rate_short"] + (["p99_over_slo_ms"] if slo is not None else [])


def _feasible(frozen: Any) -> bool:
    return frozen.value is not None and all(v <= 0 for v in frozen.constraints.values())
