"""`AttachExecutor`: trials on a TorchServe someone else runs (the sweep's `target`).

One slot, like the local executor, and the same measurement (sweeper.measure), but it
starts, stops and restarts nothing: only per-model settings change between trials, and only
through the management API.

Which registration a trial runs on:

- `model.registered: NAME` (a model the target already serves): a trial whose batch size,
  batch delay and response timeout are NAME's own runs on NAME, its workers scaled in place
  (PUT /models/NAME) when they differ. TorchServe 0.12 cannot change the other three in
  place, so any other trial runs on a copy the sweeper registers from NAME's archive (its
  modelUrl) under a name of its own, NAME_sweeper_<n>.
- otherwise (`model.name` / `model.archive`: an archive in the target's model store): a
  registration of the sweeper's own, MODEL_sweeper_<n>.

One registration of the sweeper's own at a time: a trial with other workers but the same
batching scales it in place; any other change unregisters it and registers the next one.
Moving off NAME gives NAME its workers back at once, so the owner's model holds no more
than it did for longer than the trials that need it.

`restore` puts the target back as the run directory's snapshot found it (target_before.json):
every registration spelled as the sweeper's own (`..._sweeper_<n>`) that the snapshot does
not list is unregistered, and NAME gets its snapshot's workers back. It looks only at the
target and the snapshot, so it also cleans up after a sweeper that was SIGKILLed, when
`sweeper run --resume` runs it. A model the sweep does not name is never scaled or
unregistered. `close()` restores.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from .. import serverlog
from ..errors import LoadError, ManagementError, RequestsFailed, ServerError, SweeperError
from ..measure import abandoned_requests, measure, worker_pids
from ..plan import ModelParams, Trial
from ..serve import REGISTER_TIMEOUT_FLOOR_S
from ..torchserve import attached, management
from ..torchserve.attached import AttachedServer
from ..trialresult import TrialResult

if TYPE_CHECKING:  # pragma: no cover
    from ..context import SweepContext
    from ..spec import SweepSpec


@dataclass(frozen=True)
class Batching:
    """The settings TorchServe 0.12 fixes at registration."""

    batch_size: int
    max_batch_delay_ms: int
    response_timeout_s: int | None  # None: whatever the registration has


@dataclass(frozen=True)
class Workers:
    min_workers: int | None  # None: TorchServe's default at registration
    max_workers: int | None


def batching_of(model: ModelParams) -> Batching:
    return Batching(model.batch_size, model.max_batch_delay_ms, model.response_timeout_s)


def workers_of(model: ModelParams) -> Workers:
    if model.min_workers is None:
        return Workers(None, None)
    return Workers(model.min_workers, model.max_workers or model.min_workers)


def registered_batching(version: dict) -> Batching:
    """A snapshot's version (sweeper.torchserve.attached.compact) as Batching."""
    return Batching(int(version["batchSize"]), int(version["maxBatchDelay"]),
                    int(version["responseTimeout"]) if version.get("responseTimeout") is not None else None)


def registered_workers(version: dict) -> Workers:
    return Workers(int(version["minWorkers"]), int(version["maxWorkers"]))


def same_batching(want: Batching, have: Batching) -> bool:
    return (want.batch_size, want.max_batch_delay_ms) == (have.batch_size, have.max_batch_delay_ms) and (
        have.response_timeout_s is None or want.response_timeout_s == have.response_timeout_s
    )


def server_for(spec: "SweepSpec") -> AttachedServer:
    """The sweep's target as a server (addresses resolved, key file as the sweep names it)."""
    t = spec.target
    return AttachedServer(t.inference, t.management_url, t.metrics_url, t.key_file)


def default_version(before: dict, name: str) -> dict | None:
    """The snapshot's first listed version of `name` (None: not registered then)."""
    found = before.get("models", {}).get(name) or []
    return found[0] if found else None


def timeout_s(settings) -> float:
    return max(REGISTER_TIMEOUT_FLOOR_S, settings.ready_timeout_s)


def restore(server: AttachedServer, before: dict, registered: str | None, wait_s: float = REGISTER_TIMEOUT_FLOOR_S) -> list[str]:
    """Put the target back as `before` found it (see the module docstring); returns what
    it did, one phrase each. Raises ManagementError when the target does not answer."""
    done: list[str] = []
    known = set(before.get("models", {}))
    for name in attached.model_names(server):
        if attached.is_own_name(name) and name not in known:
            management.unregister_model(server, name, timeout_s=wait_s)
            done.append(f"unregistered {name}")
    if registered is not None:
        was = default_version(before, registered)
        now = attached.describe(server, registered)
        if was is not None and now is not None:
            want, have = registered_workers(was), Workers(now.get("minWorkers"), now.get("maxWorkers"))
            if want != have:
                attached.scale(server, registered, want.min_workers, want.max_workers, wait_s)
                done.append(f"{registered} back to {want.min_workers}-{want.max_workers} workers")
    return done


@dataclass
class Own:
    """The sweeper's registration on the target."""

    name: str
    batching: Batching
    workers: Workers


class AttachExecutor:
    def __init__(self, ctx: "SweepContext"):
        self.ctx = ctx
        self.server = server_for(ctx.spec)
        self.before = ctx.run.target_before()
        self.registered = ctx.spec.model.registered  # the owner's model the sweep names, if any
        was = default_version(self.before, self.registered) if self.registered else None
        if self.registered and was is None:
            raise ManagementError(f"{ctx.run.target_before_json}: has no model {self.registered!r}")
        self._was = was
        self._registered_workers = registered_workers(was) if was else None  # as they are now
        self._own: Own | None = None
        self._count = 0
        self._fresh = True  # the first trial gets the server warm-up (settings.server_warmup_s)
        self._queued: Trial | None = None
        self.registrations = 0
        self.scalings = 0
        self.restored: list[str] = []
        self.restore_problem = ""

    @property
    def slots(self) -> int:
        return 1

    def submit(self, trial: Trial) -> None:
        if self._queued is not None:
            raise RuntimeError("AttachExecutor has one slot: wait() before the next submit()")
        self._queued = trial

    def wait(self) -> list[TrialResult]:
        trial, self._queued = self._queued, None
        return [] if trial is None else [self.run(trial)]

    def close(self) -> None:
        """Restore the target (see `restore`). A target that does not answer is not an
        error here: `restore_problem` says what failed, and restoring is tried again when
        the run ends (sweeper.attach.Visit.finish) and by `sweeper run --resume`."""
        self._own = None
        self._registered_workers = registered_workers(self._was) if self._was else None
        try:
            self.restored += restore(self.server, self.before, self.registered, timeout_s(self.ctx.spec.settings))
            self.restore_problem = ""
        except SweeperError as exc:
            self.restore_problem = str(exc)

    def run(self, trial: Trial) -> TrialResult:
        """Run one trial; a failure becomes a row with status 'failed'."""
        started = time.monotonic()
        row: dict = {"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        settings = self.ctx.spec.settings
        files: dict[str, bytes] = {}
        try:
            registrations, scalings = self.registrations, self.scalings
            name = self._ensure_model(trial.model)
            row["server_model_name"] = name
            row["server_registered"] = int(self.registrations > registrations)  # this trial registered it
            row["server_scaled"] = int(self.scalings > scalings)  # this trial scaled its workers in place
            others = self._other_workers(name)
            fresh, self._fresh = self._fresh, False
            row.update(
                measure(
                    self.server, trial, settings, self.ctx.request_set(trial), files,
                    # as on servers of the sweeper's own: a registration gets its warm-up, a scaling not
                    fresh_server=fresh, model_name=name, other_workers=others,
                    fresh_registration=bool(row["server_registered"]),
                )
            )
            row["status"] = "ok"
            row["error"] = ""
        except (ServerError, ManagementError, LoadError, RequestsFailed) as exc:
            row.update(getattr(exc, "partial_row", None) or {})
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            row.update(status="failed", error=error, log_tail="")
            self._drop_own()  # the next trial starts on a clean registration
        else:
            if abandoned_requests(row):
                # requests the engine gave up on stay queued on the registration: drop it
                # (a registration of the owner's is theirs to keep)
                self._drop_own()
        _unknown_here(row)
        row["wall_s"] = time.monotonic() - started
        row["overhead_s"] = row["wall_s"] - (row.get("measure_s") or 0.0)
        return TrialResult(trial, row, files, trial.key)

    # --- registrations -------------------------------------------------------------------

    def _ensure_model(self, model: ModelParams) -> str:
        """The name of the registration the trial runs on, with the trial's settings
        (registered, or scaled in place, when they differ: `registrations`, `scalings`)."""
        wait = timeout_s(self.ctx.spec.settings)
        want_b, want_w = batching_of(model), workers_of(model)
        if self._was is not None and same_batching(want_b, registered_batching(self._was)):
            self._drop_own()
            want = want_w if want_w.min_workers is not None else registered_workers(self._was)
            if want == self._registered_workers:
                return self.registered
            self._registered_workers = None  # unknown until the scale returns
            attached.scale(self.server, self.registered, want.min_workers, want.max_workers, wait)
            self._registered_workers = want
            self.scalings += 1
            return self.registered
        self._give_back_registered(wait)
        own = self._own
        if own is not None and own.batching == want_b:
            if own.workers == want_w or want_w.min_workers is None:
                return own.name
            attached.scale(self.server, own.name, want_w.min_workers, want_w.max_workers, wait)
            self._own = Own(own.name, own.batching, want_w)
            self.scalings += 1
            return own.name
        self._drop_own()
        name = self._next_name()
        self._own = Own(name, want_b, want_w)  # before the call: a half-made registration is dropped too
        management.register_model(
            self.server, name,
            batch_size=model.batch_size, max_batch_delay_ms=model.max_batch_delay_ms,
            response_timeout_s=model.response_timeout_s, min_workers=model.min_workers,
            max_workers=model.max_workers, timeout_s=wait, url=self._url(),
        )
        self.registrations += 1
        return name

    def _url(self) -> str:
        """The archive the sweeper registers: the owner's model's (its modelUrl), the
        sweep's archive, or MODEL.mar in the target's model store."""
        if self._was is not None:
            return str(self._was["modelUrl"])
        return self.ctx.archive_file or f"{self.ctx.spec.model.name}.mar"

    def _next_name(self) -> str:
        taken = set(attached.model_names(self.server)) | set(self.before.get("models", {}))
        base = self.registered or self.ctx.spec.model.name
        while True:
            self._count += 1
            name = attached.own_name(base, self._count)
            if name not in taken:
                return name

    def _drop_own(self) -> None:
        """Unregister the sweeper's registration, if any; a target that does not answer is
        left to the final restore."""
        own, self._own = self._own, None
        if own is None:
            return
        try:
            management.unregister_model(self.server, own.name)
        except SweeperError:
            pass

    def _give_back_registered(self, wait: float) -> None:
        """The owner's model back to its snapshot's workers when a trial scaled it."""
        if self._was is None:
            return
        was = registered_workers(self._was)
        if self._registered_workers != was:
            self._registered_workers = None
            attached.scale(self.server, self.registered, was.min_workers, was.max_workers, wait)
            self._registered_workers = was

    def _other_workers(self, name: str) -> frozenset[int]:
        """The backend workers of every other model on the target: out of the trial's
        proc_* columns and of the check that no worker died (none when its processes are
        not on this machine)."""
        if not self.server.root_pid:
            return frozenset()
        return frozenset(worker_pids(self.server) - attached.worker_pids(attached.describe(self.server, name)))


def _unknown_here(row: dict) -> None:
    """Figures an attached server cannot give are empty, never zero: the served batches
    come from a server log the sweeper does not have; the proc_* columns are already NaN
    where its processes are not on this machine (probe.summarize of no samples)."""
    for key in serverlog.Batches(0, 0).columns():
        row[key] = math.nan
