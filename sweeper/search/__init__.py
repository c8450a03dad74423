"""Search strategies: which trial to run next, from the results so far.

The runner sees only the `Strategy` protocol. A strategy proposes trials with `suggest()`
and is told every outcome with `observe()`, failed trials included. `suggest()` returning
None means "nothing to propose now": when no trial is in flight either, the search is over.

Adding a strategy is one module in this package and one line in `STRATEGIES`. Every
entry is built the same way, `STRATEGIES[name](spec, space, options) -> Strategy`, from
the sweep (sweeper.spec.SweepSpec), its axes (sweeper.plan.space) and `SearchOptions`;
a strategy proposes `plan.make_trial(spec, point, repeat)` for points on those axes
(tests/search checks it for every entry). A strategy whose library is heavy imports it
inside its constructor, so that a grid sweep never pays for it.

A strategy may also have `status() -> str`: one line the progress line ends with (a search
says its best feasible result so far); the runner shows it when there is one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import SearchOptions, Strategy, StrategyFactory, search_options
from .confirm import Confirm
from .grid import GridSearch
from .optuna import OptunaSearch
from .random import RandomSearch

if TYPE_CHECKING:  # pragma: no cover
    from ..plan import Axis
    from ..spec import SweepSpec

__all__ = ["STRATEGIES", "SearchOptions", "Strategy", "StrategyFactory", "make_strategy", "search_options"]

STRATEGIES: dict[str, StrategyFactory] = {
    "grid": GridSearch,
    "random": RandomSearch,
    "optuna": OptunaSearch,
}


def make_strategy(spec: "SweepSpec", space: "list[Axis]", options: SearchOptions) -> Strategy:
    """The sweep's strategy (search.strategy), followed by the confirmation of its best
    configurations when search.confirm asks for one (sweeper.search.confirm)."""
    strategy = STRATEGIES[spec.search.strategy](spec, space, options)
    top = spec.search.confirm_top
    return Confirm(strategy, spec, top, options.storage_dir) if top > 0 else strategy
