"""`Confirm`: after a search, measure its best few configurations again before one wins.

A search ranks configurations by a handful of short runs each. On a shared machine those
runs move by several percent by themselves (docs/measurements.md#code-host-speed-floor), so
the best-looking configuration of a search is partly the luckiest one: a search's pick can
outrank, on its few runs, a configuration the full grid finds clearly better
(docs/measurements.md#code-search-confirm).

`Confirm` wraps any strategy. When the strategy has nothing more to propose and no run is
in flight, the `top` feasible configurations by the search's objective (mean over their
repeats, sweeper.analysis.objective.config_score) get settings.repeats more repeats each
(repeat numbers settings.repeats and up), in settings.order (interleaved by default: each
pass runs every candidate once, so drift does not favour one). The recommendation then
ranks all trials on all their repeats, as for any sweep: the confirmation changes what is
known about the candidates, not how the winner is chosen.

The extra runs are part of the plan: `total` counts them, and a sweep file that must stay
within a budget of runs sets budget_trials lower by `top` (search_example: 27 + 3 = 30
configurations' worth of runs, 25% of its grid). On resume the search replays the same
results, so the same candidates are chosen and their confirmation runs on disk are reused.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ..analysis.objective import MAXIMIZE, config_score
from ..plan import Trial, default_order, order
from ..rundir import RunDir
from ..spec import SweepSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..trialresult import TrialResult
    from .base import Strategy


class Confirm:
    def __init__(self, inner: "Strategy", spec: SweepSpec, top: int, storage_dir: Path | None = None):
        self.inner = inner
        self.top = top
        self._storage_dir = storage_dir  # the run directory: rows measured before a resume
        self._spec = spec
        self._settings = spec.settings
        self._objective = spec.search.objective
        self._rows: dict[str, dict[int, Mapping[str, object]]] = {}  # trial_id -> repeat -> row
        self._first: dict[str, Trial] = {}  # trial_id -> its repeat-0 trial, in order first seen
        self._in_flight: set[str] = set()
        self._queue: list[Trial] | None = None  # None: still searching
        self._last_group: str | None = None
        self.candidates: list[str] = []  # trial ids being confirmed, best first

    @property
    def total(self) -> int:
        return self.inner.total + self.top * self._settings.repeats

    def suggest(self) -> Trial | None:
        if self._queue is None:
            trial = self.inner.suggest()
            if trial is not None:
                return self._propose(trial)
            if self._in_flight:
                return None  # the search may still propose once these are told
            self._queue = self._plan()
        return self._propose(self._queue.pop(0)) if self._queue else None

    def observe(self, trial: Trial, result: "TrialResult") -> None:
        if result.final:
            self._in_flight.discard(trial.key)
        self._rows.setdefault(trial.trial_id, {})[trial.repeat] = result.row
        self._first.setdefault(trial.trial_id, trial)
        if trial.repeat < self._settings.repeats:
            self.inner.observe(trial, result)

    def status(self) -> str:
        said = self.inner.status() if hasattr(self.inner, "status") else ""
        if self._queue is None or not self.candidates:
            return said
        return f"{said}; confirming the top {len(self.candidates)} with {self._settings.repeats} more repeat(s) each"

    # ----------------------------------------------------------------------------------

    def _propose(self, trial: Trial) -> Trial:
        self._in_flight.add(trial.key)
        self._last_group = trial.group_id
        return trial

    def _recall(self) -> None:
        """After a resume, what the search measured before it: a strategy that keeps its own
        state (optuna) does not propose those configurations again, so they come from its
        `measured()` and their rows from the run directory."""
        for trial in getattr(self.inner, "measured", lambda: [])():
            self._first.setdefault(trial.trial_id, trial)
        if self._storage_dir is None:
            return
        for row in RunDir(self._storage_dir).rows().values():
            trial_id, repeat = str(row.get("trial_id")), row.get("repeat")
            if trial_id in self._first and isinstance(repeat, int) and repeat < self._settings.repeats:
                self._rows.setdefault(trial_id, {}).setdefault(repeat, row)

    def _plan(self) -> list[Trial]:
        """The candidates' extra repeats, in settings.order, starting on the server that is up."""
        self._recall()
        repeats = self._settings.repeats
        scored = []
        for trial_id, trial in self._first.items():
            rows = self._rows[trial_id]
            if sorted(rows) != list(range(repeats)):
                continue  # not every repeat measured (or measured on several nodes)
            score = config_score(
                [rows[r] for r in range(repeats)], trial.load.mode, self._settings.slo_p99_ms,
                self._objective, self._settings.min_success_rate,
            )
            if score.feasible:
                scored.append((score.value, trial))
        if len(scored) < 2:
            return []  # nothing to tell apart
        scored.sort(key=lambda s: s[0], reverse=MAXIMIZE[self._objective])  # stable: ties keep order
        best = [t for _, t in scored[: self.top]]
        self.candidates = [t.trial_id for t in best]
        best.sort(key=lambda t: t.group_id != self._last_group)  # the server that is up first
        extra = [replace(t, repeat=r) for r in range(repeats, 2 * repeats) for t in best]
        return order(extra, self._settings.order or default_order(repeats), self._settings.seed)
