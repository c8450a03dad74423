"""`RandomSearch`: a seeded sample of the grid's points, without replacement.

The baseline every smarter search has to beat: `budget_trials` configurations drawn
uniformly from the product of the axes (by index, so a grid of millions is never built),
each run `settings.repeats` times. The sample is then put in plan order and arranged by
settings.order like a grid, so server restarts stay as few as a grid of that size needs.
The same seed draws the same sample, which is what lets `--resume` reuse what a killed
run already measured. Outcomes do not change the sample: `observe` has nothing to do.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from ..plan import Axis, default_order, make_trial, order
from ..spec import SweepSpec
from .grid import PlannedSearch

if TYPE_CHECKING:  # pragma: no cover
    from .base import SearchOptions


def point_at(axes: list[Axis], index: int) -> dict[str, object]:
    """The point with this index in plan order (the last axis varying fastest)."""
    point: dict[str, object] = {}
    for axis in reversed(axes):
        index, i = divmod(index, len(axis.values))
        point[axis.name] = axis.values[i]
    return {a.name: point[a.name] for a in axes}


class RandomSearch(PlannedSearch):
    def __init__(self, spec: SweepSpec, space: list[Axis], options: "SearchOptions"):
        settings = spec.settings
        size = math.prod(len(a.values) for a in space)
        configurations = size if options.budget is None else max(1, options.budget // settings.repeats)
        seed = options.seed if options.seed is not None else settings.seed
        picked = sorted(random.Random(seed).sample(range(size), min(configurations, size)))
        planned = [make_trial(spec, point_at(space, i), r) for i in picked for r in range(settings.repeats)]
        self._trials = order(planned, settings.order or default_order(settings.repeats), settings.seed)
