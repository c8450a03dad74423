"""`run_sweep`: the sweep loop. It asks a search strategy for trials, hands them to an
executor, stores each result in the run directory and tells the strategy, until the
strategy has nothing more to propose. It knows neither which strategy (sweeper.search)
nor which executor (sweeper.executors) it runs.

The loop owns what every sweep needs whatever runs it: resume (a trial whose ok result
is already in the run directory is observed, not run again), the failure policy
(settings.max_consecutive_failures), interrupts (SIGINT/SIGTERM: every executor process
stopped, the trials in flight marked 'interrupted'), the identity columns of each row and
the progress line. It writes each trial's files and row and nothing else: the tables
(results.csv, results.md) are the command's to build (sweeper.results).
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .context import SweepContext
from .errors import Interrupted
from .executors import Executor
from .inputs import trial_files
from .plan import Trial
from .search import Strategy
from .trialresult import TrialResult


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
    executor: Executor,
    progress: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """Run trials until the strategy is done; every finished trial is on disk at once.

    Raises Interrupted on SIGINT/SIGTERM after writing what finished; `executor.close()`
    runs however the loop ends.
    """
    run = ctx.run
    done = run.rows()
    total = strategy.total
    restore = _install_sigterm()
    in_flight: dict[str, tuple[Trial, int]] = {}  # trial key -> (trial, seq)
    consecutive = 0
    stopped = ""
    walls: list[float] = []
    index = 0  # position in the strategy's order: the rows' seq
    try:
        while True:
            while not stopped and len(in_flight) < executor.slots:
                trial = strategy.suggest()
                if trial is None:
                    break
                index += 1
                prior = done.get(trial.key)
                if prior is not None and prior.get("status") == "ok":  # resume: measured already
                    strategy.observe(trial, TrialResult(trial, prior, key=trial.key))
                    continue
                # inputs first: an interrupted trial still shows what it was about to run (a
                # target's config.properties and environment are its owner's, not rendered here)
                if ctx.spec.target is None:
                    run.write_files(trial.key, trial_files(trial, ctx.model_store, ctx.spec.settings))
                if progress:
                    line = _progress_line(index, total, trial, walls)
                    best = strategy.status() if hasattr(strategy, "status") else ""  # optional: sweeper.search
                    progress(f"{line}  | {best}" if best else line)
                executor.submit(trial)
                in_flight[trial.key] = (trial, index)
            if not in_flight:
                break
            for result in executor.wait():
                trial, seq = in_flight[result.trial.key]
                if result.final:  # an executor may return a trial in several results
                    del in_flight[result.trial.key]
                row = _complete_row(ctx, trial, seq, dict(result.row))
                run.write_trial(result.dir_key, result.artifacts, row)
                if isinstance(row.get("wall_s"), (int, float)):
                    walls.append(row["wall_s"])
                strategy.observe(trial, replace(result, row=row))
                if row["status"] == "ok":
                    consecutive = 0
                    continue
                consecutive += 1
                if progress:
                    progress(f"  trial {trial.key} failed: {row['error']}")
                if consecutive >= ctx.spec.settings.max_consecutive_failures and not stopped:
                    # trials already in flight still finish and are written
                    stopped = (
                        f"stopped after {consecutive} failed trials in a row "
                        f"(settings.max_consecutive_failures); last error: {row['error']}"
                    )
    except (KeyboardInterrupt, Interrupted) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        executor.close()
        for trial, seq in in_flight.values():
            row = {"status": "interrupted", "error": f"interrupted by signal {int(signum)}", "wall_s": float("nan")}
            run.write_result(trial.key, _complete_row(ctx, trial, seq, row))
        raise Interrupted(int(signum)) from None
    finally:
        executor.close()
        restore()
    rows = sorted(run.rows().values(), key=lambda r: (r.get("seq", 0), str(r.get("trial_id")), r.get("repeat", 0)))
    return SweepOutcome(ctx.run_dir, rows, stopped)


def _complete_row(ctx: SweepContext, trial: Trial, index: int, row: dict) -> dict:
    """The identity and param_*/load_* columns, then what the executor measured."""
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


def _progress_line(index: int, total: int, trial: Trial, walls: list[float]) -> str:
    pct = 100.0 * (index - 1) / max(total, 1)
    eta = ""
    if walls:
        remaining = (total - index + 1) * (sum(walls) / len(walls))
        eta = f" ETA {int(remaining // 60)}m{int(remaining % 60):02d}s"
    load = f"{trial.load.mode} c={trial.load.concurrency}" if trial.load.mode == "closed" else f"{trial.load.mode} rate={trial.load.rate_rps:g}/s"
    if trial.capacity is not None:
        load = trial.capacity.describe()  # says how long it may take: at most max_steps steps
    m = trial.model
    workers = f"workers={m.min_workers} " if m.min_workers else ""
    what = f"batch={m.batch_size} delay={m.max_batch_delay_ms}ms {workers}{load}"
    if trial.request is not None:
        what += f" request={trial.request}"
    if trial.server or trial.env:
        what += " " + " ".join(f"{k}={v}" for k, v in (*trial.server, *trial.env))
    bar = "#" * int(pct / 5) + "." * (20 - int(pct / 5))
    return f"[{bar}] {index}/{total} {pct:3.0f}%{eta}  {what} (r{trial.repeat})"
