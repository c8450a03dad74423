"""The three models the sweeper serves, their request formats and example requests.

Every model is built from code with seeded random weights, so an archive, the in-process
baseline and the tests all get the same network without downloading anything. A model
kind owns its request format: ``parse`` turns one decoded request body into the input
tensor of one sample (no batch dimension) or raises ``InvalidRequest``.

This module must import without TorchServe: it is copied into every model archive as
``sweeper_models.py`` and also used by the baseline and the tests.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

SEED = 1234
"""The seed of every model's weights. Changing it changes every archive's hash."""


class InvalidRequest(ValueError):
    """One request's body does not fit the model's input format (the client's fault)."""


# --- mlp -------------------------------------------------------------------------------

MLP_IN = 784


def build_mlp() -> nn.Module:
    # The layer sizes of the MLP in Ray's serving study: 425,130 parameters.
    return nn.Sequential(
        nn.Linear(MLP_IN, 448), nn.ReLU(),
        nn.Linear(448, 160), nn.ReLU(),
        nn.Linear(160, 10),
    )


def _parse_floats(value: Any, shapes: tuple[tuple[int, ...], ...], out_shape: tuple[int, ...]) -> torch.Tensor:
    if isinstance(value, str):
        # A text/* body reaches the handler as str: it may still carry a JSON array.
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidRequest("body is not valid JSON") from None
    if not isinstance(value, list):
        raise InvalidRequest(f"expected a JSON array, got {type(value).__name__}")
    try:
        array = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise InvalidRequest("expected an array of numbers (ragged or non-numeric entries found)") from None
    if array.shape not in shapes:
        wanted = " or ".join("x".join(map(str, s)) for s in shapes)
        raise InvalidRequest(f"expected {wanted} numbers, got shape {'x'.join(map(str, array.shape)) or 'scalar'}")
    if not np.isfinite(array).all():
        raise InvalidRequest("NaN or infinite values are not accepted")
    return torch.from_numpy(array.reshape(out_shape))


def parse_mlp(value: Any) -> torch.Tensor:
    return _parse_floats(value, ((MLP_IN,),), (MLP_IN,))


def example_mlp(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return json.dumps([round(float(x), 4) for x in rng.random(MLP_IN)]).encode()


# --- cnn -------------------------------------------------------------------------------

CNN_SHAPE = (3, 32, 32)
CNN_FLAT = 3 * 32 * 32


class SmallCNN(nn.Module):
    """Three conv blocks (32, 64, 128 channels) on a 3x32x32 image, then two linear layers."""

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 128))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, num_classes)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


def build_cnn() -> nn.Module:
    return SmallCNN()


def parse_cnn(value: Any) -> torch.Tensor:
    return _parse_floats(value, ((CNN_FLAT,), CNN_SHAPE), CNN_SHAPE)


def example_cnn(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return json.dumps([round(float(x), 3) for x in rng.random(CNN_FLAT)]).encode()


# --- transformer -----------------------------------------------------------------------

VOCAB_SIZE = 4096
SEQ_LEN = 64
PAD_ID, CLS_ID = 0, 1
_WORD = re.compile(r"[a-z0-9']+")


def tokenize(text: str) -> list[int]:
    """Lowercase words hashed into the vocabulary, [CLS] first, padded to SEQ_LEN.

    crc32, not hash(): Python's str hash is salted per process, and the ids must be the
    same in every worker and in the baseline.
    """
    ids = [CLS_ID]
    for word in _WORD.findall(text.lower())[: SEQ_LEN - 1]:
        ids.append(2 + zlib.crc32(word.encode()) % (VOCAB_SIZE - 2))
    return ids + [PAD_ID] * (SEQ_LEN - len(ids))


class TextClassifier(nn.Module):
    """A 2-layer transformer encoder (d_model 128, 4 heads) that classifies from [CLS]."""

    def __init__(self, d_model: int = 128, heads: int = 4, layers: int = 2, num_classes: int = 4):
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, d_model, padding_idx=PAD_ID)
        self.position = nn.Parameter(torch.randn(1, SEQ_LEN, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.embed(ids) + self.position, src_key_padding_mask=ids == PAD_ID)
        return self.head(hidden[:, 0])


def build_transformer() -> nn.Module:
    return TextClassifier()


def parse_transformer(value: Any) -> torch.Tensor:
    if isinstance(value, dict):
        value = value.get("text")
    if not isinstance(value, str):
        raise InvalidRequest('expected a JSON string or {"text": "..."}')
    return torch.tensor(tokenize(value), dtype=torch.long)


_WORDS = (
    "the a server batch queue worker model request answer latency throughput under load "
    "quick brown fox jumps over lazy dog sweep trial metric thread core memory network"
).split()


def example_transformer(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return json.dumps({"text": " ".join(rng.choice(_WORDS, size=32))}).encode()


# --- registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What the handler, the archive builder and the load generator need to know of a model."""

    name: str
    num_params: int
    description: str
    builder: Callable[[], nn.Module]
    parse: Callable[[Any], torch.Tensor]
    example: Callable[[int], bytes]
    content_type: str = "application/json"
    # Fault injection for the sweeper's own tests: every fail_every-th batch raises, so
    # TorchServe answers its requests with a 5xx. 0 (every real model): never.
    fail_every: int = 0

    def build(self) -> nn.Module:
        """The model with its seeded weights, in eval mode. Leaves the global RNG as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = self.builder()
        return model.eval()

    def example_request(self, seed: int = 0) -> bytes:
        """A valid request body; the same bytes for the same seed, different across seeds."""
        return self.example(seed)


MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo(
            "mlp", 425_130, "MLP 784-448-160-10 (425,130 params); input: JSON array of 784 floats",
            build_mlp, parse_mlp, example_mlp,
        ),
        ModelInfo(
            "cnn", 356_810,
            "CNN, 3 conv blocks + 2 linear (356,810 params); input: JSON array of 3x32x32 or 3072 floats",
            build_cnn, parse_cnn, example_cnn,
        ),
        ModelInfo(
            "transformer", 797_956,
            'transformer encoder, 2 layers, d_model 128, 4 heads (797,956 params); '
            'input: JSON string or {"text": "..."}',
            build_transformer, parse_transformer, example_transformer,
        ),
        ModelInfo(
            "mlp_faulty", 425_130,
            "the mlp (425,130 params) with an injected fault: every 4th batch fails (HTTP 5xx); for testing failure accounting",
            build_mlp, parse_mlp, example_mlp, fail_every=4,
        ),
    )
}
