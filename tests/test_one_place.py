"""Decisions made in one place: the success floor, the success rate, the ranking. Each
test here guards a copy that had drifted from the original."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pandas as pd
import pytest

from sweeper.analysis import objective
from sweeper.analysis.aggregate import aggregate_trials
from sweeper.compare import compare
from sweeper.load import RECORD_DTYPE, LoadProfile, LoadRun, summarize
from sweeper.report import markdown as report_markdown
from sweeper.spec import Settings
from sweeper.sweepfile import parse_sweep


def test_every_default_success_floor_is_the_schemas():
    floor = Settings.model_fields["min_success_rate"].default
    from sweeper.analysis.findings import thread_findings

    for fn in (aggregate_trials, report_markdown.markdown, objective.run_score, objective.run_value, objective.config_score,
               thread_findings):
        assert inspect.signature(fn).parameters["min_success_rate"].default == floor, fn.__qualname__


def _run_of(statuses: list[int]) -> LoadRun:
    rec = np.zeros(len(statuses), dtype=RECORD_DTYPE)
    rec["status"] = statuses
    rec["scheduled_s"] = rec["sent_s"] = np.arange(len(statuses)) * 0.01
    rec["end_s"] = rec["sent_s"] + 0.005
    rec["batch_size"] = -1
    rec["handler_ms"] = np.nan
    profile = LoadProfile("closed", concurrency=1, duration_s=1.0)
    return LoadRun(profile=profile, records=rec, wall_s=1.0, client_cpu_s=0.0)


def test_the_success_rate_is_the_expected_status_share_from_the_start():
    """summarize() computes client_success_rate with request.expect_status; no caller
    overwrites a 2xx share afterwards."""
    run = _run_of([201, 201, 200, 503])
    assert summarize(run, expect_status=201)["client_success_rate"] == pytest.approx(0.5)
    assert summarize(run)["client_success_rate"] == pytest.approx(0.25)  # 200 by default
    assert summarize(run, expect_status=201)["client_ok"] == 3  # served still means 2xx


def _compare_run(tmp_path, name, sweep_yaml: str):
    run_dir = tmp_path / name
    run_dir.mkdir()
    rows = []
    # fast: the highest throughput, but its p99 breaks the SLO; lossy: faster still, but it
    # lost 5% of its requests; steady: the one the recommendation picks
    for tid, tput, p99, success, batch in (("fast", 900.0, 80.0, 1.0, 32), ("lossy", 1200.0, 5.0, 0.95, 16), ("steady", 500.0, 9.0, 1.0, 8)):
        for repeat in (0, 1):
            rows.append(dict(
                sweep="s", trial_id=tid, repeat=repeat, status="ok", seq=len(rows),
                param_model_name="mlp", param_model_batch_size=batch, load_mode="closed", load_concurrency=16,
                client_throughput_rps=tput, client_success_rate=success, client_latency_p99_ms=p99,
                client_latency_p50_ms=p99 / 2, client_latency_p90_ms=p99 / 1.2,
            ))
    pd.DataFrame(rows).to_csv(run_dir / "results.csv", index=False)
    (run_dir / "machine.json").write_text(json.dumps({"hostname": name, "cpu_model": "cpu", "cores_usable": 2}))
    (run_dir / "sweep.yaml").write_text(sweep_yaml)
    return run_dir


def test_compare_names_the_configuration_the_recommendation_picks(tmp_path):
    """compare's best honours the run's SLO and success floor, as the report does."""
    a = _compare_run(tmp_path, "a", "name: s\nsettings: {slo_p99_ms: 20}\n")
    b = _compare_run(tmp_path, "b", "name: s\n")
    _, best = compare([a, b])
    assert "batch_size=8" in best[0][1] and best[0][2] == pytest.approx(500.0)  # SLO: fast is out
    assert "batch_size=32" in best[1][1] and best[1][2] == pytest.approx(900.0)  # no SLO; lossy below 0.99


SWEEP = """\
name: pick
model: {name: mlp, batch_size: [1, 8, 32], max_batch_delay_ms: 5}
load: {mode: closed, concurrency: 16, duration_s: 2}
settings: {slo_p99_ms: 20, base_port: 23000}
"""


def test_verify_verifies_the_configuration_the_recommendation_picks(tmp_path):
    """The winner honours the sweep's SLO (the highest throughput broke it)."""
    from sweeper.plan import expand
    from sweeper.sweepfile import parse_sweep
    from sweeper.verify import winner
    import yaml

    spec = parse_sweep(yaml.safe_load(SWEEP), "pick.yaml")
    figures = {1: (300.0, 5.0), 8: (800.0, 12.0), 32: (1500.0, 60.0)}  # batch: (req/s, p99 ms)
    rows = []
    for trial in expand(spec):
        tput, p99 = figures[trial.model.batch_size]
        rows.append({**trial.params(), "trial_id": trial.trial_id, "repeat": trial.repeat, "status": "ok",
                     "client_throughput_rps": tput, "client_latency_p99_ms": p99, "client_success_rate": 1.0})
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    _, trial, connections, _ = winner(tmp_path)
    assert trial.model.batch_size == 8 and connections == 16


def test_every_server_is_made_by_one_function_with_the_sweeps_ports(tmp_path):
    """sweeper.serve.new_server is the only place a TorchServe is built, and it passes
    settings.base_port (verify once built its own without it)."""
    import ast
    from pathlib import Path

    import yaml

    from sweeper.plan import expand
    from sweeper.serve import new_server
    from sweeper.sweepfile import parse_sweep

    package = Path(__file__).resolve().parents[1] / "sweeper"
    builders = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "TorchServe":
                builders.add(str(path.relative_to(package)))
    assert builders == {"serve.py"}
    spec = parse_sweep(yaml.safe_load(SWEEP), "pick.yaml")
    server = new_server(expand(spec)[0], spec.settings, tmp_path, tmp_path / "server")
    assert server.base_port == 23000


def test_a_finished_runs_sweep_yaml_loads_on_any_machine(tmp_path):
    """The schema checks the file, not the machine: an address and CPUs of another
    machine load; preflight refuses them here, with the key."""
    from sweeper.errors import SpecError
    from sweeper.preflight import check_machine
    from sweeper.sweepfile import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text("name: elsewhere\nmodel: {name: mlp}\nload: {mode: closed, concurrency: 4, duration_s: 2}\n"
                    "settings: {host: 192.0.2.1, client_cpus: [4000]}\n")
    spec = load_sweep(path)
    assert spec.settings.host == "192.0.2.1" and spec.settings.client_cpus == [4000]
    with pytest.raises(SpecError, match="settings.host: must be an address of this machine"):
        check_machine(spec, str(path))


def test_a_resumed_run_keeps_the_fingerprint_it_started_on(tmp_path):
    from sweeper.rundir import RunDir

    run = RunDir(tmp_path)
    run.record_machine({"hostname": "first", "cores_usable": 2}, at="t0")
    run.record_machine({"hostname": "second", "cores_usable": 8}, at="t1")
    machine = run.machine()
    assert machine["hostname"] == "first" and run.cores() == 2
    assert machine["resumed_on"] == [{"at": "t1", "hostname": "second", "cores_usable": 8}]


def test_a_finished_run_counts_starts_and_registrations_as_its_plan_does():
    """The search summary's counts of a finished run and sweeper plan's come from one
    function (plan.run_costs)."""
    import yaml

    from sweeper.analysis.search import _costs
    from sweeper.plan import costs, expand, order

    spec = parse_sweep(yaml.safe_load(
        "name: c\nmodel: {name: mlp, batch_size: [1, 8]}\nserver: {number_of_netty_threads: [1, 2]}\n"
        "load: {mode: closed, concurrency: 4, duration_s: 1}\nsettings: {repeats: 2}\n"), "c.yaml")
    trials = order(expand(spec), "interleaved", 0)
    rows = pd.DataFrame([{**t.params(), "group_id": t.group_id} for t in trials])
    assert _costs(rows) == costs(trials)[:2] == (3, 8)  # interleaved passes meet at the middle group
