"""`run_trial` and `run_sweep`: ordering, server reuse, resume, interrupts, failure policy.

Two seams for what comes next:
- a search *strategy* proposes the next trial from the results so far (`GridSearch`
  walks the planned grid; a Bayesian search under a latency SLO fits the same `next`);
- an *executor* runs one trial somewhere (`LocalExecutor`: this machine, one TorchServe
  kept per server-level group; a Ray executor would run groups on cluster nodes).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol

import psutil

from . import answers, results, serverlog
from .analysis.agreement import client_server_columns
from .torchserve import management, metrics, probe
from .errors import Interrupted, LoadError, ManagementError, RequestsFailed, ServerError
from .load import LoadProfile, run_load, summarize, write_records
from .load import windows as load_windows
from .load.types import Stability
from .payload import RequestSet, builtin_request_set
from .plan import ModelParams, Trial
from .inputs import trial_config, trial_env
from .rundir import RunDir
from .torchserve.process import TorchServe, redact
from .spec import SweepSpec

WARMUP_MAX_CONCURRENCY = 16


class Strategy(Protocol):
    def next(self, done: Mapping[str, dict]) -> Trial | None: ...

    @property
    def total(self) -> int: ...


class GridSearch:
    """Proposes every planned trial once, in plan order (grouped by server settings)."""

    def __init__(self, trials: Iterable[Trial]):
        self._trials = list(trials)
        self._i = 0

    @property
    def total(self) -> int:
        return len(self._trials)

    def next(self, done: Mapping[str, dict]) -> Trial | None:
        if self._i >= len(self._trials):
            return None
        trial = self._trials[self._i]
        self._i += 1
        return trial


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

    def request_set(self, trial: Trial) -> RequestSet:
        if trial.request is None:
            return builtin_request_set(self.request_body, self.content_type)
        return self.request_sets[trial.request]


class LocalExecutor:
    """Runs trials on this machine; starts a TorchServe per server-level group and keeps it."""

    def __init__(self, ctx: SweepContext):
        self.ctx = ctx
        self.server: TorchServe | None = None
        self._group: str | None = None
        self._model: ModelParams | None = None
        self._servers_started = 0

    def close(self) -> None:
        if self.server is not None:
            try:
                self.server.stop()
            finally:
                self.server = None
                self._group = None
                self._model = None

    def _ensure_server(self, trial: Trial) -> TorchServe:
        if self.server is not None and self._group == trial.group_id and self.server.alive():
            return self.server
        self.close()
        settings = self.ctx.spec.settings
        self._servers_started += 1
        workdir = RunDir(self.ctx.run_dir).server_dir(f"{trial.group_id}-{self._servers_started}")
        server = TorchServe(
            workdir=workdir,
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
        self._group = trial.group_id
        return server

    def run(self, trial: Trial, trial_dir: Path) -> dict:
        """Run one trial; a failure becomes a row with status 'failed'."""
        started = time.monotonic()
        row: dict = {"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        offsets: dict[str, int] = {}
        try:
            server = self._ensure_server(trial)
            offsets = _log_offsets(server)
            row.update(self._measure(server, trial, trial_dir))
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
            tail = getattr(exc, "log_tail", "") or (self.server.log_tail() if self.server else "")
            row["log_tail"] = tail
            if self.server is not None:
                _copy_logs(self.server, offsets, trial_dir / "logs")
            self.close()  # the next trial starts from a clean server
        else:
            _copy_logs(self.server, offsets, trial_dir / "logs")
            if abandoned_requests(row):
                # TorchServe does not drop a job whose client went away: it stays queued,
                # runs on a worker and adds to the latency counters (BatchAggregator
                # answers it into a closed channel). The next trial gets a fresh server
                # instead of this one's leftovers.
                self.close()
        row["wall_s"] = time.monotonic() - started
        row["overhead_s"] = row["wall_s"] - (row.get("measure_s") or 0.0)
        return row

    def _measure(self, server: TorchServe, trial: Trial, trial_dir: Path) -> dict:
        spec = self.ctx.spec
        if self._model != trial.model:
            self._model = None
            m = trial.model
            management.register_model(
                server,
                m.name,
                batch_size=m.batch_size,
                max_batch_delay_ms=m.max_batch_delay_ms,
                response_timeout_s=m.response_timeout_s,
                min_workers=m.min_workers,
                max_workers=m.max_workers,
                timeout_s=max(120.0, spec.settings.ready_timeout_s),
                url=self.ctx.archive_file,
            )
            self._model = trial.model
        rule = _stability(spec)
        expected_s = (rule.max_duration_s if rule else (trial.load.duration_s or 60.0)) + spec.settings.warmup_s
        server.refresh_tokens(min_valid_s=expected_s + 300.0)
        requests = self.ctx.request_set(trial)
        url = f"{server.inference_url}/predictions/{trial.model.name}"
        auth = server.headers("inference")
        target = requests.target(url, tuple(auth.items()))
        redact_keys = lambda text: redact(text, server.keys)  # noqa: E731
        replay = lambda: answers.first_answers(requests, url, auth, trial.load.timeout_s)  # noqa: E731
        # a payload the handler refuses fails here, before the warm-up and the window
        answers.check_first_answers(replay(), requests.expect_status, redact_keys)
        warmup = _warmup_profile(trial.load, spec.settings.warmup_s) if spec.settings.warmup_s > 0 else None
        window: dict = {}
        stdout_log = server.log_dir / serverlog.STDOUT_LOG

        def before_window() -> None:
            # runs when the engines have warmed up and wait for t0: snapshot, then measure
            window["stdout_log"] = serverlog.settle(stdout_log)  # the warm-up's batches are before it
            server.note_pids()
            window["workers"] = _worker_pids(server)
            window["metrics"] = metrics.scrape(server.metrics_url)
            window["probe"] = probe.Probe(server.root_pid, spec.settings.probe_interval_s).start()

        try:
            run = run_load(target, trial.load, warmup=warmup, on_ready=before_window, stability=rule)
        finally:
            samples = window["probe"].stop() if "probe" in window else []
        before, workers_before = window["metrics"], window["workers"]
        after = metrics.scrape(server.metrics_url) if server.alive() else {}
        write_records(run, trial_dir / "requests.csv.gz")
        # Under a stability rule the figures come from the last windows only; otherwise
        # the whole run, cut into windows afterwards for the confidence intervals.
        outcome = run.windows or load_windows.posthoc(run)
        measured = load_windows.measured(run, run.windows) if run.windows else run
        row = summarize(measured)
        row["client_success_rate"] = answers.success_rate(measured.records["status"], requests.expect_status)
        if trial.request is not None:
            row["request_body_bytes_mean"] = requests.body_bytes_mean
        row.update(load_windows.columns(run, outcome, rule))
        # the server's counters and the process samples span the whole run: its 2xx count,
        # and its client mean for the client-vs-server comparison
        whole = summarize(run) if run.windows else row
        served_all = int(whole["client_ok"])
        row.update(metrics.server_columns(before, after, trial.model.name, served=served_all))
        # served batches from TorchServe's own log, over the whole run like its counters
        end = serverlog.settle(stdout_log)
        row.update(serverlog.batches_between(server.log_dir, trial.model.name, window["stdout_log"], end).columns())
        row.update(client_server_columns({**row, "client_latency_mean_ms": whole["client_latency_mean_ms"]}))
        row.update(probe.summarize(samples, served_all))
        row["measure_s"] = measured.wall_s
        if not server.alive():
            raise ServerError("TorchServe died during the measured window", server.log_tail())
        lost = workers_before - _worker_pids(server)
        if lost:
            raise ServerError(
                f"{len(lost)} backend worker(s) died during the measured window", server.log_tail(), partial_row=row
            )
        answers.check_success(
            measured.records["status"], requests.expect_status, spec.settings.min_success_rate, replay, redact_keys, partial_row=row
        )
        return row


def abandoned_requests(row: dict) -> int:
    """Requests the engine gave up on that TorchServe may still be working on: timeouts and
    connection errors (refused ones were never sent)."""
    return int(row.get("client_timeouts") or 0) + int(row.get("client_connection_errors") or 0)


def _stability(spec: SweepSpec) -> Stability | None:
    s = spec.settings.stability
    if s is None:
        return None
    return Stability(window_s=s.window_s, windows=s.windows, max_cv=s.max_cv, max_duration_s=s.max_duration_s)


def _warmup_profile(load: LoadProfile, warmup_s: float) -> LoadProfile:
    if load.mode == "closed":
        concurrency = load.concurrency
    else:
        concurrency = max(1, min(WARMUP_MAX_CONCURRENCY, int(load.rate_rps * 0.05)))
    concurrency = max(concurrency, load.processes)  # every engine process warms its connections
    return LoadProfile(
        mode="closed", concurrency=concurrency, duration_s=warmup_s, timeout_s=load.timeout_s, processes=load.processes
    )


def _worker_pids(server: TorchServe) -> set[int]:
    out = set()
    for p in server.processes():
        try:
            if "model_service_worker" in " ".join(p.cmdline()):
                out.add(p.pid)
        except psutil.Error:  # the process went away while we looked
            continue
    return out


def _log_offsets(server: TorchServe) -> dict[str, int]:
    out = {}
    for name in ("ts_log.log", "model_log.log", "stdout.log"):
        path = server.log_dir / name
        out[name] = path.stat().st_size if path.exists() else 0
    return out


def _copy_logs(server: TorchServe, offsets: dict[str, int], dest: Path) -> None:
    """The slice of each server log written during this trial (keys redacted)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("ts_log.log", "model_log.log", "stdout.log"):
        path = server.log_dir / name
        if not path.exists():
            continue
        with open(path, "rb") as f:
            f.seek(offsets.get(name, 0))
            text = f.read().decode(errors="replace")
        (dest / name).write_text(redact(text, server.keys))


# --- the sweep -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepOutcome:
    run_dir: Path
    rows: list[dict]
    stopped: str  # "" when every trial ran; otherwise why the sweep stopped early


def _install_sigterm() -> Callable[[], None]:
    def handler(signum, _frame):
        raise Interrupted(signum)

    if sys.platform == "win32":
        return lambda: None
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


def run_sweep(
    ctx: SweepContext,
    strategy: Strategy,
    executor: LocalExecutor | None = None,
    progress: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """Run trials until the strategy is done; every finished trial is on disk at once."""
    executor = executor or LocalExecutor(ctx)
    run = RunDir(ctx.run_dir)
    done = run.rows()
    finished = {k: r for k, r in done.items() if r.get("status") == "ok"}
    total = strategy.total
    restore = _install_sigterm()
    consecutive = 0
    stopped = ""
    walls: list[float] = []
    index = 0
    current: Trial | None = None
    try:
        while (trial := strategy.next(finished)) is not None:
            index += 1
            if trial.key in finished:
                continue
            current = trial
            trial_dir = run.trial_dir(trial.key)
            trial_dir.mkdir(parents=True, exist_ok=True)
            _write_trial_inputs(ctx, trial, trial_dir)
            if progress:
                progress(_progress_line(index, total, trial, walls))
            row = executor.run(trial, trial_dir)
            row = _complete_row(ctx, trial, index, row)
            run.write_result(trial.key, row)
            current = None
            walls.append(row["wall_s"])
            if row["status"] == "ok":
                finished[trial.key] = row
                consecutive = 0
            else:
                consecutive += 1
                if progress:
                    progress(f"  trial {trial.key} failed: {row['error']}")
                if consecutive >= ctx.spec.settings.max_consecutive_failures:
                    stopped = (
                        f"stopped after {consecutive} failed trials in a row "
                        f"(settings.max_consecutive_failures); last error: {row['error']}"
                    )
                    break
    except (KeyboardInterrupt, Interrupted) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        executor.close()
        if current is not None:
            row = {"status": "interrupted", "error": f"interrupted by signal {int(signum)}", "wall_s": float("nan")}
            run.write_result(current.key, _complete_row(ctx, current, index, row))
        results.write_tables(ctx.run_dir)
        raise Interrupted(int(signum)) from None
    finally:
        executor.close()
        restore()
    rows = results.write_tables(ctx.run_dir)
    return SweepOutcome(ctx.run_dir, rows, stopped)


def _complete_row(ctx: SweepContext, trial: Trial, index: int, row: dict) -> dict:
    out = {
        "sweep": ctx.spec.name,
        "run_id": ctx.run_id,
        "seq": index,
        "trial_id": trial.trial_id,
        "repeat": trial.repeat,
        "group_id": trial.group_id,
        **trial.params(),
    }
    out.update(row)
    out.setdefault("error", "")
    return out


def _write_trial_inputs(ctx: SweepContext, trial: Trial, trial_dir: Path) -> None:
    from .torchserve.config import PLACEHOLDER_PORTS

    config = trial_config(trial, PLACEHOLDER_PORTS, ctx.model_store, ctx.spec.settings)
    (trial_dir / "config.properties").write_text(config)
    (trial_dir / "env.json").write_text(json.dumps(trial_env(trial), indent=2))


def _progress_line(index: int, total: int, trial: Trial, walls: list[float]) -> str:
    pct = 100.0 * (index - 1) / max(total, 1)
    eta = ""
    if walls:
        remaining = (total - index + 1) * (sum(walls) / len(walls))
        eta = f" ETA {int(remaining // 60)}m{int(remaining % 60):02d}s"
    load = f"c={trial.load.concurrency}" if trial.load.mode == "closed" else f"rate={trial.load.rate_rps:g}/s"
    m = trial.model
    workers = f"workers={m.min_workers} " if m.min_workers else ""
    what = f"batch={m.batch_size} delay={m.max_batch_delay_ms}ms {workers}{trial.load.mode} {load}"
    if trial.request is not None:
        what += f" request={trial.request}"
    if trial.server or trial.env:
        what += " " + " ".join(f"{k}={v}" for k, v in (*trial.server, *trial.env))
    bar = "#" * int(pct / 5) + "." * (20 - int(pct / 5))
    return f"[{bar}] {index}/{total} {pct:3.0f}%{eta}  {what} (r{trial.repeat})"

