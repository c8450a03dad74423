"""The search seam: the `Strategy` protocol the sweep loop sees, and the options every
strategy is built with (`SearchOptions`). Each strategy module imports this, never the
package, so the registry in `sweeper.search` can import the strategies at its top."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from ..plan import Axis, Trial
    from ..spec import SweepSpec
    from ..trialresult import TrialResult


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
