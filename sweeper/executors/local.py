"""`LocalExecutor`: trials on this machine, one at a time.

One slot: `submit` queues the trial and `wait` runs it. One TorchServe per server-level
group (config.properties keys and environment) is started and kept while consecutive
trials share the group. A failed trial stops its server, so the next trial starts from a
clean one. What a trial measures is sweeper.measure's; this module only decides where and
on which server.

Registrations. The model is registered when a trial's per-model settings (batch size,
delay, workers, timeout) differ from the last trial's. With settings.keep_registered (the
default) the registration it replaces is kept, idle, and used again, workers and all, by
a later trial with those settings: an interleaved order returns to every setting once per
pass, and a registration costs seconds of worker start-up, where a kept one costs nothing.
Only one registration can hold the model's name, so the others are registered as NAME_1,
NAME_2, ... (the lowest free suffix); the trial's URL, its /metrics series and its served
batches are read under the name it ran on. Idle workers take no CPU but hold memory
(docs/measurements.md#code-kept-registrations), so kept idle registrations are capped at
KEEP_MEMORY_SHARE of the machine's memory and half of what is available; the least
recently used are unregistered first. Their workers are left out of the trial's proc_* columns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import psutil

from .. import serverlog
from ..errors import LoadError, ManagementError, RequestsFailed, ServerError
from ..measure import abandoned_requests, measure, worker_pids
from ..trial_logs import log_offsets, log_slices
from ..plan import ModelParams, Trial, workers_only
from ..rundir import RunDir
from ..serve import new_server, register, scale
from ..torchserve import management
from ..torchserve.process import TorchServe
from ..trialresult import TrialResult

if TYPE_CHECKING:  # pragma: no cover
    from ..context import SweepContext

# kept idle registrations may hold this share of the machine's memory, and at most
# KEEP_AVAILABLE_SHARE of what would be available without them: the trial that runs next
# must still find room for its own new workers (226 MB each for the MLP) and the engine.
KEEP_MEMORY_SHARE = 0.25
KEEP_AVAILABLE_SHARE = 0.5


@dataclass
class Registration:
    """A registration of the trial model on the current server."""

    name: str  # the name it is registered under
    used: int = 0  # when it was last used (a counter): the least recently used goes first
    rss_bytes: int = 0  # its workers' memory when it last went idle


class LocalExecutor:
    def __init__(self, ctx: "SweepContext"):
        self.ctx = ctx
        self.server: TorchServe | None = None
        self._group: str | None = None
        self._model: ModelParams | None = None  # the settings the last trial ran with
        self._registered: dict[ModelParams, Registration] = {}  # on this server, in use or idle
        self._uses = 0
        self.registrations = 0  # made since this executor was created
        self.scalings = 0  # registrations scaled to other workers in place (settings.scale_workers)
        self._servers_started = 0
        self._fresh = False  # the server has not measured a trial yet (settings.server_warmup_s)
        self._queued: Trial | None = None

    @property
    def slots(self) -> int:
        return 1

    def submit(self, trial: Trial) -> None:
        if self._queued is not None:
            raise RuntimeError("LocalExecutor has one slot: wait() before the next submit()")
        self._queued = trial

    def wait(self) -> list[TrialResult]:
        trial, self._queued = self._queued, None
        return [] if trial is None else [self.run(trial)]

    def close(self) -> None:
        if self.server is not None:
            try:
                self.server.stop()
            finally:
                self.server = None
                self._group = None
                self._model = None
                self._registered = {}

    def run(self, trial: Trial) -> TrialResult:
        """Run one trial; a failure becomes a row with status 'failed'."""
        started = time.monotonic()
        row: dict = {"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        settings = self.ctx.spec.settings
        files: dict[str, bytes] = {}  # its inputs (config.properties, env.json) the sweep loop wrote before
        offsets: dict[str, int] = {}
        try:
            server = self._ensure_server(trial)
            offsets = log_offsets(server)
            registered, scaled = self.registrations, self.scalings
            name = self._ensure_model(server, trial.model)
            row["server_model_name"] = name
            row["server_registered"] = int(self.registrations > registered)  # this trial registered it
            row["server_scaled"] = int(self.scalings > scaled)  # this trial scaled its workers in place
            others = self._other_workers(server, name)
            fresh, self._fresh = self._fresh, False  # warmed up once, whatever the outcome
            row.update(
                measure(
                    server,
                    trial,
                    settings,
                    self.ctx.request_set(trial),
                    files,
                    fresh_server=fresh,
                    model_name=name,
                    other_workers=others,
                    fresh_registration=bool(row["server_registered"]),
                )
            )
            row["status"] = "ok"
            row["error"] = ""
        except (ServerError, ManagementError, LoadError, RequestsFailed) as exc:
            row.update(getattr(exc, "partial_row", None) or {})
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            worker_failed = isinstance(exc, ManagementError) or (isinstance(exc, ServerError) and "worker" in error)
            if worker_failed and self.server is not None:
                # a worker that died (a missing import while loading): say why, not "not ready"
                cause = serverlog.last_worker_error(self.server.log_dir, offsets.get(serverlog.MODEL_LOG, 0))
                if cause:
                    error = f"worker error: {cause} ({error})"
            row.update(status="failed", error=error)
            row["log_tail"] = getattr(exc, "log_tail", "") or (self.server.log_tail() if self.server else "")
            if self.server is not None:
                files.update(log_slices(self.server, offsets, whole=True))
            self.close()  # the next trial starts from a clean server
        else:
            files.update(log_slices(server, offsets))
            if abandoned_requests(row):
                # TorchServe does not drop a job whose client went away: it stays queued,
                # runs on a worker and adds to the latency counters (BatchAggregator
                # answers it into a closed channel). The next trial gets a fresh server
                # instead of this one's leftovers.
                self.close()
        row["wall_s"] = time.monotonic() - started
        row["overhead_s"] = row["wall_s"] - (row.get("measure_s") or 0.0)
        return TrialResult(trial, row, files, trial.key)

    def _ensure_server(self, trial: Trial) -> TorchServe:
        if self.server is not None and self._group == trial.group_id and self.server.alive():
            return self.server
        self.close()
        settings = self.ctx.spec.settings
        self._servers_started += 1
        workdir = RunDir(self.ctx.run_dir).server_dir(f"{trial.group_id}-{self._servers_started}")
        server = new_server(trial, settings, self.ctx.model_store, workdir)
        self.server = server  # set before start so close() reaps a half-started server
        server.start()
        self._fresh = True
        self._group = trial.group_id
        return server

    def _ensure_model(self, server: TorchServe, model: ModelParams) -> str:
        """Make `model`'s settings the registered ones the trial runs on: the last trial's,
        a kept registration, or a new one. Returns the name it is registered under."""
        self._uses += 1
        if self._model == model:
            self._registered[model].used = self._uses
            return self._registered[model].name
        previous, self._model = self._model, None  # a failed registration leaves no model we could trust
        settings = self.ctx.spec.settings
        keep = settings.keep_registered
        if model not in self._registered and settings.scale_workers and previous in self._registered \
                and workers_only(previous, model):
            # the same registration with other workers: scaled in place, no new registration
            reg = self._registered.pop(previous)
            scale(server, reg.name, model, settings)
            self.scalings += 1
            self._registered[model] = reg
            reg.used = self._uses
            self._model = model
            return reg.name
        if previous is not None and keep:
            self._registered[previous].rss_bytes = _rss(server, self._registered[previous].name)
        self._trim(server, model, keep)
        reg = self._registered.get(model)
        if reg is None:
            taken = {r.name for r in self._registered.values()}
            name = model.name
            suffix = 0
            while name in taken:
                suffix += 1
                name = f"{model.name}_{suffix}"
            # the archive under whatever name it is registered (default: <name>.mar)
            url = self.ctx.archive_file or (None if name == model.name else f"{model.name}.mar")
            register(server, name, model, settings, url)
            self.registrations += 1
            reg = self._registered[model] = Registration(name)
        reg.used = self._uses
        self._model = model
        return reg.name

    def _trim(self, server: TorchServe, coming: ModelParams, keep: bool) -> None:
        """Unregister idle registrations, least recently used first, until the idle ones'
        memory is within the budget (keep_budget); all of them without `keep`. The one
        `coming` into use does not count."""
        idle = sorted((m for m in self._registered if m != coming), key=lambda m: self._registered[m].used)
        held = sum(self._registered[m].rss_bytes for m in idle)
        budget = keep_budget(held) if keep else 0
        for m in idle:
            if keep and held <= budget:
                break
            management.unregister_model(server, self._registered[m].name)
            held -= self._registered.pop(m).rss_bytes

    def _other_workers(self, server: TorchServe, name: str) -> frozenset[int]:
        """The workers of the idle registrations (none when there are none)."""
        if len(self._registered) <= 1:
            return frozenset()
        return frozenset(worker_pids(server) - _registered_workers(server, name))


def _registered_workers(server: TorchServe, name: str) -> set[int]:
    """The pids of the workers of the model registered as `name`."""
    workers = management.describe_model(server, name).get("workers", [])
    return {int(w["pid"]) for w in workers if w.get("pid")}


def _rss(server: TorchServe, name: str) -> int:
    """The memory (RSS, bytes) of the workers of the model registered as `name`."""
    total = 0
    for pid in _registered_workers(server, name):
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:  # the worker went away: it holds nothing
            continue
    return total


def keep_budget(held: int) -> int:
    """Bytes that idle registrations may hold: KEEP_MEMORY_SHARE of the machine's memory,
    and not more than half of what would be available without them (`held` bytes)."""
    memory = psutil.virtual_memory()
    return int(min(KEEP_MEMORY_SHARE * memory.total, KEEP_AVAILABLE_SHARE * (memory.available + held)))
