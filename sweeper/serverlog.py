"""What TorchServe's own logs tell about a trial: the batches it served, and why a worker died.

Served batches. TorchServe 0.12's Python backend (ts/service.py, `Service.predict`, the
wrapper around every handler: built-in, example or a user's own) records one
`PredictionTime` metric per batch that the handler answered without an error, and the
metric line carries the ids of every request in that batch:

    [METRICS]PredictionTime.Milliseconds:7.29|#ModelName:mlp,Level:Model|#type:GAUGE|#hostname:vm,1795571695,<id1>,<id2>,<id3>,<id4>

The worker prints it on its stdout; the frontend copies it into ts_log.log (twice, through
two appenders) and onto the server's own stdout, which the sweeper writes to
`stdout.log` (once per batch, never rotated). So for a measured window:
    server_batches                      = PredictionTime lines of the model in the window
    server_batch_size_mean              = request ids on those lines / server_batches
                                          (the mean size of the batches themselves)
    server_batch_size_per_request_mean  = sum of size^2 / request ids: the batch size a
                                          served request was in, averaged per request
                                          (as client_batch_size_mean from X-Batch-Size)
A batch whose handler raised writes no line: these count served batches only.

The window is a byte range of stdout.log (offsets taken just before and just after the
load). The frontend writes a worker's line from a reader thread, a little after the
worker sent its answer; `settle` waits until the file stops growing so that the last
batches of the warm-up land before the window's start offset and those of the window
before its end offset.

Worker errors. A worker that dies while loading (a handler import that is missing, a bad
model file) leaves a Python traceback in model_log.log; `last_worker_error` returns its
last `...Error: ...` line, skipping TorchServe's fallback attempt to import the handler
as a built-in (`No module named 'ts.torch_handler.<name>'`), which hides the real cause.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

STDOUT_LOG = "stdout.log"
MODEL_LOG = "model_log.log"

# Enough to see a batch's line arrive after its answer; bounded so a chatty handler that
# logs without pause cannot hold a trial.
SETTLE_QUIET_S = 0.05
SETTLE_MAX_S = 1.0

_PREDICTION = re.compile(
    rb"\[METRICS\]PredictionTime\.[A-Za-z]+:[0-9.eE+-]+\|#ModelName:([^,|]*)[^|]*\|#type:[A-Z]+\|#hostname:[^,\s]*,\d+,([^\s]*)"
)
_ERROR = re.compile(r"(?:MODEL_LOG - |^)((?:[A-Za-z_][\w.]*)(?:Error|Exception): .*)$")
_FALLBACK_IMPORT = re.compile(r"No module named 'ts\.torch_handler\.")


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def settle(path: Path, quiet_s: float = SETTLE_QUIET_S, max_s: float = SETTLE_MAX_S) -> int:
    """Wait until `path` has not grown for `quiet_s` (at most `max_s`); its size then."""
    deadline = time.monotonic() + max_s
    last = size(path)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(quiet_s / 5)
        now = size(path)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            break
    return last


@dataclass(frozen=True)
class Batches:
    batches: int
    requests: int
    size_squares: int = 0  # sum over batches of size^2

    @property
    def size_mean(self) -> float:
        return self.requests / self.batches if self.batches else math.nan

    @property
    def size_per_request_mean(self) -> float:
        return self.size_squares / self.requests if self.requests else math.nan

    def columns(self) -> dict[str, float]:
        return {
            "server_batches": self.batches,
            "server_batch_size_mean": self.size_mean,
            "server_batch_size_per_request_mean": self.size_per_request_mean,
        }


def count_batches(data: bytes, model: str) -> Batches:
    """Batches of `model` in a slice of stdout.log (only complete lines count)."""
    end = data.rfind(b"\n")
    data = data[: end + 1] if end >= 0 else b""
    want = model.encode()
    batches = requests = squares = 0
    seen: set[bytes] = set()
    for m in _PREDICTION.finditer(data):
        if m.group(1) != want:
            continue
        ids = [i for i in m.group(2).split(b",") if i]
        if not ids or ids[0] in seen:  # the same batch logged twice is one batch
            continue
        seen.add(ids[0])
        batches += 1
        requests += len(ids)
        squares += len(ids) ** 2
    return Batches(batches, requests, squares)


def batches_between(log_dir: Path, model: str, start: int, end: int) -> Batches:
    """Batches of `model` written to log_dir/stdout.log between two offsets."""
    try:
        with open(log_dir / STDOUT_LOG, "rb") as f:
            f.seek(start)
            data = f.read(max(0, end - start))
    except OSError:
        return Batches(0, 0)
    return count_batches(data, model)


def last_worker_error(log_dir: Path, start: int = 0, max_bytes: int = 2_000_000) -> str:
    """The last Python error line the backend workers logged after offset `start`
    (model_log.log), or "" when there is none."""
    path = log_dir / MODEL_LOG
    try:
        with open(path, "rb") as f:
            f.seek(max(start, size(path) - max_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    errors = []
    for line in text.splitlines():
        m = _ERROR.search(line.rstrip())
        if m:
            errors.append(m.group(1).strip())
    real = [e for e in errors if not _FALLBACK_IMPORT.search(e)]
    return (real or errors or [""])[-1]
