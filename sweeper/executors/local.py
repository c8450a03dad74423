"""`LocalExecutor`: trials on this machine, one at a time.

One slot: `submit` queues the trial and `wait` runs it. One TorchServe per server-level
group (config.properties keys and environment) is started and kept while consecutive
trials share the group; the model is re-registered only when the per-model settings
change. A failed trial stops its server, so the next trial starts from a clean one.
What a trial measures is sweeper.measure's; this module only decides where and on which
server.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from .. import serverlog
from ..errors import LoadError, ManagementError, RequestsFailed, ServerError
from ..inputs import trial_config, trial_env, trial_files
from ..measure import abandoned_requests, log_offsets, log_slices, measure
from ..plan import ModelParams, Trial
from ..rundir import RunDir
from ..torchserve import management
from ..torchserve.process import TorchServe
from . import TrialResult

if TYPE_CHECKING:  # pragma: no cover
    from ..runner import SweepContext


class LocalExecutor:
    def __init__(self, ctx: "SweepContext"):
        self.ctx = ctx
        self.server: TorchServe | None = None
        self._group: str | None = None
        self._model: ModelParams | None = None
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

    def run(self, trial: Trial) -> TrialResult:
        """Run one trial; a failure becomes a row with status 'failed'."""
        started = time.monotonic()
        row: dict = {"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        settings = self.ctx.spec.settings
        files = trial_files(trial, self.ctx.model_store, settings)
        offsets: dict[str, int] = {}
        try:
            server = self._ensure_server(trial)
            offsets = log_offsets(server)
            self._ensure_model(server, trial.model)
            fresh, self._fresh = self._fresh, False  # warmed up once, whatever the outcome
            row.update(measure(server, trial, settings, self.ctx.request_set(trial), files, fresh_server=fresh))
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
                files.update(log_slices(self.server, offsets))
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
        server = TorchServe(
            workdir=RunDir(self.ctx.run_dir).server_dir(f"{trial.group_id}-{self._servers_started}"),
            render=lambda ports: trial_config(trial, ports, self.ctx.model_store, settings),
            env=trial_env(trial),
            model_store=self.ctx.model_store,
            host=settings.host,
            token_auth=settings.token_auth,
            ready_timeout_s=settings.ready_timeout_s,
            cpu_affinity=tuple(settings.server_cpus) if settings.server_cpus else None,
            base_port=settings.base_port,
        )
        self.server = server  # set before start so close() reaps a half-started server
        server.start()
        self._fresh = True
        self._group = trial.group_id
        return server

    def _ensure_model(self, server: TorchServe, model: ModelParams) -> None:
        """(Re)register the model when its per-model settings differ from the last ones."""
        if self._model == model:
            return
        self._model = None  # a failed registration leaves no model we could trust
        management.register_model(
            server,
            model.name,
            batch_size=model.batch_size,
            max_batch_delay_ms=model.max_batch_delay_ms,
            response_timeout_s=model.response_timeout_s,
            min_workers=model.min_workers,
            max_workers=model.max_workers,
            timeout_s=max(120.0, self.ctx.spec.settings.ready_timeout_s),
            url=self.ctx.archive_file,
        )
        self._model = model
