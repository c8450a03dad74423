"""`SweepContext`: what every executor needs to know of the sweep it runs trials for (the
sweep, the run directory, the model store, the request sets). Below the sweep loop and
the executors, which both use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .payload import RequestSet, builtin_request_set
from .plan import Trial
from .rundir import RunDir
from .spec import SweepSpec


@dataclass(frozen=True)
class SweepContext:
    spec: SweepSpec
    run_dir: Path
    run_id: str
    model_store: Path
    request_body: bytes
    content_type: str = "application/json"
    # the sweep's request sets by label (sweeper.payload), read before any server started;
    # trials without a request label send request_body
    request_sets: Mapping[str, RequestSet] = field(default_factory=dict)
    archive_file: str | None = None  # model.archive's file name in model_store

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)

    def request_set(self, trial: Trial) -> RequestSet:
        if trial.request is None:
            return builtin_request_set(self.request_body, self.content_type)
        return self.request_sets[trial.request]
