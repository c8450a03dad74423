"""Where a running TorchServe JVM spends its CPU, by thread name, every few seconds.

    python benchmarks/jvm_threads.py [--pid PID] [--every 10] [--top 7]

Run it beside a sweep or a benchmark (for example `python benchmarks/bench_noise.py
--batch-size 1 --seconds 180 --per-second`). It waits for TorchServe's JVM (a `java` running
org.pytorch.serve.ModelServer; or takes --pid), then prints, every --every seconds, the JVM's CPU as % of one core and its busiest
thread groups: thread names with their trailing numbers dropped, so "C2 CompilerThre"
(HotSpot's JIT compiler), "epollEventLoopG" (netty), "W-9000-mlp_1." (a backend worker's
frontend thread), "GC Thread". It reads /proc/PID/task/*/stat (Linux; user + system
seconds, via sweeper.torchserve.jit.thread_cpu), so a thread that is born and gone
between two samples is missed. It stops when the JVM exits.

The late C2 bursts 40-100 s after the server warm-up
(docs/measurements.md#code-c2-late-bursts) were measured with this script.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sweeper.torchserve import jit  # noqa: E402

PROC = "/proc"


def find_java() -> int | None:
    """TorchServe's JVM (a `java` whose command line runs org.pytorch.serve.ModelServer; a
    short `java -version`, as the sweeper's Java check runs, is not it)."""
    for entry in os.listdir(PROC):
        if not entry.isdigit():
            continue
        try:
            with open(f"{PROC}/{entry}/comm") as f:
                if f.read().strip() != "java":
                    continue
            with open(f"{PROC}/{entry}/cmdline", "rb") as f:
                if b"org.pytorch.serve.ModelServer" in f.read():
                    return int(entry)
        except OSError:
            continue
    return None


def group_cpu(pid: int) -> collections.Counter:
    """CPU seconds per thread group of `pid`: thread names without their trailing numbers
    (sweeper.torchserve.jit.thread_cpu reads them). Raises OSError when it is gone."""
    threads = jit.thread_cpu(pid)
    if threads is None:
        raise OSError(f"cannot read {PROC}/{pid}/task")
    out: collections.Counter = collections.Counter()
    for name, cpu in threads.values():
        out[re.sub(r"[#\d-]+$", "", name).strip()] += cpu
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, default=None, help="the JVM's pid (default: the first JVM running TorchServe)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--top", type=int, default=7, help="thread groups shown per sample")
    parser.add_argument("--wait-s", type=float, default=300.0, help="how long to wait for a JVM to appear")
    args = parser.parse_args(argv)
    pid, deadline = args.pid, time.monotonic() + args.wait_s
    while pid is None:
        if time.monotonic() > deadline:
            print(f"error: no TorchServe JVM appeared within {args.wait_s:g} s", file=sys.stderr)
            return 1
        time.sleep(0.5)
        pid = find_java()
    try:
        before = group_cpu(pid)
    except OSError:
        print(f"error: cannot read {PROC}/{pid}/task", file=sys.stderr)
        return 1
    start = time.monotonic()
    while True:
        time.sleep(args.every)
        try:
            now = group_cpu(pid)
        except OSError:
            print(f"{time.monotonic() - start:5.0f}s the JVM (pid {pid}) exited", flush=True)
            return 0
        delta = {k: now[k] - before.get(k, 0) for k in now}  # a group whose threads all ended is left out
        scale = 100.0 / args.every  # CPU seconds -> % of one core
        top = sorted(delta.items(), key=lambda kv: -kv[1])[: args.top]
        groups = "  ".join(f"{name}:{cpu * scale:.0f}" for name, cpu in top)
        print(f"{time.monotonic() - start:5.0f}s jvm {sum(max(0, v) for v in delta.values()) * scale:5.1f}%  {groups}", flush=True)
        before = now


if __name__ == "__main__":
    sys.exit(main())
