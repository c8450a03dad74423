"""run_sweep's contract, with a fake executor and a scripted strategy (no TorchServe):
every result written through the run directory and observed, resume without rerunning,
the consecutive-failure stop, interrupts, partial rows, more than one slot."""

from __future__ import annotations

import json
import signal

import pandas as pd
import pytest

from sweeper.errors import Interrupted
from sweeper.trialresult import TrialResult
from sweeper.plan import expand
from sweeper.rundir import RunDir
from sweeper import results
from sweeper.context import SweepContext
from sweeper.runner import run_sweep
from sweeper.sweepfile import parse_sweep


def a_spec(**settings):
    doc = {
        "name": "fake",
        "model": {"name": "mlp", "batch_size": [1, 2, 4, 8]},
        "load": {"mode": "closed", "concurrency": 1, "duration_s": 1},
        "settings": {"max_consecutive_failures": 3, **settings},
    }
    return parse_sweep(doc, "fake.yaml")


def a_context(tmp_path, spec):
    return SweepContext(spec=spec, run_dir=tmp_path, run_id="fake-run", model_store=tmp_path, request_body=b"[]")


class Scripted:
    """Proposes the given trials in order; records what it was told."""

    def __init__(self, trials):
        self.trials = list(trials)
        self.observed: list[tuple[str, str]] = []

    @property
    def total(self):
        return len(self.trials)

    def suggest(self):
        return self.trials.pop(0) if self.trials else None

    def observe(self, trial, result):
        assert result.trial == trial
        self.observed.append((trial.key, result.status))


class FakeExecutor:
    """Finishes every submitted trial at the next wait(); `outcome(trial)` says how: a
    status, or an exception to raise from wait() (an interrupt arriving mid-trial)."""

    def __init__(self, outcome=lambda trial: "ok", slots=1):
        self.outcome = outcome
        self._slots = slots
        self.queue = []
        self.submitted = []
        self.most_in_flight = 0
        self.closed = 0

    @property
    def slots(self):
        return self._slots

    def submit(self, trial):
        assert len(self.queue) < self._slots, "more trials in flight than slots"
        self.queue.append(trial)
        self.submitted.append(trial.key)
        self.most_in_flight = max(self.most_in_flight, len(self.queue))

    def wait(self):
        done, self.queue = self.queue, []
        out = []
        for trial in done:
            status = self.outcome(trial)
            if isinstance(status, BaseException):
                raise status
            row = {"status": status, "error": "" if status == "ok" else "it broke", "wall_s": 0.1,
                   "client_throughput_rps": 100.0 * trial.model.batch_size}
            out.append(TrialResult(trial, row, {"logs/ts_log.log": b"log of " + trial.key.encode()}, trial.key))
        return out

    def close(self):
        self.closed += 1


def test_every_trial_is_run_written_and_observed(tmp_path):
    spec = a_spec()
    trials = expand(spec)
    strategy, executor = Scripted(trials), FakeExecutor()
    outcome = run_sweep(a_context(tmp_path, spec), strategy, executor)
    assert outcome.stopped == "" and executor.closed >= 1
    assert executor.submitted == [t.key for t in trials]
    assert strategy.observed == [(t.key, "ok") for t in trials]
    run = RunDir(tmp_path)
    for seq, t in enumerate(trials, start=1):
        row = run.result(t.key)
        assert (row["trial_id"], row["seq"], row["status"], row["param_model_batch_size"]) == (t.trial_id, seq, "ok", t.model.batch_size)
        files = sorted(str(p.relative_to(run.trial_dir(t.key))) for p in run.trial_dir(t.key).rglob("*") if p.is_file())
        assert files == ["config.properties", "env.json", "logs/ts_log.log", "result.json"]
    assert not run.results_csv.exists()  # the loop writes trials; the tables are the command's
    results.write_tables(tmp_path)
    assert len(pd.read_csv(run.results_csv)) == len(trials)


def test_resume_observes_ok_results_without_running_them_and_reruns_the_rest(tmp_path):
    spec = a_spec()
    trials = expand(spec)
    run = RunDir(tmp_path)
    run.write_result(trials[0].key, {"status": "ok", "trial_id": trials[0].trial_id, "seq": 1, "client_throughput_rps": 7.0})
    run.write_result(trials[1].key, {"status": "failed", "trial_id": trials[1].trial_id, "seq": 2})
    strategy, executor = Scripted(trials), FakeExecutor()
    run_sweep(a_context(tmp_path, spec), strategy, executor)
    assert executor.submitted == [t.key for t in trials[1:]]
    assert strategy.observed == [(t.key, "ok") for t in trials]  # the stored one included
    assert run.result(trials[0].key)["client_throughput_rps"] == 7.0  # untouched
    assert run.result(trials[2].key)["seq"] == 3  # seq is the position in the strategy's order


def test_the_sweep_stops_after_max_consecutive_failures(tmp_path):
    spec = a_spec(max_consecutive_failures=2)
    trials = expand(spec)
    strategy, executor = Scripted(trials), FakeExecutor(lambda t: "failed")
    outcome = run_sweep(a_context(tmp_path, spec), strategy, executor)
    assert executor.submitted == [t.key for t in trials[:2]]
    assert "stopped after 2 failed trials in a row" in outcome.stopped and "it broke" in outcome.stopped
    assert [r["status"] for r in outcome.rows] == ["failed", "failed"]


def test_a_success_resets_the_failure_count(tmp_path):
    spec = a_spec(max_consecutive_failures=2)
    trials = expand(spec)
    pattern = {trials[0].key: "failed", trials[1].key: "ok", trials[2].key: "failed", trials[3].key: "ok"}
    outcome = run_sweep(a_context(tmp_path, spec), Scripted(trials), FakeExecutor(lambda t: pattern[t.key]))
    assert outcome.stopped == "" and len(outcome.rows) == 4


@pytest.mark.parametrize("interrupt, signum", [(KeyboardInterrupt(), signal.SIGINT), (Interrupted(signal.SIGTERM), signal.SIGTERM)])
def test_an_interrupt_marks_the_trial_in_flight_and_keeps_the_finished_ones(tmp_path, interrupt, signum):
    spec = a_spec()
    trials = expand(spec)
    executor = FakeExecutor(lambda t: interrupt if t == trials[1] else "ok")
    with pytest.raises(Interrupted) as caught:
        run_sweep(a_context(tmp_path, spec), Scripted(trials), executor)
    assert caught.value.signum == signum and executor.closed >= 1
    run = RunDir(tmp_path)
    assert run.result(trials[0].key)["status"] == "ok"
    row = run.result(trials[1].key)
    assert (row["status"], row["error"], row["seq"]) == ("interrupted", f"interrupted by signal {int(signum)}", 2)
    assert run.result(trials[2].key) == {}  # never started
    results.write_tables(tmp_path)  # as `sweeper run` does when the loop was interrupted
    assert list(pd.read_csv(run.results_csv)["status"]) == ["ok", "interrupted"]


def test_a_partial_row_of_a_failed_trial_is_kept(tmp_path):
    spec = a_spec()
    (trial, *_) = expand(spec)

    class Partial(FakeExecutor):
        def wait(self):
            (t,) = self.queue
            self.queue = []
            row = {"status": "failed", "error": "1 backend worker(s) died during the measured window",
                   "client_requests": 50, "client_ok": 50, "wall_s": 1.0, "log_tail": "worker died"}
            return [TrialResult(t, row, {"requests.csv.gz": b"\x1f\x8b"}, t.key)]

    run_sweep(a_context(tmp_path, spec), Scripted([trial]), Partial())
    row = json.loads((RunDir(tmp_path).trial_dir(trial.key) / "result.json").read_text())
    assert (row["status"], row["client_ok"], row["log_tail"]) == ("failed", 50, "worker died")
    assert (RunDir(tmp_path).trial_dir(trial.key) / "requests.csv.gz").read_bytes() == b"\x1f\x8b"


def test_an_executor_with_two_slots_gets_two_trials_at_once(tmp_path):
    spec = a_spec()
    trials = expand(spec)
    executor = FakeExecutor(slots=2)
    outcome = run_sweep(a_context(tmp_path, spec), Scripted(trials), executor)
    assert executor.submitted == [t.key for t in trials] and len(outcome.rows) == len(trials)
    assert executor.most_in_flight == 2


def test_a_file_outside_the_trial_directory_is_refused(tmp_path):
    spec = a_spec()
    (trial, *_) = expand(spec)
    with pytest.raises(ValueError):
        RunDir(tmp_path).write_trial(trial.key, {"../machine.json": b"{}"}, {"status": "ok"})


def test_a_trial_returned_in_several_results_stays_in_flight_until_the_final_one(tmp_path):
    """An executor that runs a trial on every node returns one result per node; only the
    final one ends the trial (each result is written under its own key)."""
    spec = a_spec()
    trials = expand(spec)[:2]

    class EveryNode(FakeExecutor):
        def wait(self):
            done, self.queue = self.queue, []
            out = []
            for trial in done:
                for node, final in (("a", False), ("b", True)):
                    row = {"status": "ok", "error": "", "wall_s": 0.1, "node_label": node}
                    out.append(TrialResult(trial, row, {}, f"{trial.key}@{node}", final=final))
            return out

    strategy = Scripted(trials)
    outcome = run_sweep(a_context(tmp_path, spec), strategy, EveryNode(slots=2))
    assert len(outcome.rows) == 4 and {r["node_label"] for r in outcome.rows} == {"a", "b"}
    assert sorted(RunDir(tmp_path).rows()) == sorted(f"{t.key}@{n}" for t in trials for n in "ab")
    assert len(strategy.observed) == 4
