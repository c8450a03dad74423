"""settings.keep_registered (sweeper.executors.local): a model setting the sweep returns to
runs on its kept registration, other registrations' idle workers stay out of the trial's
process figures, and kept registrations give way, least recently used first, when their
memory passes the budget. The management API is recorded here; tests/test_e2e_stable.py
runs the same on a real TorchServe."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from sweeper.executors import local
from sweeper.plan import ModelParams
from sweeper.context import SweepContext
from sweeper.sweepfile import parse_sweep

GB = 2**30


def _model(batch_size: int) -> ModelParams:
    return ModelParams("mlp", batch_size, 5, 1, 1, 60)


@pytest.fixture
def api(monkeypatch):
    """The management calls the executor makes, recorded: ("register", name, batch size)
    and ("unregister", name). Every idle registration holds 1 GB."""
    calls: list[tuple] = []
    monkeypatch.setattr(
        local.management, "register_model", lambda server, name, **kw: calls.append(("register", name, kw["batch_size"]))
    )
    monkeypatch.setattr(local.management, "unregister_model", lambda server, name: calls.append(("unregister", name)))
    monkeypatch.setattr(local, "_rss", lambda server, name: 1 * GB)
    return calls


def _executor(tmp_path, keep: bool, budget_gb: float, monkeypatch) -> local.LocalExecutor:
    spec = parse_sweep(
        {"name": "k", "load": {"mode": "closed", "concurrency": 1, "duration_s": 1}, "settings": {"keep_registered": keep}},
        "k.yaml",
    )
    monkeypatch.setattr(local, "keep_budget", lambda held: int(budget_gb * GB))
    return local.LocalExecutor(SweepContext(spec, tmp_path, "k", tmp_path, b"[]"))


def test_a_setting_seen_before_runs_on_its_kept_registration(tmp_path, monkeypatch, api):
    executor = _executor(tmp_path, keep=True, budget_gb=8, monkeypatch=monkeypatch)
    names = [executor._ensure_model(None, _model(b)) for b in (1, 8, 8, 32, 32, 8, 1)]
    # one registration per setting; the model's name is taken, so the others get suffixes
    assert names == ["mlp", "mlp_1", "mlp_1", "mlp_2", "mlp_2", "mlp_1", "mlp"]
    assert api == [("register", "mlp", 1), ("register", "mlp_1", 8), ("register", "mlp_2", 32)]
    assert executor.registrations == 3


def test_kept_registrations_beyond_the_memory_budget_go_least_recently_used_first(tmp_path, monkeypatch, api):
    executor = _executor(tmp_path, keep=True, budget_gb=2.5, monkeypatch=monkeypatch)
    for b in (1, 8, 32):
        executor._ensure_model(None, _model(b))
    api.clear()
    # moving to batch 64 leaves 1, 8 and 32 idle, 3 GB: batch 1 (least recently used) goes
    # first, and batch 64 takes the lowest free name, the one batch 1 held
    assert executor._ensure_model(None, _model(64)) == "mlp"
    assert api == [("unregister", "mlp"), ("register", "mlp", 64)]
    api.clear()
    # batch 1 again: registered anew; batch 8, now the least recently used, gives way
    assert executor._ensure_model(None, _model(1)) == "mlp_1"
    assert api == [("unregister", "mlp_1"), ("register", "mlp_1", 1)]
    api.clear()
    assert executor._ensure_model(None, _model(32)) == "mlp_2"  # still kept
    assert api == []


@pytest.mark.parametrize("scale", [True, False])
def test_a_change_of_workers_alone_scales_the_registration_in_place(tmp_path, monkeypatch, api, scale):
    """settings.scale_workers: the same registration with other workers (PUT), counted as
    the plan counts it; a change of anything else registers."""
    from sweeper.plan import costs, expand

    monkeypatch.setattr(local.management, "scale_workers",
                        lambda server, name, lo, hi, timeout_s: api.append(("scale", name, lo)))
    spec = parse_sweep(
        {"name": "w", "model": {"name": "mlp", "batch_size": [1, 8], "min_workers": [1, 2]},
         "load": {"mode": "closed", "concurrency": 1, "duration_s": 1}, "settings": {"scale_workers": scale}},
        "w.yaml",
    )
    executor = local.LocalExecutor(SweepContext(spec, tmp_path, "w", tmp_path, b"[]"))
    monkeypatch.setattr(local, "keep_budget", lambda held: 8 * GB)
    trials = expand(spec)
    names = [executor._ensure_model(None, t.model) for t in trials]
    if scale:
        assert api == [("register", "mlp", 1), ("scale", "mlp", 2), ("register", "mlp_1", 8), ("scale", "mlp_1", 2)]
        assert names == ["mlp", "mlp", "mlp_1", "mlp_1"]
    else:
        assert [c[0] for c in api] == ["register"] * 4
    planned = costs(trials, keep_registered=True, scale_workers=scale)
    assert (planned.registrations, planned.scalings) == (executor.registrations, executor.scalings)


def test_without_keep_registered_every_change_registers_fresh_workers(tmp_path, monkeypatch, api):
    executor = _executor(tmp_path, keep=False, budget_gb=8, monkeypatch=monkeypatch)
    names = [executor._ensure_model(None, _model(b)) for b in (1, 8, 8, 1)]
    assert names == ["mlp"] * 4
    assert api == [
        ("register", "mlp", 1),
        ("unregister", "mlp"), ("register", "mlp", 8),
        ("unregister", "mlp"), ("register", "mlp", 1),
    ]


@pytest.mark.parametrize("keep, fresh", [(True, [True, True, False, False]), (False, [True, True, True, True])])
def test_a_trial_on_a_registration_made_for_it_gets_the_registration_warmup(tmp_path, monkeypatch, api, keep, fresh):
    """measure() hears which trials registered their model (settings.registration_warmup_s);
    a kept registration the sweep returns to is warm. The server's first trial gets the
    server warm-up instead (sweeper.warmup)."""
    from sweeper.plan import expand, order

    class FakeServer:
        def __init__(self, **kw):
            self.log_dir = tmp_path

        def start(self):
            pass

        def stop(self):
            pass

        def alive(self):
            return True

    spec = parse_sweep(
        {"name": "k", "model": {"name": "mlp", "batch_size": [1, 8]}, "load": {"mode": "closed", "concurrency": 1, "duration_s": 1},
         "settings": {"keep_registered": keep, "repeats": 2}},
        "k.yaml",
    )
    executor = local.LocalExecutor(SweepContext(spec, tmp_path, "k", tmp_path, b"[]"))
    seen = []

    def fake_measure(server, trial, settings, request, files, fresh_server=False, fresh_registration=False, **_):
        seen.append((trial.model.batch_size, fresh_server, fresh_registration))
        return {"measure_s": 1.0}

    monkeypatch.setattr(local, "new_server", lambda *a, **k: FakeServer())
    monkeypatch.setattr(local, "measure", fake_measure)
    monkeypatch.setattr(local, "log_offsets", lambda server: {})
    monkeypatch.setattr(local, "log_slices", lambda server, offsets, whole=False: {})
    monkeypatch.setattr(executor, "_other_workers", lambda server, name: frozenset())
    rows = [executor.run(t).row for t in order(expand(spec), "interleaved")]
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert [b for b, _, _ in seen] == [1, 8, 1, 8]  # interleaved, each setting once per pass
    assert [f for _, _, f in seen] == fresh == [bool(r["server_registered"]) for r in rows]
    assert [s for _, s, _ in seen] == [True, False, False, False]


def test_only_a_registration_made_for_a_later_trial_gets_the_registration_warmup():
    from sweeper.warmup import new_registration

    assert new_registration(fresh_server=False, fresh_registration=True)  # new workers, new path
    assert not new_registration(fresh_server=False, fresh_registration=False)  # a warm registration
    # the first trial on a server has had the server warm-up on its own registration
    assert not new_registration(fresh_server=True, fresh_registration=True)


def test_the_budget_is_a_share_of_memory_and_at_most_half_of_what_is_free(monkeypatch):
    from collections import namedtuple

    Memory = namedtuple("Memory", "total available")
    monkeypatch.setattr(local.psutil, "virtual_memory", lambda: Memory(total=24 * GB, available=20 * GB))
    assert local.keep_budget(held=0) == 6 * GB  # a quarter of 24 GB
    monkeypatch.setattr(local.psutil, "virtual_memory", lambda: Memory(total=24 * GB, available=3 * GB))
    assert local.keep_budget(held=1 * GB) == 2 * GB  # half of the 4 GB free without the kept ones


_PARENT = """
import subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) for _ in range(2)]
print(" ".join(str(k.pid) for k in kids), flush=True)
sys.stdin.readline()
for k in kids:
    k.kill()
"""


@pytest.mark.timeout(60)
def test_the_probe_leaves_out_excluded_processes():
    """The idle workers of other registrations are not the trial's: not sampled."""
    from sweeper.torchserve.probe import Probe

    from childproc import read_line, spawn, stop

    parent = spawn([sys.executable, "-c", _PARENT], stdin=subprocess.PIPE)
    try:
        kept, idle = (int(p) for p in read_line(parent, timeout_s=30).split())
        time.sleep(0.2)
        everything = {s.pid for s in Probe(parent.pid, 0.05).start().stop()}
        assert {parent.pid, kept, idle} <= everything
        seen = {s.pid for s in Probe(parent.pid, 0.05, exclude=frozenset({idle})).start().stop()}
        assert idle not in seen and {parent.pid, kept} <= seen
    finally:
        try:
            parent.stdin.write(b"\n")  # the parent kills its two children and exits
            parent.stdin.flush()
            parent.wait(timeout=10)
        finally:
            stop(parent)  # its children, if it could not kill them, end their 30 s sleep alone


def test_an_ok_trials_log_slice_keeps_its_first_and_last_lines(tmp_path):
    """The trial's copy of a big server log keeps whole lines from both ends and says where
    the rest is; a failed trial keeps everything; keys are redacted either way."""
    from types import SimpleNamespace

    from sweeper.trial_logs import LOG_SLICE_HEAD, LOG_SLICE_TAIL, log_slices
    from sweeper.torchserve.process import Keys

    workdir = tmp_path / "g-1"
    (workdir / "logs").mkdir(parents=True)
    lines = [f"{i:08d} request with token SECRETKEY done\n".encode() for i in range(60_000)]  # ~2.6 MB
    (workdir / "logs" / "ts_log.log").write_bytes(b"before the trial\n" + b"".join(lines))
    server = SimpleNamespace(log_dir=workdir / "logs", workdir=workdir, keys=Keys("SECRETKEY", "mkey", "akey", 0.0))
    cut = log_slices(server, {"ts_log.log": len(b"before the trial\n")})["logs/ts_log.log"]
    assert len(cut) <= (LOG_SLICE_HEAD + LOG_SLICE_TAIL) * 1.05  # "<redacted>" is a byte longer than the key
    assert cut.startswith(b"00000000 request") and cut.endswith(b"00059999 request with token <redacted> done\n")
    assert b"SECRETKEY" not in cut and b"left out here; the server's whole log is g-1/logs/ts_log.log" in cut
    body = [line for line in cut.split(b"\n") if line and not line.startswith(b"[sweeper")]
    assert all(len(line) == len(b"00000000 request with token <redacted> done") for line in body)  # whole lines only
    whole = log_slices(server, {"ts_log.log": len(b"before the trial\n")}, whole=True)["logs/ts_log.log"]
    assert whole.count(b"\n") == 60_000 and b"SECRETKEY" not in whole
    # a log that rolled over during the trial is smaller than its offset: taken from its start
    rolled = log_slices(server, {"ts_log.log": 10**9}, whole=True)["logs/ts_log.log"]
    assert rolled.startswith(b"before the trial\n")
