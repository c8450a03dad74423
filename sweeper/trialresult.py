"""`TrialResult`: one finished run of a trial, as an executor hands it back. Below every
layer that passes it on (executors, the sweep loop, search strategies), so none of them
imports another to name it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from .plan import Trial


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
