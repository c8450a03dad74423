"""sweeper.torchserve.jit against a real process whose threads carry HotSpot's compiler
thread names: one that burns CPU, then stops; others that must not count."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest

from sweeper.torchserve import jit

from childproc import BURN, read_line, spawn, stop

pytestmark = [
    pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux /proc only"),
    pytest.mark.timeout(60),  # a few seconds each; the waits below are bounded well inside this
]

# A process with three named threads: "C2 CompilerThread0" burns CPU until /stop exists,
# "C1 CompilerThread0" sleeps, "epollEventLoopGroup-3-1" burns CPU all along (not a
# compiler). The burning is C work with the GIL released (childproc.BURN), so neither
# spinner can keep the main thread or the other threads from running; "ready" comes once
# every thread has named itself.
CHILD = BURN + r"""
import ctypes, os, sys, threading, time
libc = ctypes.CDLL(None)
stop = sys.argv[1]
def named(name, body):
    named_ = threading.Event()
    def run():
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME: the kernel keeps 15 bytes
        named_.set()
        body()
    threading.Thread(target=run, daemon=True).start()
    return named_
def spin_until_stopped():
    while not os.path.exists(stop):
        burn()
def spin_forever():
    while True:
        burn()
threads = [
    named("C2 CompilerThread0", spin_until_stopped),
    named("C1 CompilerThread0", lambda: time.sleep(120)),
    named("epollEventLoopGroup-3-1", spin_forever),
]
if all(t.wait(30) for t in threads):
    print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture
def child(tmp_path):
    stop_file = tmp_path / "stop"
    proc = spawn([sys.executable, "-c", CHILD, str(stop_file)])
    try:
        assert read_line(proc, timeout_s=30) == "ready"
        yield proc, stop_file
    finally:
        stop(proc)


def _wait_until(predicate, timeout_s: float, every_s: float = 0.1):
    """Poll `predicate` until it returns something true (returned) or timeout_s passed (the
    last value returned): CPU ticks come in 10 ms steps, as the scheduler hands them out."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


def test_compiler_threads_are_found_by_name_and_others_are_not(child):
    proc, _ = child
    first = jit.compiler_cpu(proc.pid)
    assert first is not None and len(first) == 2  # C1 and C2, not the netty-like spinner
    # the C2 thread burns CPU: its ticks grow (within seconds, however busy the machine)
    assert _wait_until(lambda: sum(jit.compiler_cpu(proc.pid).values()) > sum(first.values()), timeout_s=10)


def test_busy_then_quiet(child):
    """Busy while the C2 thread spins, quiet once it stopped and span_s has passed. The
    watch is polled until each state shows (bounded), so a machine too busy to give the
    spinner its share soon delays the test instead of failing it. Busy is judged against
    the watch's own threshold (5% of a core), not a share the spinner would get on an idle
    machine: with other work on both cores it got 6-13% of one for seconds on end."""
    proc, stop_file = child
    watch = jit.Watch(proc.pid, pct=5.0, span_s=0.6)
    assert not watch.quiet() and math.isnan(watch.recent_pct())  # one sample: no span yet
    assert _wait_until(lambda: not watch.quiet() and watch.recent_pct() >= 5.0, timeout_s=10, every_s=0.25), watch.recent_pct()
    stop_file.touch()
    assert _wait_until(watch.quiet, timeout_s=10, every_s=0.25), watch.recent_pct()
    assert watch.recent_pct() < 5.0
    time.sleep(0.25)
    assert watch.quiet()  # and stays quiet: the C2 thread stopped


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

    def grew() -> set:
        second = jvm_threads.group_cpu(proc.pid)
        return {name for name in second if second[name] > first.get(name, 0)}

    # both spinning threads get CPU ticks (10 ms each); on a busy machine one of them may
    # get none for a while, so wait (bounded) until both have
    assert _wait_until(lambda: {"C2 CompilerThre", "epollEventLoopG"} <= grew(), timeout_s=10, every_s=0.25)
    second = jvm_threads.group_cpu(proc.pid)
    assert "C1 CompilerThre" in second and second["C1 CompilerThre"] == first["C1 CompilerThre"]  # it sleeps
    with pytest.raises(OSError):
        jvm_threads.group_cpu(2**22 + 1)  # no such process
