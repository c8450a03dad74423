"""Sweep your own model, without a server: the request group and model.archive in the schema,
payload files, archive manifests, the request axis, TorchServe's per-batch log lines,
the success-rate verdict and `sweeper init`."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import yaml

from sweeper.answers import check_first_answers, check_success
from sweeper.cli import main
from sweeper.errors import RequestsFailed, SpecError
from sweeper.load.http import prepare
from sweeper.load.types import Target
from sweeper.mar import read_archive
from sweeper.payload import MAX_FILE_BYTES, load_request_sets
from sweeper.plan import expand
from sweeper.serverlog import count_batches, last_worker_error
from sweeper.sweepfile import dump_resolved, parse_sweep
from sweeper.usermodel import resolve

LOAD = {"mode": "closed", "concurrency": 2, "duration_s": 1}


def doc(**groups):
    return {"name": "mine", "load": LOAD, **groups}


def write_mar(path, manifest=None, extra=()):
    manifest = {"model": {"modelName": "Resnet-152", "handler": "handler.py"}} if manifest is None else manifest
    with zipfile.ZipFile(path, "w") as z:
        if manifest is not False:
            z.writestr("MAR-INF/MANIFEST.json", manifest if isinstance(manifest, str) else json.dumps(manifest))
        for name in extra:
            z.writestr(name, "x")
    return path


def sweep_file(tmp_path, data):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def one_line_exit_2(capsys, argv, key, rule):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert f": {key}: " in err and rule in err, err
    return err


# --- schema --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_, key, rule",
    [
        ({}, "request", "give exactly one of files, text or json, none was given"),
        ({"text": "a", "json": 1}, "request", "give exactly one of files, text or json, got text and json"),
        ({"files": []}, "request.files", "must not be empty"),
        ({"text": "a", "method": "GET"}, "request.method", "must be 'POST' or 'PUT'"),
        ({"text": "a", "expect_status": 404}, "request.expect_status", "must be <= 299"),
        ({"text": "a", "content_type": "text/plain\r\nX-Evil: 1"}, "request.content_type", "must be a MIME type"),
        ({"text": "a", "body": "x"}, "request.body", "unknown key"),
        ([{"text": "a"}], "request[0]", "name: required when request is a list"),
        ([{"name": "a", "text": "a"}, {"name": "a", "text": "b"}], "request[1]", "name: duplicate of request[0]"),
    ],
)
def test_bad_request_groups_are_one_line(request_, key, rule):
    with pytest.raises(SpecError) as exc:
        parse_sweep(doc(request=request_), "x.yaml")
    assert (exc.value.key, rule in exc.value.rule) == (key, True), str(exc.value)


def test_json_null_is_a_payload_and_an_archive_needs_a_request():
    spec = parse_sweep(doc(request={"json": None}), "x.yaml")
    assert spec.requests[0].has_json and spec.requests[0].label == "json"
    with pytest.raises(SpecError) as exc:
        parse_sweep(doc(model={"archive": "my.mar"}), "x.yaml")
    assert exc.value.key == "request" and "required with model.archive" in exc.value.rule


def test_model_names_stay_lowercase_without_an_archive():
    with pytest.raises(SpecError) as exc:
        parse_sweep(doc(model={"name": "MLP"}), "x.yaml")
    assert str(exc.value) == "x.yaml: model.name: must be a lowercase name such as mlp, got 'MLP'"
    spec = parse_sweep(doc(model={"archive": "r.mar", "name": "Resnet-152"}, request={"text": "a"}), "x.yaml")
    assert spec.model.name == "Resnet-152"


# --- payload files ---------------------------------------------------------------------------


def test_payloads_are_read_once_with_content_types(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8jpeg")
    (tmp_path / "b.json").write_bytes(b'{"x": 1}')
    (tmp_path / "c.weird").write_bytes(b"raw")
    spec = parse_sweep(doc(request=[
        {"name": "files", "files": ["a.jpg", "b.json", "c.weird"]},
        {"name": "forced", "files": ["a.jpg"], "content_type": "application/x-thing"},
        {"name": "t", "text": "héllo", "method": "PUT"},
        {"name": "j", "json": {"inputs": [1, 2]}, "expect_status": 201},
    ]), str(tmp_path / "s.yaml"))
    sets = load_request_sets(spec, str(tmp_path / "s.yaml"))
    got = {k: [(p.body, p.content_type) for p in v.payloads] for k, v in sets.items()}
    assert got["files"] == [(b"\xff\xd8jpeg", "image/jpeg"), (b'{"x": 1}', "application/json"), (b"raw", "application/octet-stream")]
    assert got["forced"] == [(b"\xff\xd8jpeg", "application/x-thing")]
    assert got["t"] == [("héllo".encode(), "text/plain")] and sets["t"].method == "PUT"
    assert got["j"] == [(b'{"inputs":[1,2]}', "application/json")] and sets["j"].expect_status == 201


@pytest.mark.parametrize("case", ["missing", "directory", "oversized", "above-max-request-size"])
def test_bad_payload_files_are_one_line_exit_2(tmp_path, capsys, case):
    target = tmp_path / "x.bin"
    if case == "directory":
        target.mkdir()
    elif case == "oversized":
        with open(target, "wb") as f:
            f.truncate(MAX_FILE_BYTES + 1)  # sparse: no 16 MiB written
    elif case == "above-max-request-size":
        with open(target, "wb") as f:
            f.truncate(7_000_000)
    path = sweep_file(tmp_path, doc(request={"files": ["ok.txt", "x.bin"]}))
    (tmp_path / "ok.txt").write_text("fine")
    rule = {
        "missing": f"file not found: {target}",
        "directory": f"must be a regular file, got {target}",
        "oversized": "above the payload limit of 16,777,216 bytes (16 MiB)",
        "above-max-request-size": "above TorchServe's max_request_size (6,553,500 bytes)",
    }[case]
    one_line_exit_2(capsys, ["plan", str(path)], "request.files[1]", rule)


def test_unreadable_payload_file(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    (tmp_path / "x.bin").write_bytes(b"x")
    os.chmod(tmp_path / "x.bin", 0)
    path = sweep_file(tmp_path, doc(request={"files": ["x.bin"]}))
    one_line_exit_2(capsys, ["plan", str(path)], "request.files[0]", "cannot read")


# --- archives --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case, rule",
    [
        ("missing", "file not found"),
        ("not-zip", "is not a zip file"),
        ("no-manifest", "has no MAR-INF/MANIFEST.json"),
        ("bad-json", "is not valid JSON"),
        ("no-name", "names no model (model.modelName)"),
        ("bad-name", "must be letters, digits, _ . -"),
    ],
)
def test_a_file_that_is_not_a_model_archive_is_one_line_exit_2(tmp_path, capsys, case, rule):
    mar = tmp_path / "my.mar"
    if case == "not-zip":
        mar.write_bytes(b"not a zip")
    elif case == "no-manifest":
        write_mar(mar, manifest=False, extra=["model.pt"])
    elif case == "bad-json":
        write_mar(mar, manifest="{nope")
    elif case == "no-name":
        write_mar(mar, manifest={"model": {}})
    elif case == "bad-name":
        write_mar(mar, manifest={"model": {"modelName": "a b/c"}})
    path = sweep_file(tmp_path, doc(model={"archive": "my.mar"}, request={"text": "x"}))
    one_line_exit_2(capsys, ["plan", str(path)], "model.archive", rule)


def test_archive_name_comes_from_the_manifest_and_paths_become_absolute(tmp_path):
    write_mar(tmp_path / "models" / "r.mar" if (tmp_path / "models").mkdir() is None else None, extra=["model-config.yaml"])
    (tmp_path / "in.txt").write_text("hello")
    source = str(tmp_path / "s.yaml")
    spec = parse_sweep(doc(model={"archive": "models/r.mar", "batch_size": [1, 4]}, request={"files": ["in.txt"]}), source)
    user = resolve(spec, source)
    assert user.spec.model.name == "Resnet-152" and user.archive_file == "r.mar"
    assert user.model_store == tmp_path / "models"
    assert user.spec.model.archive == str(tmp_path / "models" / "r.mar")
    assert user.spec.requests[0].files == [str(tmp_path / "in.txt")]
    assert read_archive(tmp_path / "models" / "r.mar").config_file == "model-config.yaml"
    # the resolved sweep.yaml of a run loads again (resume) with the same trials
    again = resolve(parse_sweep(yaml.safe_load(dump_resolved(user.spec)), "/elsewhere/sweep.yaml"), "/elsewhere/sweep.yaml")
    assert [t.trial_id for t in expand(again.spec)] == [t.trial_id for t in expand(user.spec)]
    with pytest.raises(SpecError, match="the archive's manifest names the model 'Resnet-152', got 'other'"):
        resolve(parse_sweep(doc(model={"archive": "models/r.mar", "name": "other"}, request={"text": "x"}), source), source)


# --- the request axis ----------------------------------------------------------------------


def test_a_list_of_request_sets_is_an_axis_and_ids_without_one_are_unchanged():
    base = doc(model={"batch_size": [1, 4]})
    plain = expand(parse_sweep(base, "x.yaml"))
    sets = expand(parse_sweep({**base, "request": [{"name": "short", "text": "a"}, {"name": "long", "text": "a" * 100}]}, "x.yaml"))
    assert len(sets) == 2 * len(plain)
    assert [t.request for t in sets] == ["short", "long", "short", "long"]
    assert len({t.trial_id for t in sets}) == 4 and not {t.trial_id for t in sets} & {t.trial_id for t in plain}
    assert sets[0].params()["param_request_name"] == "short" and "param_request_name" not in plain[0].params()
    assert all(t.request is None for t in plain)
    # the payload is part of the identity: other text, other trial
    other = expand(parse_sweep({**base, "request": [{"name": "short", "text": "b"}, {"name": "long", "text": "a" * 100}]}, "x.yaml"))
    assert other[0].trial_id != sets[0].trial_id and other[1].trial_id == sets[1].trial_id


def test_every_payload_is_prebuilt_with_its_own_headers():
    t = Target("http://127.0.0.1:8080/predictions/m", bodies=((b"ab", (("Content-Type", "image/png"),)), (b"xyz", (("Content-Type", "text/plain"),))))
    ep = prepare(t)
    assert len(ep.requests) == 2 and ep.request == ep.requests[0]
    assert ep.requests[0].endswith(b"Content-Length: 2\r\nUser-Agent: torchserve-sweeper\r\nContent-Type: image/png\r\n\r\nab")
    assert ep.requests[1].endswith(b"Content-Type: text/plain\r\n\r\nxyz") and b"Content-Length: 3\r\n" in ep.requests[1]


# --- TorchServe's per-batch lines and worker errors ----------------------------------------

LINE = ("2030-01-01T01:54:55,900 [INFO ] W-9000-{m}_1.0-stdout org.pytorch.serve.wlm.WorkerLifeCycle - "
        "result=[METRICS]PredictionTime.Milliseconds:7.29|#ModelName:{m},Level:Model|#type:GAUGE|"
        "#hostname:vm,1795571695,{ids}, pattern=[METRICS]\n")


def test_batches_are_counted_from_prediction_time_lines():
    def line(ids, m="textclf"):
        return LINE.format(m=m, ids=",".join(ids))

    text = (line(["a1", "a2", "a3", "a4"]) + line(["b1"]) + line(["b1"])  # the same batch twice: once
            + line(["c1", "c2"], m="other") + "unrelated\n" + line(["d1", "d2"]) + line(["e1", "e2"])[:-30])
    got = count_batches(text.encode(), "textclf")
    assert (got.batches, got.requests, got.size_mean) == (3, 7, 7 / 3)  # the cut last line does not count
    assert got.size_per_request_mean == (16 + 1 + 4) / 7  # a batch of 4 counts 4 times
    assert np.isnan(count_batches(b"", "textclf").size_mean)


def test_the_worker_error_is_the_real_cause_not_the_fallback_import(tmp_path):
    log = tmp_path / "model_log.log"
    prefix = "2030-01-01T01:59:04,897 [INFO ] W-9000-badclf_1.0-stdout MODEL_LOG - "
    log.write_text("".join(prefix + s + "\n" for s in [
        "Traceback (most recent call last):", "    import no_such_module_xyz",
        "ModuleNotFoundError: No module named 'no_such_module_xyz'", "",
        "During handling of the above exception, another exception occurred:",
        "ModuleNotFoundError: No module named 'ts.torch_handler.handler'",
    ]))
    assert last_worker_error(tmp_path) == "ModuleNotFoundError: No module named 'no_such_module_xyz'"
    assert last_worker_error(tmp_path, start=log.stat().st_size) == ""


# --- the verdict ---------------------------------------------------------------------------


def test_success_rate_below_the_minimum_fails_with_counts_and_a_redacted_body():
    statuses = np.array([200] * 90 + [503] * 10)
    replay = lambda: [(503, b'{"code": 503,\n "message": "Prediction failed for key SECRET' + b"x" * 500 + b'"}')]  # noqa: E731
    redact = lambda s: s.replace("SECRET", "<redacted>")  # noqa: E731
    with pytest.raises(RequestsFailed) as exc:
        check_success(statuses, 200, 0.99, replay, redact, partial_row={"client_ok": 90})
    msg = str(exc.value)
    assert msg.startswith("success rate 0.900 < settings.min_success_rate 0.99 (expected HTTP 200; statuses 200:90 503:10)")
    assert 'HTTP 503: {"code": 503, "message": "Prediction failed for key <redacted>xxx' in msg
    assert "SECRET" not in msg and "\n" not in msg and msg.endswith("...") and len(msg) < 400
    assert exc.value.partial_row == {"client_ok": 90}
    check_success(statuses, 200, 0.9, replay, redact)  # at the minimum: fine
    with pytest.raises(RequestsFailed, match=r"statuses 200:1\)"):
        check_first_answers([(200, b"")], 201, redact)  # 200 is not the 201 the sweep expects
    check_first_answers([(503, b"no"), (200, b"ok")], 200, redact)  # one payload served: go on


# --- sweeper init ----------------------------------------------------------------------------


def test_init_writes_a_commented_sweep_that_plans(tmp_path, capsys, monkeypatch):
    write_mar(tmp_path / "my model.mar")
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8")
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--archive", "my model.mar", "--request-file", "x.jpg"]) == 0
    text = capsys.readouterr().out
    out = tmp_path / "sweeps" / "mine.yaml"
    out.parent.mkdir()
    out.write_text(text)
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith(("#", "- ")):
            assert "#" in line, f"uncommented key: {line}"  # every key, list items included
    data = yaml.safe_load(text)
    assert data["model"]["batch_size"] == [1, 4, 8] and data["request"]["content_type"] == "image/jpeg"
    assert data["env"]["OMP_NUM_THREADS+MKL_NUM_THREADS"] in ([1, "cores"], 1)
    assert main(["plan", str(out)]) == 0
    assert "Resnet-152 batch=8" in capsys.readouterr().out
    assert main(["init", "--archive", "nope.mar", "--request-file", "x.jpg"]) == 2
    assert "sweeper init: --archive: file not found" in capsys.readouterr().err


def test_a_model_store_archive_of_another_model_needs_a_request(tmp_path, capsys):
    (tmp_path / "store").mkdir()
    write_mar(tmp_path / "store" / "resnet.mar")
    path = sweep_file(tmp_path, doc(model={"name": "resnet"}, settings={"model_store": "store"}))
    one_line_exit_2(capsys, ["plan", str(path)], "request", "required for model 'resnet' (not one of the sweeper's)")
    path = sweep_file(tmp_path, doc(model={"name": "resnet"}, settings={"model_store": "store"}, request={"text": "x"}))
    assert main(["plan", str(path)]) == 0
