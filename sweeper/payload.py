"""Request payloads: the sweep's `request` group read into bytes once, before any server starts.

    request: {files: [a.jpg, b.jpg]}                      # one file per request, round-robin
    request: {text: "The Rock is destined to be ...", content_type: text/plain}
    request: {json: {inputs: [1, 2, 3]}}                   # any YAML value, sent as JSON
    request: [{name: short, files: [s.txt]}, {name: long, files: [l.txt]}]   # an axis

Files are relative to the sweep file (or absolute) and sent byte for byte. Each payload is
built into one complete HTTP request by the load engine before the window (sweeper.load.http),
so the engine sends prebuilt bytes in rotation and allocates nothing per request.

Content type: `content_type` when given; else from each file's extension (mimetypes), else
application/octet-stream; `text` is text/plain, `json` application/json. TorchServe hands
a handler an application/json body already decoded, a text/* body as str, anything else as
bytes: the content type decides what the handler sees.

Size limit: a payload file may be at most MAX_FILE_BYTES (16 MiB) and all of a sweep's
payloads together MAX_TOTAL_BYTES (64 MiB): every payload is held in memory by every load
engine process. A payload above TorchServe's max_request_size (6,553,500 bytes unless
server.max_request_size raises it) is refused too, because every request would fail.
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from .errors import SpecError
from .load.types import Target

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_TOTAL_BYTES = 64 * 1024 * 1024
TORCHSERVE_MAX_REQUEST_SIZE = 6_553_500  # TorchServe 0.12's default max_request_size
DEFAULT_CONTENT_TYPE = "application/octet-stream"
TEXT_CONTENT_TYPE = "text/plain"
JSON_CONTENT_TYPE = "application/json"  # exactly this: TorchServe decodes no other spelling


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str
    source: str  # the file, "text" or "json": for messages


@dataclass(frozen=True)
class RequestSet:
    """One request set: payloads sent in rotation, the method, the answer that counts as served."""

    name: str
    payloads: tuple[Payload, ...]
    method: str = "POST"
    expect_status: int = 200

    @property
    def body_bytes_mean(self) -> float:
        return sum(len(p.body) for p in self.payloads) / len(self.payloads)

    def target(self, url: str, headers: tuple[tuple[str, str], ...] = ()) -> Target:
        """The load engine's target: every payload prebuilt with its own Content-Type."""
        first = self.payloads[0]
        return Target(
            url=url,
            body=first.body,
            headers=(("Content-Type", first.content_type), *headers),
            method=self.method,
            bodies=tuple((p.body, (("Content-Type", p.content_type), *headers)) for p in self.payloads)
            if len(self.payloads) > 1
            else (),
        )


def example_body(model_name: str) -> bytes:
    """The example request of one of the sweeper's own models ("[]" for another model,
    which needs a `request` group of its own)."""
    from handlers.models import MODELS

    return MODELS[model_name].example_request() if model_name in MODELS else b"[]"


def builtin_request_set(body: bytes, content_type: str = JSON_CONTENT_TYPE) -> RequestSet:
    """The request of the sweeper's own models (no `request` group in the sweep)."""
    return RequestSet(name="", payloads=(Payload(body, content_type, "built-in example"),))


def guess_content_type(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE


def resolve_files(spec, source: str):
    """The spec with every request file made absolute (relative to the sweep file), so a
    run's sweep.yaml still finds them from the run directory."""
    if spec.request is None:
        return spec
    base = Path(source).parent
    out = []
    for r in spec.requests:
        if r.files is None:
            out.append(r)
            continue
        files = [str((base / Path(f).expanduser()).resolve()) if not Path(f).expanduser().is_absolute() else str(Path(f).expanduser()) for f in r.files]
        out.append(r.model_copy(update={"files": files}))
    return spec.model_copy(update={"request": out if isinstance(spec.request, list) else out[0]})


def _max_request_size(spec) -> int:
    value = spec.server.max_request_size
    if value is None:
        return TORCHSERVE_MAX_REQUEST_SIZE
    return min(value) if isinstance(value, list) else value


def load_request_sets(spec, source: str) -> dict[str, RequestSet]:
    """{label: RequestSet} for the sweep's `request` group ({} without one). Reads every
    file once. A missing, unreadable, empty-named or oversized file is a SpecError naming
    the file, the key and the rule."""
    sets: dict[str, RequestSet] = {}
    total = 0
    limit = _max_request_size(spec)
    many = isinstance(spec.request, list)
    for i, r in enumerate(spec.requests):
        where = f"request[{i}]" if many else "request"
        payloads: list[Payload] = []
        if r.files is not None:
            for j, name in enumerate(r.files):
                key = f"{where}.files[{j}]"
                path = Path(name).expanduser()
                if not path.is_absolute():
                    path = Path(source).parent / path
                body = _read(path, source, key)
                payloads.append(Payload(body, r.content_type or guess_content_type(path.name), str(path)))
        elif r.text is not None:
            payloads.append(Payload(r.text.encode("utf-8"), r.content_type or TEXT_CONTENT_TYPE, "text"))
        else:
            body = json.dumps(r.json_, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            payloads.append(Payload(body, r.content_type or JSON_CONTENT_TYPE, "json"))
        for j, p in enumerate(payloads):
            key = f"{where}.files[{j}]" if r.files is not None else f"{where}.{'text' if r.text is not None else 'json'}"
            if len(p.body) > MAX_FILE_BYTES:
                raise SpecError(source, key, f"{p.source} is {len(p.body):,} bytes, above the payload limit of {MAX_FILE_BYTES:,} bytes (16 MiB)")
            if len(p.body) > limit:
                raise SpecError(
                    source, key,
                    f"{p.source} is {len(p.body):,} bytes, above TorchServe's max_request_size ({limit:,} bytes): "
                    "every request would be refused; raise server.max_request_size",
                )
            total += len(p.body)
        if total > MAX_TOTAL_BYTES:
            raise SpecError(source, where, f"the payloads add up to {total:,} bytes, above the limit of {MAX_TOTAL_BYTES:,} bytes (64 MiB) for one sweep")
        sets[r.label] = RequestSet(r.label, tuple(payloads), r.method, r.expect_status)
    return sets


def _read(path: Path, source: str, key: str) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SpecError(source, key, f"file not found: {path}") from None
    except OSError as exc:
        raise SpecError(source, key, f"cannot read {path}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise SpecError(source, key, f"must be a regular file, got {path}")
    if st.st_size > MAX_FILE_BYTES:
        raise SpecError(source, key, f"{path} is {st.st_size:,} bytes, above the payload limit of {MAX_FILE_BYTES:,} bytes (16 MiB)")
    try:
        with open(path, "rb") as f:
            body = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError(source, key, f"cannot read {path}: {exc.strerror or exc}") from None
    return body
