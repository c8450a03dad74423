"""Search strategies: which trial to run next, from the results so far.

The runner sees only the `Strategy` protocol. A strategy proposes trials with `suggest()`
and is told every outcome with `observe()`, failed trials included. `suggest()` returning
None means "nothing to propose now": when no trial is in flight either, the search is over.

Adding a strategy is one module in this package and one line in `STRATEGIES`.
(Issue 13 wires the runner to this protocol; grid moves here as `grid.py`.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from ..executors import TrialResult
    from ..plan import Trial


@runtime_checkable
class Strategy(Protocol):
    @property
    def total(self) -> int:
        """Planned number of runs (trials x repeats) for the progress line: the grid's size,
        or the budget of a search."""
        ...

    def suggest(self) -> "Trial | None": ...

    def observe(self, trial: "Trial", result: "TrialResult") -> None: ...
