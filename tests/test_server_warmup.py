"""sweeper.warmup.warm_server: real load on the fake server while a stand-in "JVM" (a child
process named java, with a thread named like HotSpot's C2 compiler) compiles for a while.
The warm-up runs at least server_warmup_s, then until the compiler thread is quiet, and
never past server_warmup_max_s."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sweeper.load import LoadProfile, Target
from sweeper.warmup import REGISTRATION_QUIET_S, warm_registration, warm_server
from sweeper.spec import Settings
from sweeper.torchserve import jit

from childproc import BURN, read_line, spawn, stop
from fakeserver import FakeServer

pytestmark = [
    pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux /proc only"),
    pytest.mark.timeout(90),  # the longest warm-up here is capped at 22.5 s
]

# The process calls itself "java"; its "C2 CompilerThread0" burns CPU for argv[1] seconds
# (forever when negative), then sleeps. It burns with the GIL released (childproc.BURN),
# so the main thread still gets to say "ready" on a busy machine.
JVM = BURN + r"""
import ctypes, sys, threading, time
libc = ctypes.CDLL(None)
libc.prctl(15, b"java", 0, 0, 0)
busy_s = float(sys.argv[1])
named = threading.Event()
def compiler():
    libc.prctl(15, b"C2 CompilerThre", 0, 0, 0)
    named.set()
    end = time.monotonic() + busy_s
    while busy_s < 0 or time.monotonic() < end:
        burn()
    time.sleep(120)
threading.Thread(target=compiler, daemon=True).start()
if named.wait(30):
    print("ready", flush=True)
time.sleep(120)
"""


def _jvm(busy_s: float):
    proc = spawn([sys.executable, "-c", JVM, str(busy_s)])
    try:
        assert read_line(proc, timeout_s=30) == "ready"
    except BaseException:
        stop(proc)
        raise
    return proc


@pytest.fixture
def server():
    with FakeServer(delay_s=0.002) as fake:
        yield fake


def _warm(fake, settings: Settings) -> dict:
    # the stand-in JVM is this process's child; /metrics on the fake answers JSON (a scrape the warm-up ignores)
    me = SimpleNamespace(root_pid=os.getpid(), metrics_url=fake.url("").rstrip("/"))
    load = LoadProfile(mode="closed", concurrency=2, duration_s=1.0)
    return warm_server(me, Target(fake.url("/p"), b"x"), load, settings)


def test_the_warmup_waits_for_the_compiler_to_go_quiet(server):
    proc = _jvm(busy_s=2.5)
    try:
        assert jit.jvm_pid(os.getpid()) == proc.pid
        started = time.monotonic()
        cap = 2.5 + 2 * jit.QUIET_S + 10
        out = _warm(server, Settings(server_warmup_s=1, server_warmup_max_s=cap))
        took = time.monotonic() - started
    finally:
        stop(proc)
    # past the minimum and the compiling (2.5 s) plus the quiet span, then a second run on
    # new connections for another quiet span; well before the cap
    assert 2.5 + 2 * jit.QUIET_S - 0.5 <= out["server_warmup_s"] <= 2.5 + 2 * jit.QUIET_S + 6 and took < cap
    assert out["server_warmup_jit_pct"] < jit.QUIET_PCT


def test_the_cap_stops_a_warmup_whose_compiler_never_rests(server):
    proc = _jvm(busy_s=-1)
    try:
        out = _warm(server, Settings(server_warmup_s=1, server_warmup_max_s=3))
    finally:
        stop(proc)
    assert 2.5 <= out["server_warmup_s"] <= 3.0 + 1.5  # the cap, plus starting the engine (counted in server_warmup_s)
    assert out["server_warmup_jit_pct"] >= jit.QUIET_PCT  # says the JVM was still compiling


def test_without_a_jvm_the_warmup_is_the_minimum(server):
    out = _warm(server, Settings(server_warmup_s=1.5, server_warmup_max_s=10))
    assert 1.4 <= out["server_warmup_s"] <= 3.0 and math.isnan(out["server_warmup_jit_pct"])


def test_no_server_warmup_at_all():
    """server_warmup_s 0: nothing runs (no target is even looked at)."""
    out = warm_server(SimpleNamespace(root_pid=os.getpid()), None, LoadProfile(mode="closed", concurrency=1), Settings(server_warmup_s=0))
    assert out["server_warmup_s"] == 0.0 and math.isnan(out["server_warmup_jit_pct"])


def _warm_registration(fake, settings: Settings) -> float:
    me = SimpleNamespace(root_pid=os.getpid())
    load = LoadProfile(mode="closed", concurrency=2, duration_s=1.0)
    return warm_registration(me, Target(fake.url("/p"), b"x"), load, settings)


def test_a_new_registration_warms_up_while_the_jvm_compiles_again(server):
    """settings.registration_warmup_s: at least the minimum, then on until the compiler
    has been quiet over REGISTRATION_QUIET_S, well before the cap."""
    proc = _jvm(busy_s=3.0)
    try:
        took = _warm_registration(server, Settings(registration_warmup_s=1, registration_warmup_max_s=20))
    finally:
        stop(proc)
    # 1 s of quiet judged over the last 1 s (the minimum, shorter than REGISTRATION_QUIET_S)
    assert 3.0 + 1.0 - 0.5 <= took <= 3.0 + 1.0 + 4 and took < 20


def test_the_registration_warmup_cap_stops_it_and_without_a_jvm_it_is_the_minimum(server):
    proc = _jvm(busy_s=-1)
    try:
        took = _warm_registration(server, Settings(registration_warmup_s=1, registration_warmup_max_s=2.5))
    finally:
        stop(proc)
    assert 2.0 <= took <= 2.5 + 1.5
    assert 0.9 <= _warm_registration(server, Settings(registration_warmup_s=1, registration_warmup_max_s=20)) <= 2.5
    assert _warm_registration(server, Settings(registration_warmup_s=0)) == 0.0  # none
    assert REGISTRATION_QUIET_S < jit.QUIET_S
