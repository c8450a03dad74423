"""The in-process ceiling: how fast the served code runs with no server around it.

``measure_grid`` runs the same model and the same handler code as an archive
(``handlers.handler.SweeperHandler``: JSON decode, one batched forward pass, JSON
encode, response headers on a ``LocalContext``) in a loop, and reports samples/s.
Serving efficiency of a trial = served throughput / this throughput at the same batch
size and thread count.

Each thread count runs in its own child process with OMP_NUM_THREADS and
MKL_NUM_THREADS set before torch is imported, as a TorchServe worker gets them from the
JVM's environment; setting them in an already-running process has no reliable effect.

``path="forward"`` measures the model's forward pass alone (the torch-only figure), to
show how much of the ceiling the request/answer code costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from sweeper.errors import EnvironmentProblem, SpecError
from sweeper.rundir import RunDir

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

PATHS = ("handler", "forward")
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BaselineResult:
    model: str
    batch_size: int
    threads: int
    samples_per_s: float
    batches: int
    duration_s: float
    path: str = "handler"
    cpu_s: float = 0.0
    """CPU seconds of the measuring process in the timed loop: well below
    threads x duration_s means it was starved by other processes, and the figure is low."""


def measure_run(run_dir: Path, rows: list[dict], cores: int, duration_s: float = 2.0) -> "pd.DataFrame":
    """Measure the ceilings a run needs and write baseline.csv; returns the table."""
    # imported here, not at the top: each measuring child process imports this module, and
    # pandas would only slow its start
    import pandas as pd

    from sweeper.analysis.efficiency import needed

    results = []
    for model in sorted({m for m, _, _ in needed(rows, cores)}):
        keys = [k for k in needed(rows, cores) if k[0] == model]
        batch_sizes = sorted({b for _, b, _ in keys})
        threads = sorted({t for _, _, t in keys})
        results += measure_grid(model, batch_sizes, threads, duration_s)
    df = pd.DataFrame(
        [
            {"model": r.model, "batch_size": r.batch_size, "threads": r.threads, "samples_per_s": r.samples_per_s,
             "cpu_s": r.cpu_s, "duration_s": r.duration_s}
            for r in results
        ]
    )
    df.to_csv(RunDir(run_dir).baseline_csv, index=False)
    return df


def measure_baseline(
    model_name: str, batch_size: int, threads: int, duration_s: float = 2.0, path: str = "handler"
) -> BaselineResult:
    """In-process samples/s of one model at one batch size and thread count."""
    return measure_grid(model_name, [batch_size], [threads], duration_s, path)[0]


def measure_grid(
    model: str,
    batch_sizes: Sequence[int],
    threads_list: Sequence[int],
    duration_s: float = 2.0,
    path: str = "handler",
) -> list[BaselineResult]:
    """Every (threads, batch size) pair, threads-major, one child process per thread count."""
    _validate(model, batch_sizes, threads_list, duration_s, path)
    results: list[BaselineResult] = []
    for threads in threads_list:
        results.extend(_run_child(model, list(batch_sizes), threads, duration_s, path))
    return results


def _validate(model: str, batch_sizes: Sequence[int], threads_list: Sequence[int], duration_s: float, path: str) -> None:
    from handlers.models import MODELS

    source = "baseline"
    if model not in MODELS:
        raise SpecError(source, "model", f"unknown model {model!r}, expected one of: {', '.join(sorted(MODELS))}")
    if path not in PATHS:
        raise SpecError(source, "path", f"must be one of {', '.join(PATHS)}, got {path!r}")
    if not batch_sizes or not threads_list:
        raise SpecError(source, "batch_sizes/threads", "must not be empty")
    for key, values in (("batch_size", batch_sizes), ("threads", threads_list)):
        for i, value in enumerate(values):
            if not isinstance(value, int) or value < 1:
                raise SpecError(source, f"{key}[{i}]", f"must be an integer >= 1, got {value!r}")
    if not duration_s > 0:
        raise SpecError(source, "duration_s", f"must be > 0, got {duration_s!r}")


def _run_child(model: str, batch_sizes: list[int], threads: int, duration_s: float, path: str) -> list[BaselineResult]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
    # Warm-up plus the timed loop per batch size, plus generous room for importing torch.
    timeout_s = 60 + 3 * duration_s * len(batch_sizes)
    with tempfile.TemporaryDirectory(prefix="sweeper-baseline-") as tmp:
        out = Path(tmp) / "results.json"
        command = [
            sys.executable, "-m", "sweeper.analysis.ceiling", "--model", model, "--threads", str(threads),
            "--batch-sizes", ",".join(map(str, batch_sizes)), "--duration-s", str(duration_s),
            "--path", path, "--out", str(out),
        ]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise EnvironmentProblem(f"baseline {model} threads={threads}: no result after {timeout_s:.0f} s") from None
        if done.returncode != 0 or not out.is_file():
            lines = done.stderr.strip().splitlines()
            last = lines[-1] if lines else f"exit status {done.returncode}"
            raise EnvironmentProblem(f"baseline {model} threads={threads} failed: {last}")
        return [BaselineResult(**row) for row in json.loads(out.read_text())]


def _measure_in_this_process(
    model: str, batch_sizes: list[int], threads: int, duration_s: float, path: str
) -> list[BaselineResult]:
    import torch

    from handlers.handler import LocalContext, SweeperHandler

    torch.set_num_threads(threads)
    handler = SweeperHandler.for_model(model)
    body = handler.info.example_request()
    results = []
    for batch_size in batch_sizes:
        # Bytes, as a TorchServe worker would see a body it has not decoded: the JSON
        # decode of every request is part of the served cost, so it is part of this one.
        data = [{"body": body} for _ in range(batch_size)]
        if path == "handler":
            def step() -> None:
                handler.handle(data, LocalContext(batch_size))
        else:
            inputs = torch.stack([handler.info.parse(json.loads(body)) for _ in range(batch_size)])

            def step() -> None:
                with torch.inference_mode():
                    handler.model(inputs)

        _run_for(step, min(0.5, duration_s / 4))  # warm-up: allocator, thread pool, caches
        cpu_start_s = time.process_time()
        batches, elapsed_s = _run_for(step, duration_s)
        cpu_s = time.process_time() - cpu_start_s
        results.append(
            BaselineResult(model, batch_size, threads, batches * batch_size / elapsed_s, batches, elapsed_s, path, cpu_s)
        )
    return results


def _run_for(step: Callable[[], None], duration_s: float) -> tuple[int, float]:
    batches = 0
    start = time.perf_counter()
    while True:
        step()
        batches += 1
        elapsed_s = time.perf_counter() - start
        if elapsed_s >= duration_s and batches >= 3:
            return batches, elapsed_s


def _child_main(argv: list[str] | None = None) -> int:
    # The child side of _run_child; not a user-facing command.
    parser = argparse.ArgumentParser(prog="python -m sweeper.analysis.ceiling")
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-sizes", required=True)
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--path", choices=PATHS, default="handler")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    results = _measure_in_this_process(args.model, batch_sizes, args.threads, args.duration_s, args.path)
    args.out.write_text(json.dumps([asdict(r) for r in results]))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main())
