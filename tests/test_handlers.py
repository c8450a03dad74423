"""The models and the handler: in-process on a LocalContext, and once through a real TorchServe."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from handlers.handler import LocalContext, SweeperHandler
from handlers.models import MODELS, InvalidRequest, tokenize

# the fault-injection model fails batches on purpose; the real models serve every batch
SERVED_MODELS = sorted(name for name, info in MODELS.items() if not info.fail_every)

MS_PATTERN = re.compile(r"^\d+\.\d{3}$")


@pytest.fixture(scope="module")
def handlers_by_name() -> dict[str, SweeperHandler]:
    return {name: SweeperHandler.for_model(name) for name in MODELS}


def serve(handler: SweeperHandler, bodies: list) -> tuple[list[bytes], LocalContext]:
    context = LocalContext(len(bodies))
    return handler.handle([{"body": b} for b in bodies], context), context


def assert_same_answer(a: bytes, b: bytes) -> None:
    # Batched and single forward passes may differ in the last float bits (different
    # kernels), so probabilities are compared with a tolerance; the class must agree.
    a_, b_ = json.loads(a), json.loads(b)
    assert a_["class"] == b_["class"]
    assert a_["probs"] == pytest.approx(b_["probs"], abs=1e-5)


# --- models ----------------------------------------------------------------------------


def test_mlp_has_the_published_parameter_count():
    model = MODELS["mlp"].build()
    assert sum(p.numel() for p in model.parameters()) == 425_130


@pytest.mark.parametrize("name", SERVED_MODELS)
def test_registry_parameter_count_and_description_agree_with_the_model(name):
    info = MODELS[name]
    assert sum(p.numel() for p in info.build().parameters()) == info.num_params
    assert f"{info.num_params:,}" in info.description
    assert info.content_type == "application/json"


def test_cnn_and_transformer_are_in_the_requested_size_range():
    assert 100_000 <= MODELS["cnn"].num_params <= 1_000_000
    assert 100_000 <= MODELS["transformer"].num_params <= 1_000_000


@pytest.mark.parametrize("name", SERVED_MODELS)
def test_build_is_deterministic_and_leaves_the_global_rng_alone(name):
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    first, second = MODELS[name].build(), MODELS[name].build()
    assert torch.equal(torch.rand(3), expected_next)
    for (key, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), key
    assert not first.training


@pytest.mark.parametrize("name", SERVED_MODELS)
def test_example_requests_are_deterministic_valid_and_vary_with_the_seed(name, handlers_by_name):
    info = MODELS[name]
    assert info.example_request() == info.example_request()
    assert info.example_request(1) != info.example_request(2)
    answers, context = serve(handlers_by_name[name], [info.example_request()])
    assert context.response_status == [(200, "")]
    assert set(json.loads(answers[0])) == {"class", "probs"}


def test_tokenizer_is_stable_lowercased_and_fixed_length():
    ids = tokenize("Hello, WORLD hello")
    assert ids[0] == 1 and ids[1] == ids[3] == tokenize("hello")[1] and ids[2] != ids[1]
    assert len(ids) == 64 and ids[4:] == [0] * 60
    assert len(tokenize("word " * 500)) == 64


# --- handler on a LocalContext ---------------------------------------------------------


@pytest.mark.parametrize("name", SERVED_MODELS)
def test_a_batch_gets_one_answer_per_request_in_order_equal_to_single_answers(name, handlers_by_name):
    handler, info = handlers_by_name[name], MODELS[name]
    bodies = [info.example_request(seed) for seed in range(6)]
    batched, _ = serve(handler, bodies)
    singles = [serve(handler, [body])[0][0] for body in bodies]
    assert len(batched) == len(bodies)
    for got, want in zip(batched, singles):
        assert_same_answer(got, want)
    # Order matters: distinct inputs must give distinct answers for the check above to mean anything.
    assert len({tuple(json.loads(s)["probs"]) for s in singles}) == len(bodies)


def test_the_batch_goes_through_one_forward_pass(handlers_by_name):
    handler = handlers_by_name["mlp"]
    calls = []
    hook = handler.model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        serve(handler, [MODELS["mlp"].example_request(s) for s in range(5)])
    finally:
        hook.remove()
    assert calls == [5]


def test_headers_are_set_for_every_request_of_the_batch(handlers_by_name):
    _, context = serve(handlers_by_name["mlp"], [MODELS["mlp"].example_request(s) for s in range(3)])
    for headers in context.response_headers:
        assert headers["X-Batch-Size"] == "3"
        assert MS_PATTERN.match(headers["X-Handler-Ms"]) and float(headers["X-Handler-Ms"]) > 0
        assert headers["content-type"] == "application/json"


def test_a_bad_request_gets_400_and_the_rest_of_its_batch_is_served(handlers_by_name):
    handler, info = handlers_by_name["mlp"], MODELS["mlp"]
    good = [info.example_request(1), info.example_request(2)]
    bodies = [good[0], b"[1, 2, 3]", good[1], b"not json {"]
    answers, context = serve(handler, bodies)
    assert [code for code, _ in context.response_status] == [200, 400, 200, 400]
    assert "784" in json.loads(answers[1])["error"] and "got shape 3" in json.loads(answers[1])["error"]
    assert "not valid JSON" in json.loads(answers[3])["error"]
    assert_same_answer(answers[0], serve(handler, [good[0]])[0][0])
    assert_same_answer(answers[2], serve(handler, [good[1]])[0][0])
    assert all(h["X-Batch-Size"] == "4" for h in context.response_headers)


def test_a_batch_of_only_bad_requests_runs_no_forward_pass(handlers_by_name):
    handler = handlers_by_name["cnn"]
    calls = []
    hook = handler.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        answers, context = serve(handler, [b'"a string"', b"{}"])
    finally:
        hook.remove()
    assert calls == [] and [c for c, _ in context.response_status] == [400, 400]
    assert all("error" in json.loads(a) for a in answers)


@pytest.mark.parametrize(
    "name, value",
    [
        ("mlp", [0.5] * 784),  # already decoded by the worker (Content-Type: application/json)
        ("mlp", json.dumps([0.5] * 784)),  # a text/* body arrives as str
        ("cnn", [[[0.1] * 32] * 32] * 3),  # nested 3x32x32
        ("cnn", [0.1] * 3072),
        ("transformer", "a plain string"),
        ("transformer", {"text": "a plain string"}),
    ],
)
def test_accepted_input_forms(name, value, handlers_by_name):
    context = LocalContext(1)
    answers = handlers_by_name[name].handle([{"data": value}], context)
    assert context.response_status == [(200, "")]
    assert 0 <= json.loads(answers[0])["class"] < 10


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("mlp", [0.5] * 783, "got shape 783"),
        ("mlp", [[0.5] * 784], "got shape 1x784"),
        ("mlp", [0.5] * 783 + [float("nan")], "NaN"),
        ("mlp", [0.5] * 783 + ["x"], "non-numeric"),
        ("mlp", [[1, 2], [3]], "ragged"),
        ("mlp", {"data": [0.5] * 784}, "expected a JSON array, got dict"),
        ("cnn", [0.1] * 3071, "expected 3072 or 3x32x32 numbers"),
        ("transformer", 42, "JSON string"),
        ("transformer", {"txt": "hello"}, "JSON string"),
    ],
)
def test_rejected_inputs_say_why(name, value, message):
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        MODELS[name].parse(value)


def test_an_empty_request_is_rejected(handlers_by_name):
    context = LocalContext(1)
    answers = handlers_by_name["mlp"].handle([{}], context)
    assert context.response_status[0][0] == 400 and "empty request" in json.loads(answers[0])["error"]


# --- through a real TorchServe ---------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _request(port: int, method: str, path: str, body: bytes | None = None, timeout_s: float = 30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            pass
    return members


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_members(proc.pid):
                return
            time.sleep(0.1)
    proc.wait(timeout=10)


@pytest.mark.e2e
def test_torchserve_serves_real_batches_with_the_handler_headers(tmp_path, handlers_by_name):
    torchserve = Path(sys.executable).parent / "torchserve"
    if shutil.which("java") is None or not torchserve.exists():
        pytest.skip("needs java and torchserve")
    from sweeper.archive import build_archive

    store, work, tmp = tmp_path / "store", tmp_path / "work", tmp_path / "tmp"
    for d in (store, work, tmp):
        d.mkdir()
    build_archive("mlp", store)
    inference, management, metrics, grpc_inference, grpc_management = _free_ports(5)
    config = work / "config.properties"
    # The gRPC servers start too, on 7070/7071 unless told otherwise: with another
    # TorchServe on the machine the JVM exits right after binding the REST ports.
    config.write_text(
        f"inference_address=http://127.0.0.1:{inference}\n"
        f"management_address=http://127.0.0.1:{management}\n"
        f"metrics_address=http://127.0.0.1:{metrics}\n"
        f"grpc_inference_port={grpc_inference}\ngrpc_management_port={grpc_management}\n"
        "enable_model_api=true\nmetrics_mode=prometheus\n"
    )
    log = (work / "torchserve.out").open("wb")
    proc = subprocess.Popen(
        [str(torchserve), "--foreground", "--ncs", "--ts-config", str(config), "--model-store", str(store),
         "--disable-token-auth"],
        # TMPDIR keeps the pid file apart; TEMP becomes the JVM's java.io.tmpdir, where
        # the worker sockets (.ts.sock.9000, ...) live: by default /tmp, shared with any
        # other TorchServe on the machine, whose workers would unlink and rebind them.
        cwd=work, env={**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp)}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"torchserve exited: {(work / 'torchserve.out').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "torchserve not healthy after 90 s"
            try:
                status, _, body = _request(inference, "GET", "/ping", timeout_s=2)
                if status == 200 and json.loads(body).get("status") == "Healthy":
                    break
            except OSError:
                pass
            time.sleep(0.1)
        # A fresh server of ours has no model yet; a stale one on these ports would.
        assert json.loads(_request(management, "GET", "/models")[2])["models"] == []
        status, _, body = _request(
            management, "POST",
            "/models?url=mlp.mar&batch_size=4&max_batch_delay=50&initial_workers=1&synchronous=true",
            timeout_s=120,
        )
        assert status == 200, body
        assert f"--sock-name, {tmp}/.ts.sock." in (work / "logs" / "ts_log.log").read_text()

        info, handler = MODELS["mlp"], handlers_by_name["mlp"]
        bad_body = b"[1, 2, 3]"

        def concurrent(bodies: list[bytes]) -> list[tuple[int, dict, bytes]]:
            results: list = [None] * len(bodies)
            barrier = threading.Barrier(len(bodies))

            def send(i: int) -> None:
                barrier.wait()
                results[i] = _request(inference, "POST", "/predictions/mlp", bodies[i])

            threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            return results

        sizes = []
        for round_ in range(3):
            bodies = [info.example_request(seed) for seed in range(8 * round_, 8 * round_ + 8)]
            bodies[3] = bad_body
            for body, (status, headers, answer) in zip(bodies, concurrent(bodies)):
                headers = {k.lower(): v for k, v in headers.items()}
                assert MS_PATTERN.match(headers["x-handler-ms"])
                sizes.append(int(headers["x-batch-size"]))
                if body is bad_body:
                    assert status == 400 and "784" in json.loads(answer)["error"]
                else:
                    assert status == 200, answer
                    assert_same_answer(answer, serve(handler, [body])[0][0])
        print(f"X-Batch-Size seen: {sizes}")  # shown by pytest on failure or with -s
        assert all(1 <= s <= 4 for s in sizes)
        assert max(sizes) > 1, f"no request was batched: {sizes}"
    finally:
        _stop_group(proc)
        log.close()
        assert not _group_members(proc.pid), "a process of the torchserve group survived"
