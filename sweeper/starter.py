"""`sweeper init --archive my.mar --request-file x.jpg`: a commented starter sweep for a user's
model, with axes sized for this machine. Prints YAML; starts nothing.

The axes: batch size [1, 4, 8] x max batch delay [5, 50] ms x workers [1, cores] x torch
threads per worker [1, cores] (OMP_NUM_THREADS and MKL_NUM_THREADS together), closed loop
at 16 requests in flight. Workers times threads above the cores is where thread contention
shows (see the README's thread-contention study), so the grid has both sides of that line.
Each key's comment is the schema's own description of it (sweeper.reference.describe_key).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import SpecError
from .spec import machine_cores
from .mar import read_archive
from .payload import MAX_FILE_BYTES, guess_content_type
from .reference import describe_key


def _name(model: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", model).strip("_.-") or "mine"
    return name[:80] if name[0].isalnum() else f"m{name}"[:80]


def _c(text: str, key: str, whole: bool = False) -> str:
    """A line of YAML and, as its comment, what the schema says of `key` (its first
    sentence, or all of it), so that the starter never words a key differently."""
    return f"{text:<29} # {describe_key(key, first_sentence=not whole)}"


def starter_sweep(archive: Path, request_files: list[Path], cores: int | None = None) -> str:
    """The YAML text. Raises SpecError for an unreadable archive or request file."""
    try:
        info = read_archive(archive)
    except ValueError as exc:
        raise SpecError("sweeper init", "--archive", str(exc)) from None
    files = []
    for f in request_files:
        p = Path(f).expanduser().resolve()
        if not p.is_file():
            raise SpecError("sweeper init", "--request-file", f"file not found or not a regular file: {p}")
        if p.stat().st_size > MAX_FILE_BYTES:
            raise SpecError("sweeper init", "--request-file", f"{p} is {p.stat().st_size:,} bytes, above the payload limit of {MAX_FILE_BYTES:,} bytes (16 MiB)")
        files.append(p)
    cores = cores or machine_cores()
    many = "[1, cores]" if cores > 1 else "1"
    types = sorted({guess_content_type(p.name) for p in files})
    content_type = types[0] if len(types) == 1 else None
    q = json.dumps  # a JSON string is a valid YAML scalar: paths with spaces or colons stay intact
    lines = [
        f"# A sweep of the model {info.model_name!r} in {info.path.name}, written by `sweeper init`",
        f"# for this machine ({cores} core{'s' if cores != 1 else ''}). Check it with `sweeper plan FILE` (lists the",
        "# trials and the estimated time, starts nothing), run it with `sweeper run FILE`.",
        "# A list is an axis: the trials are the product of every list in the file.",
        _c(f"name: {_name(info.model_name)}", "name"),
        _c("model:", "model"),
        _c(f"  archive: {q(str(info.path))}", "model.archive"),
        _c("  batch_size: [1, 4, 8]", "model.batch_size"),
        _c("  max_batch_delay_ms: [5, 50]", "model.max_batch_delay_ms"),
        _c(f"  min_workers: {many}", "model.min_workers"),
        _c("  response_timeout_s: 120", "model.response_timeout_s"),
        _c("env:", "env"),
        f"  OMP_NUM_THREADS+MKL_NUM_THREADS: {many}  # torch threads per worker; workers x threads above the cores contend",
        _c("request:", "request"),
        _c("  files:", "request.files"),
        *[f"    - {q(str(p))}  # {p.stat().st_size:,} bytes" for p in files],
    ]
    if content_type:
        lines.append(_c(f"  content_type: {content_type}", "request.content_type", whole=True))
    else:
        lines.append("  # " + _c("content_type: image/jpeg", "request.content_type", whole=True))
    lines += [
        _c("  method: POST", "request.method"),
        _c("  expect_status: 200", "request.expect_status"),
        _c("load:", "load"),
        "  # closed loop: 16 requests in flight for 10 s; also {mode: open, rate_rps: [50, 200], duration_s: 10}",
        _c("  - {mode: closed, concurrency: 16, duration_s: 10}", "load.mode"),
        _c("settings:", "settings"),
        _c("  repeats: 1", "settings.repeats"),
        _c("  warmup_s: 2", "settings.warmup_s"),
        _c("  min_success_rate: 0.99", "settings.min_success_rate"),
        _c("  slo_p99_ms: 500", "settings.slo_p99_ms"),
        _c("  ready_timeout_s: 120", "settings.ready_timeout_s"),
        _c("  max_consecutive_failures: 3", "settings.max_consecutive_failures"),
    ]
    return "\n".join(lines) + "\n"
