"""sweeper.torchserve.jit against a real process whose threads carry HotSpot's compiler
thread names: one that burns CPU, then stops; others that must not count."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeper.torchserve import jit

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux /proc only")

# A process with three named threads: "C2 CompilerThread0" spins until /stop exists,
# "C1 CompilerThread0" sleeps, "epollEventLoopGroup-3-1" spins all along (not a compiler).
CHILD = r"""
import ctypes, os, sys, threading, time
libc = ctypes.CDLL(None)
stop = sys.argv[1]
def named(name, body):
    def run():
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME: the kernel keeps 15 bytes
        body()
    threading.Thread(target=run, daemon=True).start()
def spin_until_stopped():
    while not os.path.exists(stop):
        for _ in range(100000):
            pass
def spin_forever():
    while True:
        for _ in range(100000):
            pass
named("C2 CompilerThread0", spin_until_stopped)
named("C1 CompilerThread0", lambda: time.sleep(60))
named("epollEventLoopGroup-3-1", spin_forever)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def child(tmp_path):
    stop = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(stop)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc, stop
    finally:
        proc.kill()
        proc.wait()


def test_compiler_threads_are_found_by_name_and_others_are_not(child):
    proc, _ = child
    time.sleep(0.3)
    first = jit.compiler_cpu(proc.pid)
    assert first is not None and len(first) == 2  # C1 and C2, not the netty-like spinner
    time.sleep(0.5)
    later = jit.compiler_cpu(proc.pid)
    assert sum(later.values()) > sum(first.values())  # the C2 thread burns CPU


def test_busy_then_quiet(child):
    """Busy while the C2 thread spins (with a second spinner on 2 cores it gets a large
    share of one), quiet once it stopped and span_s has passed."""
    proc, stop = child
    watch = jit.Watch(proc.pid, pct=5.0, span_s=0.6)
    assert not watch.quiet() and math.isnan(watch.recent_pct())  # one sample: no span yet
    for _ in range(4):
        time.sleep(0.25)
        watch.quiet()
    assert watch.recent_pct() > 20.0 and not watch.quiet()
    stop.touch()
    time.sleep(0.2)
    watch.sample()  # the last busy stretch
    for _ in range(4):
        time.sleep(0.25)
        watch.sample()
    assert watch.recent_pct() < 5.0 and watch.quiet()


def test_no_jvm_means_no_reading_and_a_fixed_warmup():
    """No pid (not found) or an unreadable one: quiet() is True, so the warm-up is the
    fixed minimum, and the figure is NaN."""
    for watch in (jit.Watch(None), jit.Watch(2**22 + 12345)):
        assert watch.quiet() and math.isnan(watch.recent_pct(full_span=False))


def test_jvm_pid_is_none_for_a_process_without_a_java_child(child):
    proc, _ = child
    assert jit.jvm_pid(proc.pid) is None


def test_benchmarks_jvm_threads_groups_cpu_by_thread_name(child):
    """benchmarks/jvm_threads.py, which measures the JIT compiler's bursts: the spinning
    threads' groups get ticks, the sleeping one none, the numbers of a name are dropped."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import jvm_threads

    proc, _ = child
    first = jvm_threads.group_cpu(proc.pid)
    # both spinning threads get CPU ticks (10 ms each); on a busy 2-core machine one of them
    # may get none in half a second (CI, 2026-12-02), so wait up to 5 s for both
    deadline = time.monotonic() + 5.0
    while True:
        time.sleep(0.5)
        second = jvm_threads.group_cpu(proc.pid)
        grew = {name for name in second if second[name] > first.get(name, 0)}
        if {"C2 CompilerThre", "epollEventLoopG"} <= grew or time.monotonic() > deadline:
            break
    assert {"C2 CompilerThre", "epollEventLoopG"} <= grew
    assert "C1 CompilerThre" not in grew and "C1 CompilerThre" in second
    with pytest.raises(OSError):
        jvm_threads.group_cpu(2**22 + 1)  # no such process
