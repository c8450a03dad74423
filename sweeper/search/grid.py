"""`GridSearch`: every point of the space once, in plan order, each repeat back to back.

The order is `plan.points(space)`: each server-level group contiguous (one TorchServe
start per group on a local executor), per-model settings changing least often within it.
Outcomes do not change a grid's order: `observe` has nothing to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..plan import Axis, Trial, make_trial, points
from ..spec import SweepSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..executors import TrialResult
    from . import SearchOptions


class GridSearch:
    def __init__(self, spec: SweepSpec, space: list[Axis], options: "SearchOptions | None" = None):
        # a grid needs no seed and spends no budget: the grid is its budget
        repeats = spec.settings.repeats
        self._trials = [make_trial(spec, point, r) for point in points(space) for r in range(repeats)]
        self._next = 0

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
