"""`GridSearch`: every point of the space once per repeat, in the sweep's run order.

The points come in plan order (`plan.points(space)`: each server-level group contiguous,
per-model settings changing least often within it) and are then arranged by
settings.order with settings.seed (`plan.order`: grouped, interleaved or random passes).
Outcomes do not change a grid's order: `observe` has nothing to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..plan import Axis, Trial, default_order, make_trial, order, points
from ..spec import SweepSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..trialresult import TrialResult
    from .base import SearchOptions


class PlannedSearch:
    """A search whose trials are fixed up front (`self._trials`, in run order): it proposes
    them one by one, and outcomes change nothing."""

    _trials: list[Trial]
    _next: int = 0

    @property
    def total(self) -> int:
        return len(self._trials)

    def suggest(self) -> Trial | None:
        if self._next >= len(self._trials):
            return None
        self._next += 1
        return self._trials[self._next - 1]

    def observe(self, trial: Trial, result: "TrialResult") -> None:
        pass


class GridSearch(PlannedSearch):
    def __init__(self, spec: SweepSpec, space: list[Axis], options: "SearchOptions | None" = None):
        # a grid spends no budget (the grid is its budget) and its order is the sweep's
        # (settings.order, settings.seed), so the options change nothing
        settings = spec.settings
        planned = [make_trial(spec, point, r) for point in points(space) for r in range(settings.repeats)]
        self._trials = order(planned, settings.order or default_order(settings.repeats), settings.seed)
