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

from dataclasses import dataclass
from pathlib import Path
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
    """What a search may be told beyond the sweep itself (a grid uses none of it)."""

    seed: int | None = None  # the same seed proposes the same trials; None: settings.seed
    budget: int | None = None  # runs (trials x repeats) it may spend; None: its own default
    # where a search keeps its state so that `--resume` continues it (the run directory);
    # None: in memory (a replay, a test)
    storage_dir: Path | None = None


def search_options(spec: "SweepSpec", storage_dir: Path | None = None) -> SearchOptions:
    """The sweep file's `search` group as options: budget_trials configurations, each run
    settings.repeats times; a search's state kept in `storage_dir` (the run directory)."""
    budget = spec.search.budget_trials
    return SearchOptions(
        seed=spec.search.seed, budget=None if budget is None else budget * spec.settings.repeats, storage_dir=storage_dir
    )


StrategyFactory = Callable[["SweepSpec", "list[Axis]", SearchOptions], Strategy]

# The registry comes last: a strategy's module may import SearchOptions from here.
from .grid import GridSearch  # noqa: E402
from .optuna import OptunaSearch  # noqa: E402
from .random import RandomSearch  # noqa: E402

STRATEGIES: dict[str, StrategyFactory] = {
    "grid": GridSearch,
    "random": RandomSearch,
    "optuna": OptunaSearch,
}

from .confirm import Confirm  # noqa: E402


def make_strategy(spec: "SweepSpec", space: "list[Axis]", options: SearchOptions) -> Strategy:
    """The sweep's strategy (search.strategy), followed by the confirmation of its best
    configurations when search.confirm asks for one (sweeper.search.confirm)."""
    strategy = STRATEGIES[spec.search.strategy](spec, space, options)
    top = spec.search.confirm_top
    return Confirm(strategy, spec, top, options.storage_dir) if top > 0 else strategy
