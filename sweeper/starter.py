"""`sweeper init --archive my.mar --request-file x.jpg`: a commented starter sweep for a user's
model, with axes sized for this machine. Prints YAML; starts nothing.

The axes: batch size [1, 4, 8] x max batch delay [5, 50] ms x workers [1, cores] x torch
threads per worker [1, cores] (OMP_NUM_THREADS and MKL_NUM_THREADS together), closed loop
at 16 requests in flight. Workers times threads above the cores is where thread contention
shows (see the README's thread-contention study), so the grid has both sides of that line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import SpecError
from .spec import machine_cores
from .mar import read_archive
from .payload import MAX_FILE_BYTES, guess_content_type


def _name(model: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", model).strip("_.-") or "mine"
    return name[:80] if name[0].isalnum() else f"m{name}"[:80]


def _c(text: str, comment: str) -> str:
    return f"{text:<29} # {comment}"


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
        _c(f"name: {_name(info.model_name)}", "runs go to runs/<name>-<date>-<time>/"),
        "model:                        # per-model settings, applied through the management API (no restart)",
        "  # your .mar (a relative path is relative to this file); the model's name comes from its manifest",
        f"  archive: {q(str(info.path))}  # built by torch-model-archiver",
        "  batch_size: [1, 4, 8]       # requests TorchServe hands the handler at once (its max batch size)",
        "  max_batch_delay_ms: [5, 50] # how long TorchServe waits to fill a batch before sending a smaller one",
        _c(f"  min_workers: {many}", "backend worker processes; each loads its own copy of the model"),
        "  response_timeout_s: 120     # a request slower than this fails (an archive's own responseTimeout wins)",
        "env:                          # environment of the server and its workers (needs a restart per value)",
        _c(f"  OMP_NUM_THREADS+MKL_NUM_THREADS: {many}", "torch threads per worker; workers x threads above the cores contend"),
        "request:                      # what every request carries",
        "  files:                      # sent round-robin, one file per request, byte for byte",
        *[f"    - {q(str(p))}  # {p.stat().st_size:,} bytes" for p in files],
    ]
    if content_type:
        lines.append(_c(f"  content_type: {content_type}", "from the file extension; TorchServe decodes application/json and text/*"))
    else:
        lines.append("  # content_type: image/jpeg   # not set: each file's type comes from its extension")
    lines += [
        "  method: POST                # POST or PUT",
        "  expect_status: 200          # an answer with another status is a failed request",
        "load:                         # the load fired at the server in each trial",
        "  # closed loop: 16 requests in flight for 10 s; also {mode: open, rate_rps: [50, 200], duration_s: 10}",
        "  - {mode: closed, concurrency: 16, duration_s: 10}  # a list of profiles is an axis too",
        _c("settings:", "how each trial runs and what counts as a failed one"),
        "  repeats: 1                  # runs of each trial; 2 or more show the run-to-run spread",
        "  warmup_s: 2                 # load before each measured window, not measured",
        "  min_success_rate: 0.99      # a trial with a smaller share of expected answers failed (exit 1)",
        "  slo_p99_ms: 500             # latency objective: the report recommends the best throughput under it",
        "  ready_timeout_s: 120        # how long a server may take to start",
        "  max_consecutive_failures: 3 # the sweep stops after this many failed trials in a row",
    ]
    return "\n".join(lines) + "\n"
