"""run_load against the fake server on a real loopback socket: engine processes, loops, records.

Every run is bounded in count and time and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import _thread
import multiprocessing
import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

from sweeper.errors import LoadError
from sweeper.load import LoadProfile, Target, run_load, summarize
from sweeper.load.types import STATUS_REFUSED, STATUS_TIMEOUT

from fakeserver import FakeServer

BODY = b'{"x": [0.1, 0.2]}'


def closed(**kw) -> LoadProfile:
    return LoadProfile("closed", **{"concurrency": 4, "timeout_s": 5.0, **kw})


def open_(**kw) -> LoadProfile:
    return LoadProfile("open", **{"timeout_s": 5.0, **kw})


def test_closed_loop_sends_exactly_the_requested_count():
    with FakeServer(delay_s=0.001, batch_size=8, handler_ms=2.5) as server:
        run = run_load(Target(server.url("/predictions/m"), BODY), closed(concurrency=7, requests=503))
    got = summarize(run)
    assert (got["client_requests"], got["client_ok"], server.requests) == (503, 503, 503)
    assert server.connections == 7  # warm keep-alive connections, one per slot
    assert (got["client_batch_size_mean"], got["client_handler_ms_mean"]) == (8.0, 2.5)
    rec = run.records
    assert np.all(rec["scheduled_s"] <= rec["sent_s"]) and np.all(rec["sent_s"] < rec["end_s"])
    # Never more than 7 in flight: at any request's start, at most 6 others are open.
    starts, ends = np.sort(rec["sent_s"]), np.sort(rec["end_s"])
    in_flight = np.arange(1, len(starts) + 1) - np.searchsorted(ends, starts, side="right")
    assert in_flight.max() <= 7


def test_closed_loop_stops_issuing_after_duration():
    with FakeServer(delay_s=0.01) as server:
        run = run_load(Target(server.url()), closed(concurrency=2, duration_s=0.3))
    rec = run.records
    assert rec["scheduled_s"].max() < 0.3
    assert 10 <= len(rec) <= 62  # 2 slots x >= 10 ms per request x 0.3 s
    assert server.requests == len(rec)


def test_server_errors_are_failures_not_served_requests():
    with FakeServer(fail_every=4, fail_status=503) as server:
        run = run_load(Target(server.url()), closed(requests=400))
    got = summarize(run)
    assert got["client_status_counts"] == "200:300 503:100"
    assert (got["client_ok"], got["client_errors"], got["client_success_rate"]) == (300, 100, 0.75)
    # a count-bounded closed loop measures until its last request was issued
    window = float(run.records["scheduled_s"].max())
    served = int(((run.records["status"] == 200) & (run.records["end_s"] <= window)).sum())
    assert got["client_window_s"] == pytest.approx(window)
    assert got["client_throughput_rps"] == pytest.approx(served / window)


def test_reconnects_when_the_server_closes_connections_and_reads_chunked_bodies():
    with FakeServer(close_every=10, chunked=True, body=b"x" * 3000) as server:
        run = run_load(Target(server.url()), closed(concurrency=3, requests=200))
    got = summarize(run)
    assert got["client_status_counts"] == "200:200"
    assert server.connections >= 20  # 3 warm ones + one after (nearly) every close


def test_requests_that_outlive_the_timeout_are_errors():
    with FakeServer(delay_s=2.0) as server:
        run = run_load(Target(server.url()), closed(concurrency=2, requests=2, timeout_s=0.2))
    assert list(run.records["status"]) == [STATUS_TIMEOUT] * 2
    latency = run.records["end_s"] - run.records["sent_s"]
    assert np.all((latency >= 0.2) & (latency < 1.0))


def test_open_loop_follows_the_schedule_and_accounts_send_lag():
    with FakeServer(delay_s=0.002) as server:
        run = run_load(Target(server.url(), BODY), open_(rate_rps=500.0, duration_s=0.6))
    rec = run.records
    assert len(rec) == 300 and server.requests == 300
    np.testing.assert_allclose(rec["scheduled_s"], np.arange(300) / 500.0, atol=1e-9)
    lag = rec["sent_s"] - rec["scheduled_s"]
    assert lag.min() >= 0
    got = summarize(run)
    assert got["client_send_lag_max_ms"] == pytest.approx(lag.max() * 1000)
    # Loose on purpose: a shared CI machine can pause this process for 10+ ms, which in a
    # 0.6 s run is a few percent of the rate and would make the 1% client-bound verdict
    # flip. benchmarks/bench_load_open_loop.py measures the engine's accuracy (0.01%);
    # tests/test_load_summary.py checks the verdict's rules on exact records.
    assert got["client_achieved_rate_rps"] == pytest.approx(500.0, rel=0.05)
    assert got["client_send_lag_p99_ms"] < 50.0
    assert got["client_latency_p50_ms"] >= 2.0  # the server's delay is in it


def test_a_stall_shows_in_the_latency_of_requests_scheduled_during_it():
    # A pause of the machine itself (the engine or this process not run for 100-300 ms) reads
    # like a stall to these bounds: with both cores busy with other work that happened in 2
    # of 50 runs. So the run gets three tries; an engine that mismeasures fails all three.
    for attempt in range(3):
        try:
            _check_a_stall_run()
            return
        except AssertionError:
            if attempt == 2:
                raise


def _check_a_stall_run():
    # 1,000 req/s for 0.8 s; the server answers nothing for 200 ms starting 0.3 s in.
    with FakeServer(delay_s=0.001, stall_at_s=0.3, stall_s=0.2) as server:
        run = run_load(Target(server.url()), open_(rate_rps=1000.0, duration_s=0.8))
    rec, got = run.records, summarize(run)
    assert got["client_ok"] == 800
    assert got["client_latency_max_ms"] >= 180.0
    assert got["client_latency_p99_ms"] >= 150.0
    latency = rec["end_s"] - rec["scheduled_s"]
    assert latency[rec["scheduled_s"] < 0.25].max() < 100.0 / 1000
    in_stall = (rec["scheduled_s"] > 0.32) & (rec["scheduled_s"] < 0.38)
    assert np.median(latency[in_stall]) > 0.1
    # The stall was the server's, not the client's: those requests left (nearly) on time
    # and waited after leaving. Bounds are relative to the 200 ms stall, not to a healthy
    # engine's send lag of about a millisecond, because a busy shared machine can pause the
    # engine for more than 10 ms (docs/measurements.md#code-engine-pause).
    assert np.median((rec["end_s"] - rec["sent_s"])[in_stall]) > 0.1
    assert got["client_send_lag_p99_ms"] < 50.0


def test_an_absurd_open_loop_rate_is_flagged_as_client_bound():
    with FakeServer() as server:
        run = run_load(Target(server.url()), open_(rate_rps=300_000.0, duration_s=0.1))
    got = summarize(run)
    assert got["client_bound"] is True
    assert "req/s <" in got["client_bound_reason"] or "send lag" in got["client_bound_reason"]


def test_open_loop_refuses_rather_than_delays_beyond_the_outstanding_cap():
    with FakeServer(delay_s=0.5) as server:
        run = run_load(Target(server.url()), open_(rate_rps=200.0, requests=40, concurrency=10))
    got = summarize(run)
    assert got["client_status_counts"] == "-2:30 200:10"
    assert got["client_refused"] == 30
    refused = run.records[run.records["status"] == STATUS_REFUSED]
    assert np.all(refused["end_s"] - refused["scheduled_s"] < 0.1)  # recorded when due


def test_processes_share_t0_and_their_records_merge_into_one_schedule():
    with FakeServer(delay_s=0.001) as server:
        run = run_load(Target(server.url()), open_(rate_rps=400.0, duration_s=0.5, processes=2))
    rec = run.records
    assert len(rec) == 200 and server.requests == 200
    # The two processes' schedules interleave into one at the total rate.
    np.testing.assert_allclose(rec["scheduled_s"], np.arange(200) / 400.0, atol=1e-9)
    assert np.all(rec["sent_s"] - rec["scheduled_s"] >= 0)
    assert np.all(np.diff(rec["scheduled_s"]) > 0)
    # Both started at the common t0: neither process's first send is late by much.
    assert rec["sent_s"][:2].max() < 0.05
    assert summarize(run)["client_achieved_rate_rps"] == pytest.approx(400.0, rel=0.05)


def test_closed_loop_over_processes_splits_count_and_concurrency():
    with FakeServer(delay_s=0.001) as server:
        run = run_load(Target(server.url()), closed(concurrency=5, requests=301, processes=2))
    assert len(run.records) == 301 and server.requests == 301
    assert server.connections == 5
    assert np.all(np.diff(run.records["scheduled_s"]) >= 0)
    assert run.client_cpu_s > 0


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no sched_setaffinity")
def test_cpu_affinity_is_applied_in_the_children():
    cpu = sorted(os.sched_getaffinity(0))[0]
    with FakeServer() as server:
        run = run_load(Target(server.url()), closed(requests=50, cpu_affinity=(cpu,)))
        assert len(run.records) == 50
        with pytest.raises(LoadError, match=r"load engine process 0: .*Invalid argument"):
            run_load(Target(server.url()), closed(requests=5, cpu_affinity=(100_000,)))


def test_unreachable_server_is_a_load_error():
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LoadError, match=f"cannot connect to 127.0.0.1:{port}"):
        run_load(Target(f"http://127.0.0.1:{port}/"), closed(requests=5))


def test_bad_profile_fails_before_any_process_starts():
    with pytest.raises(LoadError, match="load profile: closed loop: concurrency"):
        run_load(Target("http://127.0.0.1:1/"), closed(concurrency=0, requests=5))


def _engine_children() -> list:
    return [p for p in multiprocessing.active_children() if p.name.startswith("sweeper-load-")]


@pytest.mark.timeout(60)
def test_a_killed_engine_process_is_a_load_error_and_nothing_is_left_behind():
    def kill_an_engine() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            children = _engine_children()
            if children and children[0].pid:
                time.sleep(0.3)  # let it get into the run
                os.kill(children[0].pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    with FakeServer(delay_s=0.01) as server:
        killer = threading.Thread(target=kill_an_engine)
        killer.start()
        try:
            with pytest.raises(LoadError, match=r"load engine process 0 .*exit(ed with)? code -9"):
                run_load(Target(server.url()), closed(concurrency=2, duration_s=5.0))
        finally:
            killer.join()
    assert _engine_children() == []


@pytest.mark.timeout(60)
def test_ctrl_c_terminates_the_engine_processes():
    with FakeServer(delay_s=0.01) as server:
        timer = threading.Timer(1.0, _thread.interrupt_main)
        timer.start()
        started = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                run_load(Target(server.url()), closed(concurrency=2, duration_s=10.0))
        finally:
            timer.cancel()
    assert time.monotonic() - started < 5.0
    assert _engine_children() == []


def test_warmup_runs_in_the_same_engine_and_is_not_recorded():
    seen = []
    with FakeServer(delay_s=0.001) as server:

        def on_ready():
            seen.append(server.requests)  # the warm-up is over, the window has not begun

        run = run_load(
            Target(server.url("/predictions/m"), BODY),
            closed(concurrency=2, requests=100),
            warmup=closed(concurrency=2, duration_s=0.3),
            on_ready=on_ready,
        )
        total = server.requests
    assert len(seen) == 1 and seen[0] > 0  # called once, after warm-up requests were served
    assert len(run.records) == 100 and total == seen[0] + 100
    with pytest.raises(LoadError, match="warm-up must be a closed loop"):
        run_load(Target("http://127.0.0.1:9/"), closed(requests=1), warmup=open_(rate_rps=10, duration_s=1))


def _engines(pid: int) -> tuple[list, list]:
    """(fork servers, engine processes) of the process `pid` that ran run_load: engines are
    forked by multiprocessing's fork server, a child of `pid` (spawned ones: its children)."""
    import psutil

    def cmd(p) -> str:
        try:
            return " ".join(p.cmdline())
        except psutil.Error:
            return ""

    kids = psutil.Process(pid).children()
    servers = [p for p in kids if "forkserver" in cmd(p)]
    forked = [g for p in servers for g in p.children()]
    return servers, forked + [p for p in kids if "spawn" in cmd(p)]


@pytest.mark.timeout(60)
def test_engines_stop_when_the_sweeper_is_killed():
    """SIGKILL of the process that ran run_load leaves no `finally`: the engines notice
    their parent is gone (watchdog, every 0.1 s) and stop instead of loading the server
    until the profile's end (30 s here)."""
    import subprocess
    import sys

    import psutil

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with FakeServer(delay_s=0.005) as server:
        code = (
            "from sweeper.load import LoadProfile, Target, run_load\n"
            f"run_load(Target({server.url()!r}), LoadProfile('closed', concurrency=2, duration_s=30.0, "
            "timeout_s=5.0, processes=2))\n"
        )
        driver = subprocess.Popen([sys.executable, "-c", code], cwd=root, env={**os.environ, "PYTHONPATH": root})
        engines: list = []
        forkservers: list = []
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (server.requests > 50 and len(engines) == 2):
                time.sleep(0.05)
                forkservers, engines = _engines(driver.pid)
            assert len(engines) == 2 and server.requests > 50, "the engines never started sending"
            driver.kill()
            driver.wait(5)
            gone, alive = psutil.wait_procs(engines + forkservers, timeout=5)
            assert not alive, f"engines (or the fork server) outlived the sweeper: {[p.pid for p in alive]}"
            after = server.requests
            time.sleep(0.3)
            assert server.requests == after  # and nothing more reached the server
        finally:
            for p in [driver, *engines, *forkservers]:
                try:
                    p.kill()
                except (ProcessLookupError, psutil.Error):
                    pass


def test_payloads_rotate_round_robin_in_every_process():
    bodies = tuple((b"x" * n, (("Content-Type", "application/octet-stream"),)) for n in (10, 20, 30))
    with FakeServer() as server:
        run = run_load(Target(server.url("/predictions/m"), bodies=bodies), closed(concurrency=2, requests=300, processes=2))
    assert summarize(run)["client_ok"] == 300
    assert server.lengths == {10: 100, 20: 100, 30: 100}  # 150 per process, 50 of each payload
