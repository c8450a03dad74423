"""End-to-end: search.objective capacity against a real TorchServe (a short rate search)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from e2e_helpers import assert_nothing_left, run_dirs, write_sweep
from sweeper.cli import main
from sweeper.verify import in_flight, winner

pytestmark = pytest.mark.e2e


def test_capacity_search_writes_capacity_rps_at_slo(tmp_path, capsys):
    # A few seconds of steps: 1 s each (0.25 s not judged), x4 from 10 req/s, 25% precision,
    # at most 6 steps. The MLP with one worker serves hundreds of req/s, not thousands; a
    # 2000 ms SLO passes the first step even on a loaded machine, and 2560 req/s overloads it.
    path = write_sweep(
        tmp_path,
        "capacity",
        model={"name": "mlp", "batch_size": 8, "max_batch_delay_ms": 5, "min_workers": 1},
        search={
            "objective": "capacity",
            "capacity": {"start_rps": 10, "max_rps": 5000, "growth": 4, "precision": 0.25, "step_s": 1, "warmup_s": 0.25, "max_steps": 6},
        },
        settings={"slo_p99_ms": 2000, "warmup_s": 0.5, "min_success_rate": 0.99},
    )
    out = tmp_path / "runs"
    code = main(["run", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "capacity search 10..5000 req/s" in err  # the progress line says what bounds the trial
    (run_dir,) = run_dirs(out)
    df = pd.read_csv(run_dir / "results.csv")
    row = df.iloc[0]
    assert row["status"] == "ok" and row["load_mode"] == "capacity"
    steps = json.loads(row["capacity_steps"])
    assert 2 <= row["capacity_steps_n"] == len(steps) <= 6, steps
    assert steps[0]["rate_rps"] == 10 and steps[0]["passed"], steps
    assert any(not s["passed"] for s in steps), steps  # 2560 req/s is far beyond one worker
    passed = [s["rate_rps"] for s in steps if s["passed"]]
    assert row["capacity_rps_at_slo"] == max(passed) >= 10
    assert row["capacity_limited_by"].split("+")[0] in ("p99", "success", "client")
    # the row's client_* figures are the step at the capacity
    assert row["client_target_rate_rps"] == row["capacity_rps_at_slo"]
    assert row["client_latency_p99_ms"] <= 2000
    # and so are the server's counters and the process samples: that step's whole run (its
    # first warmup_s included), never fewer requests than its judged part
    assert row["server_requests"] >= row["client_ok"] > 0
    assert row["proc_cpu_pct"] > 0 and row["proc_ctx_all_per_req"] > 0 and row["host_speed"] > 0
    assert "capacity req/s at SLO" in (run_dir / "results.md").read_text()
    # `sweeper verify` takes the capacity pick, at the requests in flight at its capacity
    spec, trial, connections, why = winner(run_dir)
    assert trial.trial_id == row["trial_id"] and trial.capacity is not None
    assert connections == in_flight(row["capacity_rps_at_slo"], row["client_latency_mean_ms"]) >= 1
    assert "Little" not in why and "in flight at its capacity" in why
    assert_nothing_left(out)
