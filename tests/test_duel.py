"""sweeper duel without TorchServe: the alternating engine against fake servers on real
loopback sockets (each block's requests reach its target, and no engine process is left
on success, failure or Ctrl-C), the whole duel with fake TorchServes behind sweeper.serve
(duel.json, and every server stopped however it ends), the report's section and the
recommendation it decides, the command line's errors, the plan's estimate, and the drift."""

from __future__ import annotations

import _thread
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from sweeper import duel as d
from sweeper import serve, warmup
from sweeper.analysis import paired
from sweeper.cli import main
from sweeper.drift import Drift, Throttle
from sweeper.errors import LoadError, ManagementError, SpecError
from sweeper.load import LoadProfile, Target
from sweeper.load.alternating import block_figures, block_index, run_alternating
from sweeper.plan import expand
from sweeper.report import render_report
from sweeper.report import duel as report_duel
from sweeper.sweepfile import dump_resolved, parse_sweep

from fakeserver import FakeServer

ROOT = Path(__file__).resolve().parent.parent

SWEEP = {
    "name": "duelme",
    "model": {"name": "mlp", "batch_size": [1, 8, 32], "max_batch_delay_ms": 5},
    "load": {"mode": "closed", "concurrency": 4, "duration_s": 2},
    "settings": {"repeats": 2, "server_warmup_s": 0, "duel": {"block_s": 0.25}},
}
# batch size: req/s in the sweep (batch 8 wins, batch 32 is the runner-up)
FIGURES = {1: 300.0, 8: 900.0, 32: 850.0}


def make_run(tmp_path: Path, sweep: dict = SWEEP, figures=None, status=None) -> Path:
    """A finished run directory of `sweep` with made-up figures (no server ran)."""
    figures = figures or (lambda t: FIGURES[t.model.batch_size])
    spec = parse_sweep(sweep, "duelme.yaml")
    run = tmp_path / "run"
    run.mkdir()
    (run / "sweep.yaml").write_text(dump_resolved(spec))
    rows = []
    for t in expand(spec):
        rows.append({
            **t.params(), "sweep": spec.name, "run_id": "run", "trial_id": t.trial_id, "repeat": t.repeat,
            "group_id": t.group_id, "status": (status or (lambda t: "ok"))(t), "error": "",
            "client_throughput_rps": figures(t) * (1.0 + 0.01 * t.repeat), "client_latency_p99_ms": 5.0,
            "client_latency_p50_ms": 2.0, "client_latency_p90_ms": 3.0, "client_latency_mean_ms": 2.0,
            "client_success_rate": 1.0, "client_requests": 1000, "client_ok": 1000,
        })
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    (run / "machine.json").write_text(json.dumps({"hostname": "h", "cpu_model": "cpu", "cores_usable": 2}))
    return run


def _engine_children() -> list:
    return [p for p in multiprocessing.active_children() if p.name.startswith("sweeper-load-")]


# --- blocks ------------------------------------------------------------------------------------


def test_a_duel_runs_a_lead_in_quad_then_its_measured_quads():
    plan = d.Blocks(56, 1.0, 0.2, seed=3)
    order = plan.order()
    assert len(order) == 60 and plan.lead_in == 4 and plan.duration_s == 60.0
    assert {order[i : i + 4] for i in range(0, 60, 4)} <= {(0, 1, 1, 0), (1, 0, 0, 1)}
    assert order == d.Blocks(56, 1.0, 0.2, seed=3).order()


@pytest.mark.parametrize(
    "block_s, p99_ms, expected",
    [
        (1.0, None, (1.0, 0.2)),
        (1.0, 50.0, (1.0, 0.2)),  # twice the p99 is below the floor
        (1.0, 150.0, (1.0, 0.3)),
        (1.0, 400.0, (1.6, 0.8)),  # a block is at least twice its settle
        (2.0, float("nan"), (2.0, 0.2)),
    ],
)
def test_each_block_settles_for_twice_the_larger_p99(block_s, p99_ms, expected):
    assert d.timing(block_s, p99_ms) == pytest.approx(expected)


def test_the_host_speed_of_each_ones_blocks():
    plan = d.Blocks(12, 1.0, 0.2)
    order = plan.order()
    t0 = 100.0
    # four samples a block: A's blocks on a CPU 20% faster; the lead-in's samples left out
    samples = [(t0 + b + q / 4, (1.2 if order[b] == paired.A else 1.0) * (5.0 if b < 4 else 1.0))
               for b in range(len(order)) for q in range(4)]
    got = d.host_speed(samples, t0, plan, order)
    assert got["samples"] == 48 and got["a_over_b"] == pytest.approx(1.2)
    assert got["low"] == pytest.approx(1.0 / 1.1) and got["high"] == pytest.approx(1.2 / 1.1)
    assert d.host_speed(samples[:16], t0, plan, order) is None  # the lead-in only


@pytest.mark.parametrize("blocks", [8, 10, 30, 0])
def test_blocks_must_be_whole_quads_and_enough_pairs(blocks):
    with pytest.raises(SpecError, match="multiple of 4 and at least 12"):
        d.check_blocks(blocks)


# --- the engine against fake servers ---------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["closed", "open"])
def test_every_block_sends_to_its_target_on_warm_connections(mode):
    order = paired.schedule(6, seed=5)
    block_s = 0.3
    with FakeServer(delay_s=0.002) as a, FakeServer(delay_s=0.03) as b:
        profile = (LoadProfile("closed", concurrency=4, processes=2) if mode == "closed"
                   else LoadProfile("open", rate_rps=400, processes=2))
        run = run_alternating([Target(a.url("/a"), b"x"), Target(b.url("/b"), b"y")], profile, block_s, order)
        got_a, got_b, conns = a.requests, b.requests, a.connections + b.connections
    k = block_index(run.records["scheduled_s"], block_s, len(order))
    target = [(order + (-1,))[i] for i in k]
    assert target.count(-1) == 0  # nothing scheduled past the last block
    assert (target.count(0), target.count(1)) == (got_a, got_b)  # each request went where its block says
    assert got_a > 0 and got_b > 0
    if mode == "closed":
        assert conns == 2 * 4  # each engine's slots held a connection to each target from the start
    figures = block_figures(run, block_s, len(order), 0.05)
    values = [w.rps if mode == "closed" else w.mean_ms for w in figures]
    verdict = paired.paired_ratio(values, order, higher_is_better=mode == "closed").verdict
    assert verdict == paired.A_BETTER  # A answers in 2 ms, B in 30 ms


def test_a_bad_schedule_fails_before_any_process_starts():
    with pytest.raises(LoadError, match="blocks name target"):
        run_alternating([Target("http://127.0.0.1:1/")], LoadProfile("closed", concurrency=1), 0.5, (0, 1))
    with pytest.raises(LoadError, match="block_s"):
        run_alternating([Target("http://127.0.0.1:1/")], LoadProfile("closed", concurrency=1), 0.0, (0,))


PLAN = d.Blocks(12, 0.25, 0.05)


@pytest.mark.timeout(90)
def test_measure_blocks_leaves_no_engine_behind_on_success():
    with FakeServer(delay_s=0.002) as a, FakeServer(delay_s=0.002) as b:
        result = d.measure_blocks((Target(a.url()), Target(b.url())), LoadProfile("closed", concurrency=2), PLAN)
    assert _engine_children() == []
    assert result["blocks"] == 12 and result["pairs"] == 6 and len(result["order"]) == 12
    assert result["verdict"] in paired.VERDICTS and result["a"]["success_rate"] == 1.0
    assert 0.5 < result["ratio"] < 2.0
    assert "host_speed" in result


@pytest.mark.timeout(90)
def test_measure_blocks_leaves_no_engine_behind_on_failure():
    with FakeServer() as a:
        with FakeServer() as gone:
            dead = gone.url()
        with pytest.raises(LoadError, match="cannot connect"):
            d.measure_blocks((Target(a.url()), Target(dead)), LoadProfile("closed", concurrency=2), PLAN)
    assert _engine_children() == []


@pytest.mark.timeout(90)
def test_measure_blocks_leaves_no_engine_behind_on_ctrl_c():
    with FakeServer(delay_s=0.005) as a, FakeServer(delay_s=0.005) as b:
        timer = threading.Timer(1.0, _thread.interrupt_main)
        timer.start()
        started = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                d.measure_blocks((Target(a.url()), Target(b.url())), LoadProfile("closed", concurrency=2),
                                 d.Blocks(40, 0.5, 0.05))
        finally:
            timer.cancel()
    assert time.monotonic() - started < 8.0
    assert _engine_children() == []


# --- the whole duel, with fake TorchServes behind sweeper.serve -----------------------------


class FakeTorchServe:
    """What the duel asks of a TorchServe, answered by a FakeServer on a loopback socket."""

    made: list["FakeTorchServe"] = []

    def __init__(self, trial, settings, store, workdir):
        self.trial, self.settings, self.workdir = trial, settings, workdir
        self.http = FakeServer(delay_s=0.002)
        self.registered: list[str] = []
        self.running = False
        self.refreshed = 0
        FakeTorchServe.made.append(self)

    def start(self):
        self.http.__enter__()
        self.running = True

    def stop(self):
        if self.running:
            self.http.__exit__(None, None, None)
            self.running = False

    def refresh_tokens(self, min_valid_s=0.0):
        self.refreshed += 1  # a refresh replaces the keys: once per server, before its targets

    def headers(self, api):
        return {"Authorization": "Bearer k"}

    @property
    def inference_url(self):
        return f"http://127.0.0.1:{self.http.port}"

    @property
    def process_group(self):
        return self.http.port  # no process of its own: a number the arena passes on


@pytest.fixture
def fake_torchserve(monkeypatch):
    FakeTorchServe.made = []
    warmed = []
    monkeypatch.setattr(serve, "new_server", FakeTorchServe)
    monkeypatch.setattr(serve, "register", lambda server, name, model, settings, url: server.registered.append(name))
    monkeypatch.setattr(warmup, "warm_server", lambda server, target, load, settings: warmed.append(("server", target.url)) or {"server_warmup_s": 1.5})
    monkeypatch.setattr(warmup, "warm_registration", lambda server, target, load, settings: warmed.append(("registration", target.url)) or 0.5)
    yield warmed
    assert all(not s.running for s in FakeTorchServe.made), "a server was left running"


@pytest.mark.timeout(120)
def test_a_duel_of_per_model_settings_registers_both_on_one_server(tmp_path, fake_torchserve):
    run = make_run(tmp_path)
    result = d.duel(run, blocks=12)
    data = json.loads((run / "duel.json").read_text())
    spec = parse_sweep(SWEEP, "x.yaml")
    by_batch = {t.model.batch_size: t.trial_id for t in expand(spec) if t.repeat == 0}
    assert data["configs"] == [by_batch[8], by_batch[32]]  # the recommendation's winner and runner-up
    for key in ("configs", "ratio", "ci_low", "ci_high", "blocks", "verdict"):
        assert key in data
    assert data["blocks"] == 12 and data["verdict"] in paired.VERDICTS
    assert data["ci_low"] <= data["ratio"] <= data["ci_high"]
    separated = data["verdict"] != paired.NOT_DISTINGUISHABLE
    assert (data["blocks_to_separate"] is None) == (separated or data["ratio"] == 1.0)
    assert data["figure"] == "throughput" and data["pick"] == "throughput"
    assert data["block_s"] == 0.4 and data["settle_s"] == 0.2  # 0.25 s blocks grow to twice the settle
    assert data["unpaired"]["ratio"] == pytest.approx(904.5 / 854.25)  # the means over two repeats
    assert result["configs"] == data["configs"]
    [server] = FakeTorchServe.made
    assert server.registered == ["mlp", "mlp_duel"] and server.refreshed == 1
    assert [kind for kind, _ in fake_torchserve] == ["server", "registration"]
    assert fake_torchserve[0][1].endswith("/predictions/mlp") and fake_torchserve[1][1].endswith("/predictions/mlp_duel")
    assert _engine_children() == []


SERVER_SWEEP = {**SWEEP, "model": {"name": "mlp", "batch_size": 8}, "server": {"job_queue_size": [100, 200]},
                "settings": {**SWEEP["settings"], "base_port": 23100}}


@pytest.mark.timeout(120)
def test_a_duel_of_server_settings_starts_two_servers(tmp_path, fake_torchserve):
    run = make_run(tmp_path, SERVER_SWEEP, figures=lambda t: 900.0 if dict(t.server)["job_queue_size"] == 100 else 800.0)
    data = d.duel(run, blocks=12)
    assert data["layout"].startswith("two TorchServes")
    a, b = FakeTorchServe.made
    assert a.trial.group_id != b.trial.group_id
    assert (a.settings.base_port, b.settings.base_port) == (23100, None)  # the second on free ports
    assert a.registered == b.registered == ["mlp"] and a.refreshed == b.refreshed == 1
    assert [kind for kind, _ in fake_torchserve] == ["server", "server"]


@pytest.mark.timeout(120)
def test_a_duel_stops_its_servers_when_a_registration_fails(tmp_path, fake_torchserve, monkeypatch):
    run = make_run(tmp_path)

    def refuse(server, name, model, settings, url):
        if name.endswith("_duel"):
            raise ManagementError("POST /models: 507 Insufficient Storage")
        server.registered.append(name)

    monkeypatch.setattr(serve, "register", refuse)
    with pytest.raises(ManagementError):
        d.duel(run, blocks=12)
    assert FakeTorchServe.made and not (run / "duel.json").exists()


@pytest.mark.timeout(120)
def test_a_duel_stops_its_servers_and_engines_on_ctrl_c(tmp_path, fake_torchserve):
    run = make_run(tmp_path)
    timer = threading.Timer(1.5, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            d.duel(run, blocks=400)
    finally:
        timer.cancel()
    assert FakeTorchServe.made and _engine_children() == []
    assert not (run / "duel.json").exists()


def test_a_duel_refuses_a_run_without_two_eligible_configurations(tmp_path):
    run = make_run(tmp_path, status=lambda t: "ok" if t.model.batch_size == 8 else "failed")
    with pytest.raises(SpecError, match="no two eligible configurations"):
        d.choose(run)


def test_given_configs_may_be_any_two_trials_of_the_run(tmp_path):
    run = make_run(tmp_path)
    ids = {t.model.batch_size: t.trial_id for t in expand(parse_sweep(SWEEP, "x")) if t.repeat == 0}
    choice = d.choose(run, (ids[1], ids[1]))
    assert choice.a.trial_id == choice.b.trial_id == ids[1] and choice.chosen == "given with --configs"


# --- the report ---------------------------------------------------------------------------------


def _duel_json(run: Path, configs: list[str], verdict: str, ratio: float) -> None:
    (run / "duel.json").write_text(json.dumps({
        "configs": configs, "ratio": ratio, "ci_low": ratio * 0.98, "ci_high": ratio * 1.02, "level": 0.95,
        "verdict": verdict, "figure": "throughput", "blocks": 56, "block_s": 1.0, "pairs": 28,
        "chosen": "the recommendation's winner and runner-up (best throughput)", "layout": "one TorchServe, two registrations",
        "a": {"figure_mean": 880.0 * ratio, "latency_p99_ms": 6.0, "requests": 24000},
        "b": {"figure_mean": 880.0, "latency_p99_ms": 6.5, "requests": 23000},
        "unpaired": {"a_mean": 905.0, "b_mean": 855.0, "ratio": 1.058, "ci_low": 1.01, "ci_high": 1.11},
        "host_speed": {"samples": 220, "low": 0.71, "high": 1.18, "a_over_b": 1.01},
    }))


def _ids():
    return {t.model.batch_size: t.trial_id for t in expand(parse_sweep(SWEEP, "x")) if t.repeat == 0}


def test_the_report_has_no_duel_section_without_a_duel(tmp_path):
    run = make_run(tmp_path)
    _, md = render_report(run)
    assert "Head to head" not in md.read_text() and "Decided by the duel" not in md.read_text()


@pytest.mark.parametrize("verdict, ratio, winner", [(paired.A_BETTER, 1.04, 8), (paired.B_BETTER, 0.96, 32),
                                                     (paired.NOT_DISTINGUISHABLE, 1.0, 8)])
def test_the_duel_decides_the_pick_it_measured(tmp_path, verdict, ratio, winner):
    run = make_run(tmp_path)
    ids = _ids()
    _duel_json(run, [ids[8], ids[32]], verdict, ratio)
    html, md = render_report(run)
    text, page = md.read_text(), html.read_text()
    assert "### Head to head (sweeper duel)" in text and 'id="duel"' in page
    assert verdict in text and "unpaired" in text
    assert "CPU speed ranged 0.71-1.18x" in text and "1.01x the speed of B's" in text
    best = text.split("### Best throughput", 1)[1]
    assert f"trial `{ids[winner]}`" in best.split("\n\n", 2)[1]  # the pick's headline names its winner
    assert "Decided by the duel" in best and "From the sweep's repeats alone" in best
    if verdict == paired.B_BETTER:
        assert "runner-up of the sweep's ranking" in best


def test_a_duel_that_could_not_tell_them_apart_says_how_long_would(tmp_path):
    run = make_run(tmp_path)
    ids = _ids()
    _duel_json(run, [ids[8], ids[32]], paired.NOT_DISTINGUISHABLE, 1.01)
    data = json.loads((run / "duel.json").read_text())
    (run / "duel.json").write_text(json.dumps({**data, "blocks_to_separate": 240}))
    _, md = render_report(run)
    assert ("measure longer (sweeper duel --blocks 240, about 4 min: at the spread these pairs had, a difference "
            "of the size seen, 1.0%, is separated 4 times in 5 with that many) or treat them as equal") in md.read_text()
    (run / "duel.json").write_text(json.dumps({**data, "blocks_to_separate": 40_000}))
    _, md = render_report(run)
    assert ("at the spread these pairs had, a difference of the size seen, 1.0%, would need about 40,000 blocks "
            "(11.1 h), more than one duel measures (45 min) or treat them as equal") in md.read_text()
    (run / "duel.json").write_text(json.dumps(data))  # written before the projection existed
    _, md = render_report(run)
    assert "measure longer (sweeper duel --blocks) or treat them as equal" in md.read_text()


def test_a_duel_of_two_other_trials_leaves_the_pick_alone(tmp_path):
    run = make_run(tmp_path)
    ids = _ids()
    _duel_json(run, [ids[1], ids[32]], paired.B_BETTER, 0.4)
    _, md = render_report(run)
    text = md.read_text()
    assert "### Head to head (sweeper duel)" in text and "Decided by the duel" not in text


@pytest.mark.parametrize("content", ["not json", "[]", '{"configs": ["a"], "verdict": "A better"}',
                                     '{"configs": ["a", "b"], "verdict": "maybe"}'])
def test_a_malformed_duel_json_is_ignored(tmp_path, content):
    (tmp_path / "duel.json").write_text(content)
    assert report_duel.read(tmp_path) is None


# --- the command line ---------------------------------------------------------------------------


def _one_line_exit_2(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("sweeper: "), err
    return err


def test_cli_an_unknown_config_id(tmp_path, capsys):
    run = make_run(tmp_path)
    err = _one_line_exit_2(capsys, ["duel", str(run), "--configs", "nope", _ids()[8]])
    assert "unknown config id 'nope'" in err


def test_cli_a_run_without_two_eligible_configurations(tmp_path, capsys):
    run = make_run(tmp_path, status=lambda t: "ok" if t.model.batch_size == 8 else "failed")
    assert "no two eligible configurations" in _one_line_exit_2(capsys, ["duel", str(run)])


def test_cli_a_run_on_a_target_is_refused_and_nothing_starts(tmp_path, capsys, fake_torchserve):
    run = make_run(tmp_path, {**SWEEP, "settings": {"repeats": 2}, "target": {"inference": "http://127.0.0.1:8080"}})
    err = _one_line_exit_2(capsys, ["duel", str(run)])
    assert "a run on a target" in err and "starts TorchServes of its own" in err
    assert not FakeTorchServe.made and not (run / "duel.json").exists()


def test_cli_blocks_and_run_directory(tmp_path, capsys):
    run = make_run(tmp_path)
    assert "multiple of 4" in _one_line_exit_2(capsys, ["duel", str(run), "--blocks", "10"])
    assert "fit in a TorchServe key" in _one_line_exit_2(capsys, ["duel", str(run), "--blocks", "8000"])
    assert "not a finished run directory" in _one_line_exit_2(capsys, ["duel", str(tmp_path / "none")])


def test_settings_duel_after_a_sweep(tmp_path, monkeypatch, capsys):
    from sweeper import cli
    from sweeper.errors import Interrupted, ServerError

    def fails(exc):
        def duel(run_dir, progress=None):
            raise exc
        return duel

    monkeypatch.setattr(d, "duel", fails(SpecError(str(tmp_path), "", "no two eligible configurations to duel")))
    assert cli._duel_after_sweep(tmp_path, "") == ""  # nothing to duel is no failure
    assert "note: settings.duel:" in capsys.readouterr().err
    monkeypatch.setattr(d, "duel", fails(ServerError("TorchServe did not start")))
    assert cli._duel_after_sweep(tmp_path, "") == "duel: TorchServe did not start"
    monkeypatch.setattr(d, "duel", fails(Interrupted(15)))
    with pytest.raises(Interrupted):
        cli._duel_after_sweep(tmp_path, "")
    assert cli._duel_after_sweep(tmp_path, "--ray") == ""
    assert "skipped with --ray" in capsys.readouterr().err


def test_the_plan_counts_the_duel():
    from sweeper.preflight import duel_s, estimate_s

    with_duel = parse_sweep({**SWEEP, "settings": {"repeats": 2, "duel": {}}}, "x.yaml")
    without = parse_sweep({**SWEEP, "settings": {"repeats": 2}}, "x.yaml")
    trials = expand(with_duel)
    extra = estimate_s(with_duel, trials) - estimate_s(without, expand(without))
    assert extra == pytest.approx(duel_s(with_duel, trials))
    assert extra > (56 + 4) * 1.0 + 15.0  # the blocks, their lead-in and a server warm-up at least


# --- the drift --------------------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


@pytest.mark.timeout(60)
def test_the_drift_burns_while_on_rests_while_off_and_stops():
    # the thresholds hold on a machine whose cores other work keeps busy: the burner gets a
    # share of a core while on (a few 10 ms ticks at least), and none while off
    with Drift(on_s=2.0, off_s=2.0) as drift:
        [pid] = drift.pids
        assert drift.on()
        before = _cpu_s(pid)
        time.sleep(1.5)
        burnt = _cpu_s(pid) - before
        deadline = time.monotonic() + 5.0
        while drift.on() and time.monotonic() < deadline:  # into the off half
            time.sleep(0.05)
        assert not drift.on()
        time.sleep(0.1)
        before = _cpu_s(pid)
        time.sleep(1.0)
        rested = _cpu_s(pid) - before
    assert burnt > 0.03 and rested < burnt / 2
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.timeout(60)
def test_the_drift_stops_when_its_caller_is_killed():
    code = ("import time, sys\nfrom sweeper.drift import Drift\n"
            "with Drift(on_s=30, off_s=1) as d:\n    print(d.pids[0], flush=True)\n    time.sleep(60)\n")
    caller = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        burner = psutil.Process(int(caller.stdout.readline()))
        caller.kill()
        caller.wait(5)
        gone, alive = psutil.wait_procs([burner], timeout=5)
        assert not alive, "the burner outlived its caller"
    finally:
        caller.kill()
        caller.stdout.close()


def test_the_drift_refuses_a_bad_wave():
    with pytest.raises(ValueError):
        Drift(on_s=0)
    with pytest.raises(ValueError):
        Drift(duty=1.5)


@pytest.fixture
def busy():
    """A process spinning in pure Python, leading its own process group (as a server does)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


def _frozen_soon(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while not _stopped(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return _stopped(pid)


@pytest.mark.timeout(60)
def test_the_throttle_freezes_its_group_for_its_share_while_on_and_thaws_it_on_leaving(busy):
    time.sleep(0.2)
    with Throttle([busy.pid], on_s=2.0, off_s=2.0, share=0.3) as throttle:
        assert throttle.on()
        before = _cpu_s(busy.pid)
        time.sleep(1.5)
        while_on = (_cpu_s(busy.pid) - before) / 1.5
        deadline = time.monotonic() + 5.0
        while throttle.on() and time.monotonic() < deadline:  # into the off half
            time.sleep(0.05)
        time.sleep(0.15)
        before = _cpu_s(busy.pid)
        time.sleep(1.0)
        while_off = (_cpu_s(busy.pid) - before) / 1.0
        [child] = throttle.pids
    # 30% of every 100 ms while on; all it can get while off (other work may share the cores)
    assert while_off > 0.1 and while_on < 0.7 * while_off, (while_on, while_off)
    assert not _stopped(busy.pid)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


@pytest.mark.timeout(60)
def test_the_throttle_thaws_its_group_when_its_child_is_killed_mid_freeze(busy):
    with Throttle([busy.pid], on_s=30.0, off_s=1.0, share=0.01) as throttle:
        assert _frozen_soon(busy.pid)
        os.kill(throttle.pids[0], signal.SIGKILL)
        time.sleep(0.2)
    assert not _stopped(busy.pid)


@pytest.mark.timeout(60)
def test_the_throttle_thaws_its_group_when_its_caller_is_killed(busy):
    code = ("import sys, time\nfrom sweeper.drift import Throttle\n"
            f"with Throttle([{busy.pid}], on_s=30, off_s=1, share=0.01) as t:\n"
            "    print(t.pids[0], flush=True)\n    time.sleep(60)\n")
    caller = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        child = psutil.Process(int(caller.stdout.readline()))
        assert _frozen_soon(busy.pid)
        caller.kill()
        caller.wait(5)
        gone, alive = psutil.wait_procs([child], timeout=5)
        assert not alive, "the throttle outlived its caller"
        assert not _stopped(busy.pid)
    finally:
        caller.kill()
        caller.stdout.close()


def test_the_throttle_refuses_a_bad_quota():
    with pytest.raises(ValueError):
        Throttle([1], share=1.0)
    with pytest.raises(ValueError):
        Throttle([1], share=0)
    with pytest.raises(ValueError):
        Throttle([], share=0.5)
    with pytest.raises(ValueError):
        Throttle([1], period_s=0)


# --- one real TorchServe --------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_duel_on_a_real_torchserve_leaves_nothing_behind(tmp_path, capsys):
    from e2e_helpers import assert_nothing_left

    sweep = {
        "name": "duelme",
        "model": {"name": "mlp", "batch_size": [1, 4], "max_batch_delay_ms": 5, "min_workers": 1},
        "load": {"mode": "closed", "concurrency": 4, "duration_s": 2},
        "settings": {"server_warmup_s": 0, "registration_warmup_s": 0, "duel": {"block_s": 0.4}},
    }
    run = make_run(tmp_path, sweep, figures=lambda t: 500.0 if t.model.batch_size == 4 else 450.0)
    started = time.monotonic()
    code = main(["duel", str(run), "--blocks", "12"])
    err = capsys.readouterr().err
    assert code == 0, err
    data = json.loads((run / "duel.json").read_text())
    assert data["verdict"] in paired.VERDICTS and data["pairs"] == 6
    assert data["a"]["success_rate"] == data["b"]["success_rate"] == 1.0
    assert data["layout"] == "one TorchServe, two registrations (mlp and mlp_duel)"
    assert "Head to head (sweeper duel)" in (run / "report.md").read_text()
    assert_nothing_left(tmp_path)
    assert time.monotonic() - started < 90


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_a_quota_slows_a_real_torchserve_which_serves_on_and_is_thawed(tmp_path):
    """The throttle of bench_duel on TorchServe's process group (wrapper, JVM, workers): every
    request still answered while it freezes them, fewer of them per second, and no process
    of the server left stopped after it."""
    from e2e_helpers import assert_nothing_left, ts_processes_under

    from sweeper.load import run_load
    from sweeper.rundir import RunDir
    from sweeper.verify import trial_inputs

    sweep = {
        "name": "duelme",
        "model": {"name": "mlp", "batch_size": [1, 4], "max_batch_delay_ms": 5, "min_workers": 1},
        "load": {"mode": "closed", "concurrency": 4, "duration_s": 2},
        "settings": {"server_warmup_s": 0, "registration_warmup_s": 0},
    }
    run = make_run(tmp_path, sweep, figures=lambda t: 500.0 if t.model.batch_size == 4 else 450.0)
    choice = d.choose(run)
    store, archive, requests_a = trial_inputs(run, choice.spec, choice.a)
    requests_b = trial_inputs(run, choice.spec, choice.b)[2]
    load = LoadProfile("closed", concurrency=4, duration_s=3.0)

    def served(target) -> tuple[float, bool]:
        rec = run_load(target, load).records
        return len(rec) / load.duration_s, bool(len(rec)) and bool((rec["status"] == 200).all())

    with d.arena(choice, RunDir(run), (store, archive, (requests_a, requests_b)), choice.a.load, 300.0) as ready:
        [group] = ready.groups
        target = ready.targets[0]
        served(target)  # warm
        with Throttle(ready.groups, on_s=60.0, off_s=1.0, share=0.3):
            assert _frozen_soon(group)
            slowed, all_ok_slowed = served(target)
        members = ts_processes_under(tmp_path)
        assert members and not any(_stopped(p.pid) for p in members)
        free, all_ok_free = served(target)
    assert all_ok_slowed and all_ok_free
    assert slowed < 0.75 * free, (slowed, free)  # 30% of every 100 ms: about a third
    assert_nothing_left(tmp_path)
