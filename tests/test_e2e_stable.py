"""End to end against a real TorchServe: a sweep under settings.stability (windows
reported by the engine, the trial's figures from its last windows), interleaved repeats
on kept registrations (settings.keep_registered), and `sweeper verify` on the run (with
wrk where installed)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from e2e_helpers import assert_nothing_left, run_dirs, write_sweep
from sweeper.cli import main
from sweeper.load.external import find_client

pytestmark = pytest.mark.e2e


def test_stable_windows_interleaved_repeats_and_verify(tmp_path, capsys):
    out = tmp_path / "runs"
    sweep = write_sweep(
        tmp_path,
        "stable",
        model={"name": "mlp", "batch_size": [1, 4], "max_batch_delay_ms": 5, "min_workers": 1},
        load={"mode": "closed", "concurrency": 4, "duration_s": 1},
        # max_cv 1.0: any two windows agree, so each trial stops after two 0.5 s windows
        settings={"warmup_s": 0.3, "registration_warmup_s": 0.8, "repeats": 2, "server_warmup_s": 1.5, "server_warmup_max_s": 4,
                  "stability": {"window_s": 0.5, "windows": 2, "max_cv": 1.0, "max_duration_s": 4}},
    )
    assert main(["run", str(sweep), "--out", str(out)]) == 0
    (run_dir,) = run_dirs(out)
    df = pd.read_csv(run_dir / "results.csv").sort_values("seq")
    # interleaved: both trials' repeat 0, then both repeat 1, on one server
    assert list(df["repeat"]) == [0, 0, 1, 1]
    assert len(list((run_dir / "servers").iterdir())) == 1
    # settings.keep_registered: batch 1, batch 4 (under a second name: the first holds
    # "mlp"), then each again on its kept registration: 2 registrations, not 4 (no
    # repeat runs right after its own, so the second pass starts with batch 1 again)
    assert list(df["param_model_batch_size"]) == [1, 4, 1, 4]
    assert list(df["server_model_name"]) == ["mlp", "mlp_1", "mlp", "mlp_1"]
    assert list(df["server_registered"]) == [1, 1, 0, 0]
    # the trial on the registration made for it (batch 4) warmed up for at least
    # registration_warmup_s (on while the real JVM compiled, at most 3x) before its own
    # warmup_s; the first had the server warm-up, the kept ones warmup_s alone
    warmups = list(df["client_warmup_s"])
    assert warmups[0] == warmups[2] == warmups[3] == 0.3
    assert 0.8 + 0.3 <= warmups[1] <= 3 * 0.8 + 0.3 + 1.5, warmups  # + starting the engine
    # the counters and the served batches were read under the name each trial ran on
    assert (df["server_requests"] >= df["client_ok"]).all() and (df["server_batches"] > 0).all()
    # the idle registration's worker (~220 MB) is not in the trial's memory: the trials
    # with another registration beside them hold about what the first trial, alone, held
    assert (df["proc_rss_mb"].iloc[1:] < df["proc_rss_mb"].iloc[0] + 120).all(), df["proc_rss_mb"]
    # the server's first trial alone gets the server warm-up: at least server_warmup_s,
    # longer while the JVM's compiler threads were busy, at most server_warmup_max_s
    first = df["server_warmup_s"].iloc[0]
    assert 1.5 <= first <= 4 + 1 and list(df["server_warmup_s"].iloc[1:]) == [0, 0, 0]
    assert df["overhead_s"].iloc[0] >= first + 0.3
    # the real JVM's compiler threads were found and read (quiet: below 5% of a core, or
    # the cap stopped the warm-up)
    jit_pct = df["server_warmup_jit_pct"].iloc[0]
    assert 0 <= jit_pct <= 100 and (jit_pct < 5 or first >= 4)
    assert df["server_warmup_jit_pct"].iloc[1:].isna().all()
    # the machine's CPU time over each window (Linux /proc/stat)
    assert df["host_busy_pct"].between(0.1, 100).all() and df["host_steal_pct"].between(0, 100).all()
    # the CPU speed probe sampled through every window (sweeper.hostspeed: every probe_interval_s)
    assert (df["host_speed"] > 0).all() and (df["host_speed_n"] >= 2).all()
    for _, r in df.iterrows():
        windows = json.loads(r["client_windows"])
        used = [w for w in windows if w["used"]]
        assert len(used) == 2 and r["measure_s"] == pytest.approx(1.0)
        assert not r["client_unstable"] and r["client_window_cv"] <= 1.0
        # the figures are those of the used windows (closed loop: the completions in them,
        # the windows count by scheduled time: they differ by the requests in flight)
        assert abs(r["client_ok"] - sum(w["ok"] for w in used)) <= 4
    assert "[" in (run_dir / "results.md").read_text()  # intervals shown

    if find_client("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("wrk must be installed under CI (make test installs it)")
        assert_nothing_left(out)
        pytest.skip("wrk not installed: verify not exercised")
    capsys.readouterr()
    assert main(["verify", str(run_dir), "--pairs", "1", "--duration-s", "1"]) == 0
    said = capsys.readouterr().out
    assert "engine/wrk median" in said
    result = json.loads((run_dir / "verify.json").read_text())
    assert result["pairs"][0]["engine_rps"] > 0 and result["pairs"][0]["client_rps"] > 0
    assert "Second opinion" in (run_dir / "report.md").read_text()
    assert_nothing_left(out)
