"""Executors: where a trial runs. The runner sees only the `Executor` protocol.

An executor takes trials with `submit()` (at most `slots` in flight) and hands back
finished ones from `wait()` as `TrialResult`s: the flat row plus the trial's files as
bytes. It never writes into the run directory; `sweeper.rundir.RunDir` does that. A local
executor has one slot and runs the trial inside `wait()`; the Ray executor (optional
extra `ray`) has one slot per node of the cluster.

Adding an executor is one module in this package and one line in `EXECUTORS`:
`EXECUTORS[name](ctx) -> Executor`, with the sweep's context (sweeper.runner.SweepContext:
spec, run directory, model store, request body). tests/executors runs one contract over
every entry: a trial comes back as a TrialResult with its files, and close() leaves no
process behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from ..plan import Trial
    from ..runner import SweepContext


@dataclass(frozen=True)
class TrialResult:
    """One finished run of one trial (and repeat).

    row:       the flat result row (status, error, client_*, server_*, proc_*, ...); the
               runner adds the identity and param_* columns.
    artifacts: file name relative to the trial's directory -> bytes ("config.properties",
               "env.json", "requests.csv.gz", "logs/ts_log.log", ...).
    key:       the trial's directory name; `trial.key` unless an executor runs the same
               trial more than once (one per node: "<trial_id>-r<repeat>@<node>", or a
               lost attempt that is retried elsewhere).
    final:     the last result of the submitted trial: the runner counts the trial as
               finished. An executor that runs a trial on every node, or retries it after
               its node died, returns the earlier results with final=False.
    """

    trial: "Trial"
    row: Mapping[str, object]
    artifacts: Mapping[str, bytes] = field(default_factory=dict)
    key: str = ""
    final: bool = True

    @property
    def status(self) -> str:
        return str(self.row.get("status", ""))

    @property
    def dir_key(self) -> str:
        return self.key or self.trial.key


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

# The registry comes last: an executor's module imports TrialResult from here.
from .local import LocalExecutor  # noqa: E402
from .ray import RayExecutor  # noqa: E402  (imports Ray only when one is created)

EXECUTORS: dict[str, ExecutorFactory] = {
    "local": LocalExecutor,
    "ray": RayExecutor,
}
