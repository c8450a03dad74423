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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from ..executors import TrialResult
    from ..plan import Axis, Trial
    from ..spec import SweepSpec


@runtime_checkable
class Strategy(Protocol):
    @property
    def total(self) -> int:
        """Planned number of runs (trials x repeats) for the progress line: the grid's size,
        or the budget of a search."""
        ...

    def suggest(self) -> "Trial | None": ...

    def observe(self, trial: "Trial", result: "TrialResult") -> None: ...


@dataclass(frozen=True)
class SearchOptions:
    """What a search may be told beyond the sweep itself (a grid uses neither)."""

    seed: int | None = None  # the same seed proposes the same trials; None: settings.seed
    budget: int | None = None  # runs (trials x repeats) it may spend; None: its own default


def search_options(spec: "SweepSpec") -> SearchOptions:
    """The sweep file's `search` group as options: budget_trials configurations, each run
    settings.repeats times."""
    budget = spec.search.budget_trials
    return SearchOptions(seed=spec.search.seed, budget=None if budget is None else budget * spec.settings.repeats)


StrategyFactory = Callable[["SweepSpec", "list[Axis]", SearchOptions], Strategy]

# The registry comes last: a strategy's module may import SearchOptions from here.
from .grid import GridSearch  # noqa: E402
from .random import RandomSearch  # noqa: E402

STRATEGIES: dict[str, StrategyFactory] = {
    "grid": GridSearch,
    "random": RandomSearch,
}
