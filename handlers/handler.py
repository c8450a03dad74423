"""The one TorchServe handler that serves every model in ``handlers.models``.

TorchServe calls the module-level ``handle(data, context)``: once with ``data=None`` to
load, then once per batch. Which model to serve comes from ``sweeper_model.json`` in the
unpacked archive (written by ``sweeper.archive``), so one handler file serves all models.

Batching: TorchServe hands over a list of up to batch_size requests. Every valid request
of the batch goes through ONE forward pass under ``torch.inference_mode``; the answers
come back in request order, one per request, as compact JSON bytes
``{"class": int, "probs": [...]}``. Every response carries ``X-Batch-Size`` (the size of
the batch TorchServe formed), ``X-Handler-Ms`` (this call's wall time, 3 decimals) and
``X-Device`` (where the forward pass ran: ``cpu`` or ``cuda:N``), so a client can see how
it was batched and where it was served.

Device: the worker's GPU when TorchServe gave it one (``gpu_id`` in the context's system
properties: number_of_gpu >= 1) and torch can use CUDA, else the CPU. TorchServe's own base
handler chooses the same way; unlike it, this handler leaves torch's TF32 settings alone
(docs/gpu.md).

Bad requests: a request whose body does not fit the model's format gets HTTP 400 and
``{"error": "..."}``, and the rest of its batch is served normally. TorchServe's default
(an exception fails the whole batch with 503) would turn one bad client into failures
of up to batch_size-1 innocent requests, and make the failure rate depend on the batch
size being swept. Anything else that goes wrong (a bug, a model error) still raises, and
TorchServe fails the whole batch.

``SweeperHandler`` and ``LocalContext`` let the baseline and the tests run exactly this
code path without TorchServe.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import torch

try:
    from . import models
except ImportError:
    # Inside an unpacked archive there is no package: the model dir is on sys.path and
    # sweeper.archive copied models.py there under this unambiguous name.
    import sweeper_models as models

MODEL_CONFIG_FILE = "sweeper_model.json"


class SweeperHandler:
    """A model plus the request/answer code around it, independent of TorchServe."""

    def __init__(self, info: models.ModelInfo, model: torch.nn.Module, device: str = "cpu"):
        self.info = info
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # what the worker allocates lands on its GPU
        self.model = model.to(self.device).eval()
        self.device_name = str(self.device)
        self.batches = 0

    @classmethod
    def for_model(cls, name: str, device: str = "cpu") -> SweeperHandler:
        """The handler of a registry model with its seeded weights built in this process."""
        info = models.MODELS[name]
        return cls(info, info.build(), device)

    @classmethod
    def from_model_dir(cls, model_dir: str, device: str = "cpu") -> SweeperHandler:
        """The handler of an unpacked archive: model name and weights file from its config."""
        with open(os.path.join(model_dir, MODEL_CONFIG_FILE)) as f:
            config = json.load(f)
        info = models.MODELS[config["model"]]
        model = info.build()
        weights = torch.load(os.path.join(model_dir, config["weights"]), map_location="cpu", weights_only=True)
        model.load_state_dict(weights)
        return cls(info, model, device)

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes]:
        start = time.perf_counter()
        self.batches += 1
        if self.info.fail_every and self.batches % self.info.fail_every == 0:
            raise RuntimeError(f"{self.info.name}: injected fault in batch {self.batches}")
        answers: list[bytes] = [b""] * len(data)
        inputs: list[torch.Tensor] = []
        served: list[int] = []
        for idx, row in enumerate(data):
            try:
                inputs.append(self.info.parse(_request_body(row)))
                served.append(idx)
            except models.InvalidRequest as err:
                context.set_response_status(code=400, phrase="Bad Request", idx=idx)
                answers[idx] = json.dumps({"error": f"{self.info.name}: {err}"}).encode()
        if inputs:
            with torch.inference_mode():
                batch = torch.stack(inputs)
                if self.device.type != "cpu":
                    batch = batch.to(self.device)
                # .tolist() below copies back to the CPU, which waits for the GPU: the
                # handler's time includes the whole forward pass
                logits = self.model(batch)
                classes = logits.argmax(dim=1).tolist()
                probs = torch.softmax(logits, dim=1).tolist()
            for idx, cls, p in zip(served, classes, probs):
                answers[idx] = json.dumps({"class": cls, "probs": [round(x, 6) for x in p]}, separators=(",", ":")).encode()
        handler_ms = f"{(time.perf_counter() - start) * 1000:.3f}"
        batch_size = str(len(data))
        for idx in range(len(data)):
            context.set_response_content_type(idx, "application/json")
            context.set_response_header(idx, "X-Batch-Size", batch_size)
            context.set_response_header(idx, "X-Handler-Ms", handler_ms)
            context.set_response_header(idx, "X-Device", self.device_name)
        return answers


def choose_device(gpu_id: Any, cuda_available: bool) -> str:
    """``cuda:<gpu_id>`` when TorchServe gave the worker a GPU and torch can use CUDA, else
    ``cpu``. A worker gets a gpu_id whenever TorchServe counted GPUs (number_of_gpu >= 1),
    even where this process's CUDA sees none (CUDA_VISIBLE_DEVICES empty): then the CPU."""
    if gpu_id is None or not cuda_available:
        return "cpu"
    return f"cuda:{int(gpu_id)}"


def device_for(context: Any) -> str:
    """The device of the worker that `context` belongs to (TorchServe's Context)."""
    properties = getattr(context, "system_properties", None) or {}
    gpu_id = properties.get("gpu_id")
    return choose_device(gpu_id, gpu_id is not None and torch.cuda.is_available())


def _request_body(row: dict[str, Any]) -> Any:
    # A raw POST body arrives as "body", a form field as "data". With Content-Type
    # application/json the worker has already decoded the JSON; otherwise we get bytes
    # (or str for text/*), and JSON is the only format the models accept.
    value = row.get("data")
    if value is None:
        value = row.get("body")
    if value is None:
        raise models.InvalidRequest("empty request")
    if isinstance(value, (bytes, bytearray)):
        try:
            return json.loads(value)
        except ValueError:
            raise models.InvalidRequest("body is not valid JSON") from None
    return value


class LocalContext:
    """The part of TorchServe's Context the handler uses, for running it in-process."""

    def __init__(self, batch_size: int):
        self.response_headers: list[dict[str, str]] = [{} for _ in range(batch_size)]
        self.response_status: list[tuple[int, str]] = [(200, "") for _ in range(batch_size)]

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.response_headers[idx][key] = value

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.response_status[idx] = (code, phrase)


_handler: SweeperHandler | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """TorchServe's entry point (a function, so the loader does not go hunting for classes)."""
    global _handler
    if _handler is None:
        _handler = SweeperHandler.from_model_dir(context.system_properties["model_dir"], device_for(context))
    if data is None:
        return None
    return _handler.handle(data, context)
