"""sweeper compare: runs matched on parameters, ratios against the first run, best per run."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sweeper.cli import main
from sweeper.compare import compare, markdown
from sweeper.errors import SpecError


def _run(tmp_path, name, host, throughputs, extra_threads=()):
    run_dir = tmp_path / name
    run_dir.mkdir()
    rows = []
    for i, ((workers, threads), tput) in enumerate(throughputs.items()):
        for repeat, jitter in enumerate((-1.0, 1.0)):
            rows.append(
                dict(
                    sweep="tc", trial_id=f"{name}{i}", repeat=repeat, status="ok", seq=i,
                    param_model_name="mlp", param_model_batch_size=1,
                    param_server_default_workers_per_model=workers, param_env_OMP_NUM_THREADS=threads,
                    load_mode="closed", load_concurrency=16, load_rate_rps=float("nan"),
                    client_throughput_rps=tput + jitter, client_success_rate=1.0,
                    client_latency_p50_ms=5.0, client_latency_p90_ms=8.0, client_latency_p99_ms=10.0,
                )
            )
    pd.DataFrame(rows).to_csv(run_dir / "results.csv", index=False)
    (run_dir / "machine.json").write_text(json.dumps({"hostname": host, "cpu_model": "cpu", "cores_usable": 2}))
    return run_dir


def test_matched_on_parameters_with_ratios_and_best(tmp_path):
    a = _run(tmp_path, "a", "small", {(1, 1): 100.0, (2, 1): 150.0, (2, 2): 50.0})
    b = _run(tmp_path, "b", "big", {(1, 1): 300.0, (2, 1): 300.0, (2, 2): 500.0, (4, 4): 900.0})
    merged, best = compare([a, b])
    assert len(merged) == 3  # (4, 4) ran only on b
    row = merged[(merged["param_server_default_workers_per_model"] == "2") & (merged["param_env_OMP_NUM_THREADS"] == "2")].iloc[0]
    assert row["run0"] == pytest.approx(50.0) and row["ratio1"] == pytest.approx(10.0)
    assert "default_workers_per_model=2" in best[0][1] and best[0][2] == pytest.approx(150.0)
    assert "default_workers_per_model=4" in best[1][1] and best[1][2] == pytest.approx(900.0)
    text = markdown(merged, best)
    assert "10.00x" in text and "small" in text and "big" in text


def test_cli_compare_writes_markdown(tmp_path, capsys):
    a = _run(tmp_path, "a", "one", {(1, 1): 100.0})
    b = _run(tmp_path, "b", "two", {(1, 1): 200.0})
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp.md")]) == 0
    assert "2.00x" in (tmp_path / "cmp.md").read_text()


def test_compare_needs_two_real_runs(tmp_path, capsys):
    a = _run(tmp_path, "a", "one", {(1, 1): 100.0})
    with pytest.raises(SpecError):
        compare([a])
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "no results.csv" in capsys.readouterr().err


def test_one_run_across_ray_nodes_splits_by_node(tmp_path, capsys):
    """settings.placement every_node: one results.csv with node_label; compare alone splits it."""
    a = _run(tmp_path, "a", "driver", {(1, 1): 100.0, (2, 1): 150.0})
    df = pd.read_csv(a / "results.csv")
    fast = df.assign(node_label="10.0.0.2-bbbbbb", client_throughput_rps=df["client_throughput_rps"] * 3)
    pd.concat([df.assign(node_label="10.0.0.1-aaaaaa"), fast]).to_csv(a / "results.csv", index=False)
    for node, host in (("10.0.0.1-aaaaaa", "small-box"), ("10.0.0.2-bbbbbb", "big-box")):
        (a / "nodes" / node).mkdir(parents=True)
        (a / "nodes" / node / "machine.json").write_text(json.dumps({"hostname": host, "cpu_model": "cpu", "cores_usable": 8}))
    merged, best = compare([a])
    assert len(merged) == 2 and merged["ratio1"].tolist() == pytest.approx([3.0, 3.0])
    assert "small-box" in best[0][0] and "big-box" in best[1][0]
    assert main(["compare", str(a)]) == 0
    assert "3.00x" in capsys.readouterr().out
