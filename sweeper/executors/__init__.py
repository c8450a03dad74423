"""Executors: where a trial runs. The runner sees only the `Executor` protocol.

An executor takes trials with `submit()` (at most `slots` in flight) and hands back
finished ones from `wait()` as `TrialResult`s (sweeper.trialresult): the flat row plus the trial's files as
bytes. It never writes into the run directory; `sweeper.rundir.RunDir` does that. A local
executor has one slot and runs the trial inside `wait()`; the Ray executor (optional
extra `ray`) has one slot per node of the cluster.

Adding an executor is one module in this package and one line in `EXECUTORS`:
`EXECUTORS[name](ctx) -> Executor`, with the sweep's context (sweeper.context.SweepContext:
spec, run directory, model store, request body; sweeper.context). tests/executors runs one contract over
every entry: a trial comes back as a TrialResult with its files, and close() leaves no
process behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

from ..trialresult import TrialResult
from .attach import AttachExecutor
from .local import LocalExecutor
from .ray import RayExecutor  # imports Ray only when one is created

if TYPE_CHECKING:  # pragma: no cover
    from ..context import SweepContext
    from ..plan import Trial


@runtime_checkable
class Executor(Protocol):
    @property
    def slots(self) -> int:
        """How many trials may be in flight at once."""
        ...

    def submit(self, trial: "Trial") -> None: ...

    def wait(self) -> "list[TrialResult]":
        """Block until at least one result is in; return every result that is in (a trial
        may come back in several results: see TrialResult.final)."""
        ...

    def close(self) -> None:
        """Stop every process this executor started (servers, engines, remote actors)."""
        ...


ExecutorFactory = Callable[["SweepContext"], Executor]

EXECUTORS: dict[str, ExecutorFactory] = {
    "attach": AttachExecutor,  # the sweep's target: a TorchServe someone else runs
    "local": LocalExecutor,
    "ray": RayExecutor,
}
