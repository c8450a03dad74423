"""End-to-end: a model archive whose handler this project did not write (pytorch/serve's
text-classification example, tests/fixtures/foreign_text), with its own payload format
(plain text), against a real TorchServe."""

from __future__ import annotations

import json
import os
import re
import time

import pandas as pd
import pytest

from e2e_helpers import assert_nothing_left, run_dirs, write_sweep
from foreign_model import FIXTURE, build_archive
from sweeper.cli import main
from sweeper.load.external import find_client

pytestmark = pytest.mark.e2e

TEXT = (FIXTURE / "sample_text.txt").read_text().strip()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    # the archive's own model-config.yaml says batch 16 / 3 workers: the sweep's values win
    return build_archive(tmp_path_factory.mktemp("store"), config_yaml="batchSize: 16\nmaxBatchDelay: 500\nminWorkers: 3\nmaxWorkers: 3\n")


@pytest.fixture(scope="module")
def plain_archive(tmp_path_factory):
    return build_archive(tmp_path_factory.mktemp("plain"))


def _results(out):
    (run_dir,) = run_dirs(out)
    return run_dir, pd.read_csv(run_dir / "results.csv")


def test_a_foreign_handler_with_its_own_payload(tmp_path, archive, capsys):
    out = tmp_path / "runs"
    (tmp_path / "short.txt").write_text("a fine film")
    sweep = write_sweep(
        tmp_path,
        "foreign",
        model={"archive": str(archive), "batch_size": [1, 4], "max_batch_delay_ms": 50, "min_workers": 1},
        request=[{"name": "sample", "text": TEXT}, {"name": "files", "files": ["short.txt", str(FIXTURE / "sample_text.txt")]}],
        load={"mode": "closed", "concurrency": 8, "duration_s": 1.5},
        settings={"warmup_s": 0.5, "server_warmup_s": 2, "server_warmup_max_s": 5},
    )
    assert main(["run", str(sweep), "--out", str(out), "--no-report"]) == 0, capsys.readouterr().err
    run_dir, df = _results(out)
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert (df["param_model_name"] == "textclf").all()
    assert sorted(df["param_request_name"]) == ["files", "files", "sample", "sample"]
    assert (df["client_success_rate"] == 1.0).all() and (df["client_ok"] > 20).all()
    # no X-Batch-Size from this handler: the served batch size comes from the server's log
    assert df["client_batch_size_mean"].isna().all()
    assert (df["server_batches"] * df["server_batch_size_mean"]).round(6).tolist() == df["client_ok"].astype(float).tolist()
    b1, b4 = df[df["param_model_batch_size"] == 1], df[df["param_model_batch_size"] == 4]
    assert (b1["server_batch_size_mean"] == 1.0).all()
    assert (b4["server_batch_size_mean"] > 1.5).all()  # 16 from the archive would be > 4
    assert (b4["server_batch_size_mean"] <= 4.0).all()
    files = df[df["param_request_name"] == "files"].iloc[0]
    assert files["request_body_bytes_mean"] == pytest.approx((len("a fine film") + len((FIXTURE / "sample_text.txt").read_bytes())) / 2)
    # one worker served each trial, as the sweep says, not the archive's three
    for log in (run_dir / "trials").glob("*/logs/stdout.log"):
        served_by = set(re.findall(r"(W-\d+)-textclf[^ ]* .*PredictionTime", log.read_text()))
        assert len(served_by) == 1, (log, served_by)

    # a second opinion on the winner runs it from the user's archive with its own payload
    if find_client("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("wrk must be installed under CI (make test installs it)")
        assert_nothing_left(out)
        pytest.skip("wrk not installed: verify not exercised")
    assert main(["verify", str(run_dir), "--pairs", "1", "--duration-s", "1"]) == 0, capsys.readouterr().err
    result = json.loads((run_dir / "verify.json").read_text())
    first_payload = {"sample": len(TEXT.encode()), "files": len("a fine film")}[result["request"]]
    assert result["body_bytes"] == first_payload and result["request_payloads"] == {"sample": 1, "files": 2}[result["request"]]
    # wrk, like the engine, sent every payload of the set in turn
    assert result["request_payloads_sent"] == result["request_payloads"]
    pair = result["pairs"][0]
    assert pair["engine_rps"] > 0 and pair["client_rps"] > 0 and pair["engine_errors"] == pair["client_errors"] == 0
    assert_nothing_left(out)


def test_a_payload_the_handler_rejects_fails_at_once_with_the_answer(tmp_path, plain_archive, capsys):
    out = tmp_path / "runs"
    sweep = write_sweep(
        tmp_path,
        "rejected",
        model={"archive": str(plain_archive), "batch_size": 1, "min_workers": 1},
        request={"json": {"text": TEXT}},  # the handler wants text; JSON reaches it as a dict
        load={"mode": "closed", "concurrency": 8, "duration_s": 30},
        settings={"warmup_s": 5},
    )
    started = time.monotonic()
    assert main(["run", str(sweep), "--out", str(out), "--no-report"]) == 1
    assert time.monotonic() - started < 30  # neither the warm-up nor the window was spent
    _, df = _results(out)
    row = df.iloc[0]
    assert row["status"] == "failed"
    assert row["error"] == (
        "every first request failed before the warm-up (expected HTTP 200; statuses 503:1); first answer: "
        'HTTP 503: { "code": 503, "type": "InternalServerException", "message": "Prediction failed" }'
    )
    assert "1 trial(s) failed" in capsys.readouterr().err
    assert_nothing_left(out)


def test_a_worker_that_dies_while_loading_says_why(tmp_path, capsys):
    store = tmp_path / "store"
    handler = (FIXTURE / "handler.py").read_text().replace("import torch\n", "import torch\nimport no_such_module_for_the_test\n", 1)
    broken = tmp_path / "fixture"
    broken.mkdir()
    (broken / "handler.py").write_text(handler)
    (broken / "index_to_name.json").write_text((FIXTURE / "index_to_name.json").read_text())
    mar = build_archive(store, fixture=broken)
    out = tmp_path / "runs"
    sweep = write_sweep(
        tmp_path, "broken",
        model={"archive": str(mar), "min_workers": 1},
        request={"text": TEXT},
        load={"mode": "closed", "concurrency": 2, "duration_s": 1},
    )
    assert main(["run", str(sweep), "--out", str(out), "--no-report"]) == 1
    _, df = _results(out)
    error = df.iloc[0]["error"]
    assert error.startswith("worker error: ModuleNotFoundError: No module named 'no_such_module_for_the_test' (register textclf: HTTP 500")
    assert_nothing_left(out)
