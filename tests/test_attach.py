"""Sweeping a TorchServe someone else runs (the sweep's `target`), against a fake TorchServe
on a real loopback socket (tests/fake_torchserve.py): the schema, the refusals (one line,
exit 2, no load sent), the snapshot and the restore, and whole runs: interrupted, failed,
cut off from the target and resumed. tests/test_e2e_attach.py does the same against a real
TorchServe started outside the sweeper.
"""

from __future__ import annotations

import _thread
import json
import socket
import time
from datetime import datetime, timezone

import pandas as pd
import pytest
import yaml

from fake_torchserve import KEYS, FakeTorchServe
from sweeper.attach import differences
from sweeper.cli import main
from sweeper.errors import SpecError
from sweeper.executors.attach import restore
from sweeper.rundir import RunDir
from sweeper.sweepfile import parse_sweep
from sweeper.torchserve import attached
from sweeper.torchserve.attached import AttachedServer

LOAD = {"mode": "closed", "concurrency": 2, "duration_s": 0.3}
QUICK = {"warmup_s": 0, "server_warmup_s": 0, "registration_warmup_s": 0}


def sweep(tmp_path, model=None, target=None, **groups) -> str:
    doc = {"name": "att", "model": model or {"registered": "mlp"}, "load": LOAD, "settings": dict(QUICK), **groups}
    if target is not None:
        doc["target"] = target
    path = tmp_path / "att.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def a_target(ts: FakeTorchServe, tmp_path) -> dict:
    return ts.target(ts.key_file(tmp_path))


def run_dir(tmp_path) -> RunDir:
    (path,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    return RunDir(path)


def predictions(ts: FakeTorchServe) -> int:
    return sum(1 for method, path in ts.calls if path.startswith("/predictions/"))


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --- the schema -----------------------------------------------------------------------------


def spec_of(**groups):
    doc = {"name": "s", "load": LOAD, **groups}
    return parse_sweep(doc, "s.yaml")


def test_a_target_needs_only_its_inference_address():
    t = spec_of(target={"inference": "http://127.0.0.1:18080/"}).target
    assert t.management_url == "http://127.0.0.1:8081" and t.metrics_url == "http://127.0.0.1:8082"
    assert t.key_file is None and t.allow_remote is False
    t = spec_of(target={"inference": "http://localhost:8080", "management": "http://localhost:9081"}).target
    assert t.management_url == "http://localhost:9081" and t.metrics_url == "http://localhost:8082"


def test_a_registered_model_names_the_model():
    s = spec_of(model={"registered": "Resnet-152"}, target={"inference": "http://127.0.0.1:8080"}, request={"text": "x"})
    assert s.model.name == "Resnet-152" and s.model.registered == "Resnet-152"


TARGET = {"inference": "http://127.0.0.1:8080"}


@pytest.mark.parametrize(
    "groups, key, rule",
    [
        ({"target": {}}, "target.inference", "required"),
        ({"target": {"inference": "https://127.0.0.1:8080"}}, "target.inference", "no https"),
        ({"target": {"inference": "http://127.0.0.1:8080/api"}}, "target.inference", "no path"),
        ({"target": {"inference": "http://192.0.2.7:8080"}}, "target.inference", "allow_remote"),
        ({"target": {**TARGET, "metrics": "http://example.com:8082"}}, "target.metrics", "beyond loopback"),
        ({"target": {**TARGET, "allow_remote": "yes"}}, "target.allow_remote", "true or false"),
        ({"model": {"registered": "mlp"}}, "model.registered", "only with a target"),
        ({"model": {"registered": "mlp", "name": "cnn"}, "target": TARGET}, "model.name", "leave name out"),
        ({"model": {"registered": "mlp", "archive": "x.mar"}, "target": TARGET}, "model.registered", "not with archive"),
        ({"server": {"job_queue_size": [10, 20]}, "target": TARGET}, "server.job_queue_size", "needs a TorchServe restart"),
        ({"server": {"number_of_netty_threads": 4}, "target": TARGET}, "server.number_of_netty_threads", "restart"),
        ({"env": {"OMP_NUM_THREADS": [1, 2]}, "target": TARGET}, "env.OMP_NUM_THREADS", "needs a TorchServe restart"),
        ({"settings": {"base_port": 9000}, "target": TARGET}, "settings.base_port", "not with a target"),
        ({"settings": {"baseline": True}, "target": TARGET}, "settings.baseline", "not with a target"),
        ({"settings": {"duel": {}}, "target": TARGET}, "settings.duel", "not with a target"),
    ],
)
def test_schema_rules_of_a_target(groups, key, rule):
    with pytest.raises(SpecError) as err:
        spec_of(**groups)
    assert err.value.key == key and rule in err.value.rule, str(err.value)


def test_a_remote_target_is_allowed_when_the_sweep_says_so():
    t = spec_of(target={"inference": "http://192.0.2.7:8080", "allow_remote": True}).target
    assert t.management_url == "http://192.0.2.7:8081"


# --- refusals: one line, exit 2, nothing sent -------------------------------------------------


@pytest.mark.parametrize("group", [{"server": {"job_queue_size": [10, 20]}}, {"env": {"OMP_NUM_THREADS": [1, 2]}}])
def test_a_restart_key_is_refused_before_the_target_is_asked(tmp_path, capsys, group):
    with FakeTorchServe() as ts:
        ts.add("mlp")
        path = sweep(tmp_path, **group)
        assert main(["run", path, "--target", ts.url, "--out", str(tmp_path / "runs")]) == 2
        line = one_line(capsys)
        key = next(f"{g}.{k}" for g, v in group.items() for k in v)
        assert f"{key}: needs a TorchServe restart" in line and path in line
        assert ts.calls == []
    assert not (tmp_path / "runs").exists()


def test_a_target_beyond_loopback_is_refused_without_the_flag(tmp_path, capsys):
    path = sweep(tmp_path)
    assert main(["run", path, "--target", "http://192.0.2.7:8080", "--out", str(tmp_path / "runs")]) == 2
    line = one_line(capsys)
    assert "target.inference: http://192.0.2.7:8080 is beyond loopback" in line and "--allow-remote" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("keys, expect", [
    ({**KEYS, "management": "wrongkey"}, "refused the management key"),
    ({**KEYS, "inference": "wrongkey"}, "refused the inference key"),
    (None, "asks for a key"),
])
def test_a_wrong_or_missing_key_is_refused(tmp_path, capsys, keys, expect):
    with FakeTorchServe() as ts:
        ts.add("mlp")
        target = ts.target(ts.key_file(tmp_path, keys) if keys else None)
        assert main(["run", sweep(tmp_path, target=target), "--out", str(tmp_path / "runs")]) == 2
        line = one_line(capsys)
        assert "target.key_file: " in line and expect in line and "HTTP 400" in line, line
        assert predictions(ts) == 0 and set(ts.models) == {"mlp"}
    for secret in KEYS.values():
        assert secret not in line


def test_an_unreachable_target_is_refused(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["run", sweep(tmp_path), "--target", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "runs")]) == 2
    line = one_line(capsys)
    assert "target.management: cannot reach http://127.0.0.1:8081" in line or "cannot reach" in line, line


def test_a_registered_model_the_target_lacks_is_refused(tmp_path, capsys):
    with FakeTorchServe() as ts:
        ts.add("mlp")
        path = sweep(tmp_path, model={"registered": "resnet"}, target=a_target(ts, tmp_path), request={"text": "x"})
        assert main(["run", path, "--out", str(tmp_path / "runs")]) == 2
        line = one_line(capsys)
        assert "model.registered: the target has no model 'resnet' registered (it has: mlp)" in line
        assert predictions(ts) == 0


def test_an_archive_the_target_store_lacks_is_refused_and_leaves_nothing(tmp_path, capsys):
    with FakeTorchServe(store={"mlp.mar"}) as ts:
        ts.add("mlp")
        path = sweep(tmp_path, model={"name": "textclf"}, target=a_target(ts, tmp_path), request={"text": "x"})
        assert main(["run", path, "--out", str(tmp_path / "runs")]) == 2
        line = one_line(capsys)
        assert "model.name: the target's model store has no textclf.mar" in line
        assert predictions(ts) == 0 and set(ts.models) == {"mlp"}


def test_a_target_without_the_model_api_is_refused_when_a_registration_is_needed(tmp_path, capsys):
    with FakeTorchServe(model_api=False) as ts:
        ts.add("mlp", batch_size=1)
        path = sweep(tmp_path, model={"registered": "mlp", "batch_size": [1, 4]}, target=a_target(ts, tmp_path))
        assert main(["run", path, "--out", str(tmp_path / "runs")]) == 2
        line = one_line(capsys)
        assert "enable_model_api=true" in line and "HTTP 405" in line
        assert predictions(ts) == 0


@pytest.mark.timeout(90)
def test_workers_alone_need_no_model_api(tmp_path, capsys):
    """Scaling works without enable_model_api: a sweep of the registered model's workers runs."""
    with FakeTorchServe(model_api=False) as ts:
        ts.add("mlp", workers=1, batch_size=2)
        before = ts.state()
        path = sweep(tmp_path, model={"registered": "mlp", "min_workers": [1, 2]}, target=a_target(ts, tmp_path))
        assert main(["run", path, "--out", str(tmp_path / "runs"), "--no-report"]) == 0, capsys.readouterr().err
        assert ts.state() == before
        df = pd.read_csv(run_dir(tmp_path).results_csv)
        assert (df["server_model_name"] == "mlp").all() and (df["param_model_batch_size"] == 2).all()


@pytest.mark.timeout(90)
def test_keys_that_expire_before_a_trial_ends_fail_it_and_are_not_regenerated(tmp_path, capsys):
    with FakeTorchServe() as ts:
        ts.add("mlp")
        key_file = ts.key_file(tmp_path)
        data = json.loads(key_file.read_text())
        soon = datetime.fromtimestamp(time.time() + 20, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        for api in ("management", "inference"):
            data[api]["expiration time"] = soon
        key_file.write_text(json.dumps(data))
        path = sweep(tmp_path, target=ts.target(key_file))
        assert main(["run", path, "--out", str(tmp_path / "runs"), "--no-report"]) == 1
        assert not [p for _, p in ts.calls if p.startswith("/token")]
    row = pd.read_csv(run_dir(tmp_path).results_csv).iloc[0]
    assert row["status"] == "failed" and "expire in" in row["error"] and "regenerate them on the server" in row["error"]


def test_plan_asks_the_target_nothing(tmp_path, capsys):
    with FakeTorchServe() as ts:
        ts.add("mlp")
        path = sweep(tmp_path, model={"registered": "mlp", "batch_size": [1, 4]}, target=a_target(ts, tmp_path))
        assert main(["plan", path]) == 0
        assert ts.calls == []
        assert "2 trial runs" in capsys.readouterr().out


# --- snapshot and restore -----------------------------------------------------------------------


def test_restore_undoes_what_the_sweeper_did_and_nothing_else(tmp_path):
    with FakeTorchServe(keys=False) as ts:
        ts.add("mlp", workers=1)
        ts.add("textclf", workers=2)
        ts.add("mine_sweeper_2")  # the owner's own model, spelled like the sweeper's: in the snapshot
        server = AttachedServer(ts.url, ts.url, ts.url)
        before = attached.snapshot(server)
        assert before["models"]["mlp"][0]["minWorkers"] == 1 and before["models"]["textclf"][0]["workers"] == 2
        ts.add("mlp_sweeper_3", batch_size=8)  # left by a sweeper that was killed
        ts.models["mlp"]["minWorkers"] = ts.models["mlp"]["maxWorkers"] = 3  # scaled by it
        done = restore(server, before, "mlp")
        assert done == ["unregistered mlp_sweeper_3", "mlp back to 1-1 workers"]
        assert attached.snapshot(server) == before
        assert ts.touched("textclf") == [] and ts.touched("mine_sweeper_2") == []
        assert restore(server, before, "mlp") == []  # nothing left to undo


def test_differences_name_what_changed():
    was = {"models": {"a": [{"minWorkers": 1}], "b": [{"minWorkers": 1}]}}
    now = {"models": {"a": [{"minWorkers": 2}], "c": [{"minWorkers": 1}]}}
    assert differences(was, now) == ["b is gone", "c is new", "a was [{'minWorkers': 1}], now [{'minWorkers': 2}]"]
    assert differences(was, was) == []


def test_processes_of_another_machine_are_not_looked_for():
    pid, why = attached.find_frontend("http://192.0.2.7:8080")  # reads this machine's sockets only
    assert pid is None and "is not this machine" in why


def test_own_names_are_recognised():
    assert attached.own_name("mlp", 3) == "mlp_sweeper_3" and attached.is_own_name("mlp_sweeper_3")
    assert not attached.is_own_name("mlp") and not attached.is_own_name("mlp_sweeper_") and not attached.is_own_name("sweeper_2x")


# --- whole runs -------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_sweep_on_a_target_leaves_it_as_found(tmp_path, capsys):
    with FakeTorchServe(store={"mlp.mar", "textclf.mar"}) as ts:
        ts.add("mlp", workers=1, batch_size=1, max_batch_delay=10)
        ts.add("textclf", workers=2)
        before = ts.state()
        path = sweep(tmp_path, model={"registered": "mlp", "batch_size": [1, 4], "min_workers": [1, 2]},
                     target=a_target(ts, tmp_path))
        assert main(["run", path, "--out", str(tmp_path / "runs"), "--no-report"]) == 0, capsys.readouterr().err
        assert ts.state() == before and ts.touched("textclf") == []
        # batch 1 ran on mlp itself, scaled; batch 4 on one registration of the sweeper's, scaled too
        registrations = [p for m, p in ts.calls if m == "POST" and p.startswith("/models?") and "batch_size=4" in p]
        assert len(registrations) == 1 and "url=mlp.mar" in registrations[0]
    run = run_dir(tmp_path)
    df = pd.read_csv(run.results_csv)
    assert (df["status"] == "ok").all() and len(df) == 4
    names = dict(zip(zip(df["param_model_batch_size"], df["param_model_min_workers"]), df["server_model_name"]))
    assert names == {(1, 1): "mlp", (1, 2): "mlp", (4, 1): "mlp_sweeper_1", (4, 2): "mlp_sweeper_1"}
    assert (df["param_model_max_batch_delay_ms"] == 10).all()  # left out of the sweep: mlp's own
    assert (df["server_requests"] == df["client_ok"]).all()  # /metrics, per model
    # unknown here: the server's processes (not a TorchServe on this port) and its log's batches
    assert df["proc_cpu_pct"].isna().all() and df["server_batches"].isna().all()
    assert not any((run.path / "trials").glob("*/config.properties"))  # no config of ours was used
    assert run.target_before() == {k: v for k, v in run.target_after().items() if k == "models"}
    assert run.target_after()["differences"] == [] and run.target_after()["restored"] is True
    target = run.machine()["target"]
    assert target["torchserve"] == "0.12.0" and target["processes_sampled"] is False
    assert "not a TorchServe frontend" in target["processes_note"] and target["model"]["batchSize"] == 1
    sweep_yaml = yaml.safe_load(run.sweep_yaml.read_text())
    assert sweep_yaml["target"]["key_file"] == str(tmp_path / "key_file.json")
    assert sweep_yaml["model"]["max_batch_delay_ms"] == 10  # filled from the registered model, for --resume
    for secret in KEYS.values():
        assert secret not in run.sweep_yaml.read_text() + run.machine_json.read_text()
    assert list(df["server_registered"]) == [0, 0, 1, 0] and list(df["server_scaled"]) == [0, 1, 0, 1]
    # sweeper verify would measure a server of its own, not the target
    from sweeper.verify import verify

    with pytest.raises(SpecError, match="target: a run on a target"):
        verify(run.path, preference="auto")
    # the report says why the server's columns are empty
    from sweeper.report import render_report

    _, md = render_report(run.path)
    text = " ".join(md.read_text().split())
    assert "Measured on a TorchServe the sweeper did not start" in text
    assert "(proc_* columns) are empty, not zero: port" in text and "not a TorchServe frontend" in text


@pytest.mark.timeout(90)
def test_an_archive_in_the_target_store_runs_on_registrations_of_the_sweepers_own(tmp_path, capsys):
    with FakeTorchServe(store={"mlp.mar"}) as ts:
        ts.add("mlp", workers=2)  # the owner's mlp is not the sweep's: never touched
        # with the warm-ups (no JVM of the target's to watch here: their minimums)
        path = sweep(tmp_path, model={"name": "mlp", "batch_size": [1, 2], "min_workers": 1},
                     target=a_target(ts, tmp_path), settings={**QUICK, "server_warmup_s": 0.5, "registration_warmup_s": 0.3})
        assert main(["run", path, "--out", str(tmp_path / "runs"), "--no-report"]) == 0, capsys.readouterr().err
        assert set(ts.models) == {"mlp"} and ts.touched("mlp") == []
    df = pd.read_csv(run_dir(tmp_path).results_csv)
    assert sorted(df["server_model_name"]) == ["mlp_sweeper_1", "mlp_sweeper_2"]
    assert df["server_warmup_s"].iloc[0] >= 0.5 and df["client_warmup_s"].iloc[1] >= 0.3


@pytest.mark.timeout(90)
def test_ctrl_c_mid_sweep_restores_the_target(tmp_path, capsys):
    seen = []

    def interrupt(name):
        seen.append(name)
        if name.endswith("_sweeper_1") and len([n for n in seen if n == name]) == 50:
            _thread.interrupt_main()

    with FakeTorchServe(on_prediction=interrupt) as ts:
        ts.add("mlp", workers=1, batch_size=1)
        before = ts.state()
        path = sweep(tmp_path, model={"registered": "mlp", "batch_size": [1, 4], "min_workers": [2]},
                     target=a_target(ts, tmp_path))
        assert main(["run", path, "--out", str(tmp_path / "runs"), "--no-report"]) == 130
        assert ts.state() == before
    err = capsys.readouterr().err
    assert "target left as found" in err and "sweeper run --resume" in err
    assert run_dir(tmp_path).target_after()["differences"] == []


@pytest.mark.timeout(90)
def test_failed_trials_drop_their_registration_and_the_target_is_restored(tmp_path, capsys):
    with FakeTorchServe(fail_predictions={"mlp_sweeper_1"}) as ts:
        ts.add("mlp", workers=1, batch_size=1)
        before = ts.state()
        path = sweep(tmp_path, model={"registered": "mlp", "batch_size": [4, 1], "min_workers": [1, 2]},
                     target=a_target(ts, tmp_path))
        assert main(["run", path, "--out", str(tmp_path / "runs"), "--no-report"]) == 1
        assert ts.state() == before
        # the failed trial's registration went with it; the next trial registered afresh
        assert ("DELETE", "/models/mlp_sweeper_1") in ts.calls and "mlp_sweeper_2" in " ".join(p for _, p in ts.calls)
    df = pd.read_csv(run_dir(tmp_path).results_csv)
    assert list(df["status"]) == ["failed", "ok", "ok", "ok"], df[["status", "error"]]


@pytest.mark.timeout(120)
def test_a_target_lost_mid_sweep_is_restored_by_resume(tmp_path, capsys):
    """The target stops answering during the second trial: the sweep stops, cannot restore,
    says so and exits 1; `--resume` once it answers again finishes and restores it."""
    state = {"n": 0, "lost": False}

    def lose(name):  # once, 20 requests into the first copy's trial
        state["n"] += name == "mlp_sweeper_1"
        if state["n"] > 20 and not state["lost"]:
            state["lost"] = ts.down = True

    ts = FakeTorchServe(on_prediction=lose)
    with ts:
        ts.add("mlp", workers=1, batch_size=1)
        before = ts.state()
        path = sweep(tmp_path, model={"registered": "mlp", "batch_size": [1, 4], "min_workers": [2]},
                     target=a_target(ts, tmp_path), settings={**QUICK, "max_consecutive_failures": 1})
        assert main(["run", path, "--out", str(tmp_path / "runs"), "--no-report"]) == 1
        err = capsys.readouterr().err
        assert "could not restore the target" in err and "sweeper run --resume" in err
        run = run_dir(tmp_path)
        assert run.target_after()["restored"] is False
        assert "mlp_sweeper_1" in ts.models and ts.models["mlp"]["minWorkers"] == 1  # left over, then given back
        ts.down = False
        assert main(["run", "--resume", str(run.path), "--no-report"]) == 0, capsys.readouterr().err
        assert ts.state() == before
    df = pd.read_csv(run.results_csv)
    assert list(df["status"]) == ["ok", "ok"]
    assert run.target_after()["restored"] is True and run.target_after()["differences"] == []
    assert json.loads(run.target_before_json.read_text())["models"]["mlp"][0]["minWorkers"] == 1
