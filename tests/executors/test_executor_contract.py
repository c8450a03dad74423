"""The contract of every executor (every entry of sweeper.executors.EXECUTORS), against a
real TorchServe: a submitted trial comes back from wait() as a TrialResult with its row
and its files, the executor writes nothing into the run's trial directories, and close()
leaves no process behind. A deliberately leaky executor shows that the check fails."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from handlers.models import MODELS
from sweeper.executors import EXECUTORS
from sweeper.plan import expand
from sweeper.rundir import RunDir
from sweeper.context import SweepContext
from sweeper.trialresult import TrialResult
from sweeper.sweepfile import parse_sweep

ROOT = Path(__file__).resolve().parents[2]
TAG = "SWEEPER_EXECUTOR_CONTRACT"  # inherited by every process an executor starts
# what the trial measured; its inputs (config.properties, env.json) the sweep loop writes
EXPECTED_FILES = {"requests.csv.gz", "logs/ts_log.log"}


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Live processes other than this one whose environment carries the tag.

    Python's multiprocessing resource tracker and fork server do not count: the
    interpreter starts one of each with its first load engine (sweeper.load.launch forks
    the engines from the fork server), keeps them for its own lifetime and they exit with
    this process (tests/test_load_engine.py kills a sweeper and sees both go); they hold
    no port and use no CPU. One fork server at most: a second would be a leak.
    """
    out = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE or p.environ().get(TAG) != tag:
                continue
            cmd = " ".join(p.cmdline())
            if "multiprocessing.resource_tracker" not in cmd:
                out.append(p)
        except psutil.Error:  # gone, or not ours to read
            continue
    servers = [p for p in out if _forkserver(p)]
    assert len(servers) <= 1, f"more than one fork server: {[p.pid for p in servers]}"
    return [p for p in out if p not in servers]


def _forkserver(p: psutil.Process) -> bool:
    """multiprocessing's fork server itself (its forked children have the same command
    line, so: a process with that command line whose parent is not one)."""
    try:
        if "multiprocessing.forkserver" not in " ".join(p.cmdline()):
            return False
        parent = p.parent()
        return parent is None or "multiprocessing.forkserver" not in " ".join(parent.cmdline())
    except psutil.Error:
        return False


def check_executor(executor, trial, tag: str, grace_s: float = 3.0) -> TrialResult:
    """Run one trial through `executor` and close it; AssertionError on a broken contract."""
    try:
        assert executor.slots >= 1
        executor.submit(trial)
        results = []
        while not results:
            results = executor.wait()
    finally:
        executor.close()
    deadline = time.monotonic() + grace_s  # close() may return while the last exits finish
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left after close(): {[(p.pid, p.cmdline()) for p in left]}"
    (result,) = results
    assert isinstance(result, TrialResult) and result.trial == trial
    assert result.status == "ok", result.row.get("error")
    assert EXPECTED_FILES <= set(result.artifacts), sorted(result.artifacts)
    assert all(isinstance(v, bytes) for v in result.artifacts.values())
    return result


def a_context(tmp_path):
    spec = parse_sweep(
        {
            "name": "contract",
            "model": {"name": "mlp", "max_batch_delay_ms": 5, "min_workers": 1},
            "load": {"mode": "closed", "concurrency": 2, "duration_s": 1},
            "settings": {"warmup_s": 0.2, "server_warmup_s": 0, "ready_timeout_s": 60},
        },
        "contract.yaml",
    )
    body = MODELS["mlp"].example_request()
    ctx = SweepContext(spec=spec, run_dir=tmp_path, run_id="contract", model_store=ROOT / "model_store", request_body=body)
    return ctx, expand(spec)[0]


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(EXECUTORS))
def test_every_executor_returns_the_trial_with_its_files_and_leaves_no_process(name, tmp_path, monkeypatch):
    if name == "ray":  # needs a cluster, whose own processes carry the tag: see test_ray.py
        pytest.skip("the Ray executor's contract runs in tests/executors/test_ray.py, on its 2-node cluster")
    if name == "attach":  # needs a sweep with a target and a TorchServe started outside it
        pytest.skip("the attach executor runs in tests/test_e2e_attach.py, on a TorchServe started outside the sweeper")
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)
    ctx, trial = a_context(tmp_path)
    result = check_executor(EXECUTORS[name](ctx), trial, tag)
    assert result.row["client_ok"] > 0
    assert not RunDir(tmp_path).trial_dir(trial.key).exists()  # the runner writes, not the executor


class Leaky:
    """Runs a 'server' that close() forgets to stop."""

    slots = 1

    def __init__(self):
        self.child = None
        self.trial = None

    def submit(self, trial):
        self.child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        self.trial = trial

    def wait(self):
        files = {name: b"" for name in EXPECTED_FILES}
        return [TrialResult(self.trial, {"status": "ok"}, files, self.trial.key)]

    def close(self):
        pass


def test_the_contract_fails_for_an_executor_that_leaks_a_process(tmp_path, monkeypatch):
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)
    _, trial = a_context(tmp_path)
    leaky = Leaky()
    try:
        with pytest.raises(AssertionError, match="processes left after close"):
            check_executor(leaky, trial, tag, grace_s=0.2)
    finally:
        leaky.child.kill()
        leaky.child.wait()
