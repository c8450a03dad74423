"""The in-process ceiling: how fast the served code runs with no server around it.

``measure_grid`` runs the same model and the same handler code as an archive
(``handlers.handler.SweeperHandler``: JSON decode, one batched forward pass, JSON
encode, response headers on a ``LocalContext``) in a loop, and reports samples/s.
Serving efficiency of a trial = served throughput / this throughput at the same batch
size, thread count and number of workers, on the same CPUs.

A trial's server runs W workers of T torch threads each, possibly pinned to
settings.server_cpus. Its ceiling is the same: W processes at once (``workers``), each
with T threads, all pinned to those CPUs (``cpus``), started together after their
warm-up, and their samples/s summed. A single process's figure would let 4 workers of one
thread reach an "efficiency" near 4.

Each thread count runs in its own child process with OMP_NUM_THREADS and
MKL_NUM_THREADS set before torch is imported, as a TorchServe worker gets them from the
JVM's environment; setting them in an already-running process has no reliable effect.

``path="forward"`` measures the model's forward pass alone (the torch-only figure), to
show how much of the ceiling the request/answer code costs.

The device is the trials' too: where the run's served trials reported GPUs (client_device,
the handler's X-Device), the W processes run on those GPUs, round-robin as TorchServe
hands out gpu_id; otherwise on the CPU. A run that mixed CPU and GPU trials gets GPU
ceilings only (docs/gpu.md).
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
    workers: int = 1  # processes measured at once; the figures are their sums
    cpus: str = ""  # the CPUs they were pinned to ("0,1"); "" = not pinned
    device: str = "cpu"  # where the model ran: cpu, cuda:0 (several: "cuda:0,cuda:1")


def measure_run(run_dir: Path, rows: list[dict], cores: int, duration_s: float = 2.0) -> "pd.DataFrame":
    """Measure the ceilings a run needs and write baseline.csv; returns the table."""
    # imported here, not at the top: each measuring child process imports this module, and
    # pandas would only slow its start
    import pandas as pd

    from sweeper.analysis.efficiency import needed

    cpus = server_cpus(run_dir)
    devices = trial_devices(rows)
    results = []
    keys = needed(rows, cores)
    # one set of measuring processes per (model, thread count), reused for every worker
    # count: each costs an import of torch, and the worker counts come as steps
    for model, threads in sorted({(m, t) for m, _, t, _ in keys}):
        steps = sorted({(w, b) for m, b, t, w in keys if m == model and t == threads})
        _validate(model, [b for _, b in steps], [threads], duration_s, "handler")
        results += _run_children(model, steps, threads, duration_s, "handler", cpus, devices)
    df = pd.DataFrame(
        [
            {"model": r.model, "batch_size": r.batch_size, "threads": r.threads, "workers": r.workers,
             "cpus": r.cpus, "samples_per_s": r.samples_per_s, "cpu_s": r.cpu_s, "duration_s": r.duration_s,
             **({"device": r.device} if devices else {})}
            for r in results
        ]
    )
    df.to_csv(RunDir(run_dir).baseline_csv, index=False)
    return df


def trial_devices(rows: list[dict]) -> list[str]:
    """The GPUs the run's served trials ran on (their client_device: cuda:N), in index
    order; [] when none reported one."""
    seen: set[str] = set()
    for row in rows:
        value = row.get("client_device")
        if row.get("status") == "ok" and isinstance(value, str):
            seen |= {d for d in value.split(",") if d.startswith("cuda")}
    return sorted(seen, key=lambda d: int(d.partition(":")[2] or 0))


def server_cpus(run_dir: Path) -> tuple[int, ...] | None:
    """settings.server_cpus of the run's resolved sweep.yaml (None: not pinned)."""
    import yaml

    try:
        doc = yaml.safe_load(RunDir(run_dir).sweep_yaml.read_text()) or {}
        cpus = (doc.get("settings") or {}).get("server_cpus")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None
    return tuple(int(c) for c in cpus) if cpus else None


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
    workers: int = 1,
    cpus: Sequence[int] | None = None,
    devices: Sequence[str] = (),
) -> list[BaselineResult]:
    """Every (threads, batch size) pair, threads-major: `workers` child processes per thread
    count, measuring at the same time, pinned to `cpus` when given, child k on
    devices[k % len(devices)] when given (else the CPU); figures summed."""
    _validate(model, batch_sizes, threads_list, duration_s, path)
    if not isinstance(workers, int) or workers < 1:
        raise SpecError("baseline", "workers", f"must be an integer >= 1, got {workers!r}")
    results: list[BaselineResult] = []
    for threads in threads_list:
        steps = [(workers, b) for b in batch_sizes]
        results.extend(_run_children(model, steps, threads, duration_s, path, cpus, devices))
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


def _run_children(
    model: str, steps: list[tuple[int, int]], threads: int, duration_s: float, path: str,
    cpus: Sequence[int] | None, devices: Sequence[str] = (),
) -> list[BaselineResult]:
    """Measure `steps`, each (workers, batch size), one after the other, with max(workers)
    child processes of `threads` torch threads: step i times children 0..workers-1 at once
    while the others wait idle. Returns one summed result per step, in order."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
    children = max(w for w, _ in steps)
    # Warm-up plus the timed loop per step, plus generous room for importing torch.
    timeout_s = 60 + 3 * duration_s * sum(w for w, _ in steps)
    what = f"baseline {model} threads={threads} workers={','.join(str(w) for w in sorted({w for w, _ in steps}))}"
    spec = ",".join(f"{w}x{b}" for w, b in steps)
    with tempfile.TemporaryDirectory(prefix="sweeper-baseline-") as tmp:
        outs = [Path(tmp) / f"results-{k}.json" for k in range(children)]
        procs = []
        try:
            for k, out in enumerate(outs):
                command = [
                    sys.executable, "-m", "sweeper.ceiling", "--model", model, "--threads", str(threads),
                    "--steps", spec, "--duration-s", str(duration_s),
                    "--path", path, "--out", str(out), "--sync-dir", tmp, "--index", str(k),
                ] + (["--cpus", ",".join(map(str, cpus))] if cpus else []) + (
                    ["--device", devices[k % len(devices)]] if devices else [])
                procs.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            _release_in_steps(Path(tmp), procs, steps, time.monotonic() + timeout_s, what)
            errors = []
            for proc in procs:
                _, err = proc.communicate(timeout=max(1.0, timeout_s))
                if proc.returncode != 0:
                    lines = err.strip().splitlines()
                    errors.append(lines[-1] if lines else f"exit status {proc.returncode}")
        except subprocess.TimeoutExpired:
            raise EnvironmentProblem(f"{what}: no result after {timeout_s:.0f} s") from None
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if errors or not all(out.is_file() for out in outs):
            raise EnvironmentProblem(f"{what} failed: {errors[0] if errors else 'no result written'}")
        # each child's results, in the order of the steps it took part in
        ran = [iter(BaselineResult(**row) for row in json.loads(out.read_text())) for out in outs]
    return [_sum([next(ran[k]) for k in range(workers)]) for workers, _ in steps]


def _release_in_steps(sync: Path, procs: list, steps: list[tuple[int, int]], deadline: float, what: str) -> None:
    """The steps one at a time. For step i: warm-<i> lets its children warm up (none warms
    while another step is timed), each writes ready-<i>-<index>; go-<i> starts every timed
    loop at the same moment, as under a server; each writes done-<i>-<index> after it."""

    def wait_for(names: list[str]) -> bool:
        while not all((sync / name).exists() for name in names):
            if any(p.poll() not in (None, 0) for p in procs):
                return False  # a child failed: its error is collected by the caller
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(what, 0)
            time.sleep(0.01)
        return True

    for i, (workers, _) in enumerate(steps):
        (sync / f"warm-{i}").touch()
        if not wait_for([f"ready-{i}-{k}" for k in range(workers)]):
            return
        (sync / f"go-{i}").touch()
        if not wait_for([f"done-{i}-{k}" for k in range(workers)]):
            return


def _sum(parts: list[BaselineResult]) -> BaselineResult:
    first = parts[0]
    return BaselineResult(
        first.model, first.batch_size, first.threads,
        samples_per_s=sum(r.samples_per_s for r in parts),
        batches=sum(r.batches for r in parts),
        duration_s=max(r.duration_s for r in parts),
        path=first.path,
        cpu_s=sum(r.cpu_s for r in parts),
        workers=len(parts),
        cpus=first.cpus,
        device=",".join(sorted({r.device for r in parts})),
    )


def _measure_in_this_process(
    model: str, batch_sizes: list[int], threads: int, duration_s: float, path: str,
    ready: Callable[[int], None] | None = None, cpus: str = "", device: str = "cpu",
    before: Callable[[int], None] | None = None, after: Callable[[int], None] | None = None,
) -> list[BaselineResult]:
    """Samples/s at each of `batch_sizes` in turn (a batch size may come again). With the
    callbacks, for the i-th: before(i) ahead of its warm-up, ready(i) between the warm-up
    and the timed loop, after(i) once it is timed."""
    import torch

    from handlers.handler import LocalContext, SweeperHandler

    torch.set_num_threads(threads)
    handler = SweeperHandler.for_model(model, device)
    on_gpu = handler.device.type == "cuda"
    body = handler.info.example_request()
    results = []
    for i, batch_size in enumerate(batch_sizes):
        if before is not None:
            before(i)
        # Bytes, as a TorchServe worker would see a body it has not decoded: the JSON
        # decode of every request is part of the served cost, so it is part of this one.
        data = [{"body": body} for _ in range(batch_size)]
        if path == "handler":
            def step() -> None:
                handler.handle(data, LocalContext(batch_size))
        else:
            inputs = torch.stack([handler.info.parse(json.loads(body)) for _ in range(batch_size)]).to(handler.device)

            def step() -> None:
                with torch.inference_mode():
                    handler.model(inputs)
                if on_gpu:
                    torch.cuda.synchronize(handler.device)  # kernels run asynchronously: time them done

        _run_for(step, min(0.5, duration_s / 4))  # warm-up: allocator, thread pool, caches
        if ready is not None:
            ready(i)  # wait for the other workers: the timed loops run together
        cpu_start_s = time.process_time()
        batches, elapsed_s = _run_for(step, duration_s)
        cpu_s = time.process_time() - cpu_start_s
        if after is not None:
            after(i)
        results.append(
            BaselineResult(
                model, batch_size, threads, batches * batch_size / elapsed_s, batches, elapsed_s, path, cpu_s,
                cpus=cpus, device=handler.device_name,
            )
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
    parser = argparse.ArgumentParser(prog="python -m sweeper.ceiling")
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--steps", required=True, help="WORKERSxBATCH,...: the steps, in order")
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--path", choices=PATHS, default="handler")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sync-dir", type=Path)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--cpus", default="")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    steps = [tuple(int(x) for x in step.split("x")) for step in args.steps.split(",")]
    mine = [i for i, (workers, _) in enumerate(steps) if args.index < workers]  # the steps this child times
    sync_dir = args.sync_dir

    def wait(name: str, poll_s: float) -> None:
        while not (sync_dir / name).exists():
            time.sleep(poll_s)

    def before(j: int) -> None:
        wait(f"warm-{mine[j]}", 0.01)  # idle (a 10 ms poll) while another step is timed

    def ready(j: int) -> None:
        (sync_dir / f"ready-{mine[j]}-{args.index}").touch()
        wait(f"go-{mine[j]}", 0.002)

    def after(j: int) -> None:
        (sync_dir / f"done-{mine[j]}-{args.index}").touch()

    synced = sync_dir is not None
    results = _measure_in_this_process(
        args.model, [steps[i][1] for i in mine], args.threads, args.duration_s, args.path,
        ready=ready if synced else None, cpus=args.cpus, device=args.device,
        before=before if synced else None, after=after if synced else None,
    )
    args.out.write_text(json.dumps([asdict(r) for r in results]))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main())
