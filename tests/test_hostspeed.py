"""The machine's CPU speed over a window (sweeper.hostspeed)."""

from __future__ import annotations

import statistics
import sys
import threading
import time

import pytest

from sweeper import hostspeed


def test_columns_are_the_median_and_the_count():
    cols = hostspeed.columns([(0.0, 1.0), (0.25, 1.2), (0.5, 5.0)])
    assert cols == {"host_speed": 1.2, "host_speed_n": 3}
    assert hostspeed.columns([]) == {}


def test_the_probe_samples_until_stopped():
    probe = hostspeed.SpeedProbe(interval_s=0.02).start()
    time.sleep(0.3)
    samples = probe.stop()
    assert len(samples) >= 5
    assert all(speed > 0 for _, speed in samples)
    stamps = [t for t, _ in samples]
    assert stamps == sorted(stamps)
    count = len(samples)
    time.sleep(0.1)
    assert len(probe.samples) == count  # stopped means stopped


@pytest.mark.skipif(sys.platform != "linux", reason="thread CPU clocks as Linux keeps them")
def test_time_spent_waiting_for_the_gil_is_not_counted_as_slowness():
    """A wall-clock timer would read a unit that waited for the GIL as a slow CPU. With
    another thread busy in Python and a short switch interval, each unit is interrupted
    many times: its wall time roughly doubles, its CPU time does not."""
    idle = [hostspeed.units_per_cpu_ms() for _ in range(30)]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(i for i in range(1000))

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0001)
    busy_thread = threading.Thread(target=spin, daemon=True)
    busy_thread.start()
    try:
        walls, cpus = [], []
        for _ in range(30):
            w0 = time.perf_counter()
            cpus.append(hostspeed.units_per_cpu_ms())
            walls.append(1e-3 / (time.perf_counter() - w0))  # units per wall ms
    finally:
        stop.set()
        busy_thread.join()
        sys.setswitchinterval(old)
    assert statistics.median(walls) < 0.75 * statistics.median(idle)  # the contention was real
    assert statistics.median(cpus) > 0.8 * statistics.median(idle)


def _rows(speeds_and_rps):
    import pandas as pd

    rows = []
    for trial, repeat, speed, rps in speeds_and_rps:
        rows.append({"trial_id": trial, "repeat": repeat, "status": "ok", "load_mode": "closed",
                     "client_throughput_rps": rps, "host_speed": speed})
    return pd.DataFrame(rows)


def test_a_run_whose_throughput_follows_the_cpu_speed_says_so():
    from sweeper.analysis import speed

    # throughput exactly proportional to CPU speed: dividing by it leaves no repeat noise
    df = _rows([("a", 0, 1.0, 1000.0), ("a", 1, 1.2, 1200.0), ("b", 0, 0.9, 450.0), ("b", 1, 1.1, 550.0),
                ("c", 0, 1.05, 2100.0), ("c", 1, 0.95, 1900.0)])
    s = speed.summarize(df)
    assert s.r == pytest.approx(1.0)
    assert s.cv_raw_pct > 5 and s.cv_adjusted_pct == pytest.approx(0.0, abs=1e-9)
    assert s.min_rel < 1 < s.max_rel and s.paired_repeats == 6
    assert "Pearson r = 1.00" in speed.sentence(s)


def test_a_run_whose_throughput_ignores_the_cpu_speed_is_not_adjusted_into_agreement():
    from sweeper.analysis import speed

    df = _rows([("a", 0, 1.0, 1000.0), ("a", 1, 1.2, 1000.0), ("b", 0, 0.9, 500.0), ("b", 1, 1.1, 500.0)])
    s = speed.summarize(df)
    assert s.cv_raw_pct == 0 and s.cv_adjusted_pct > 5
    assert speed.summarize(df.drop(columns=["host_speed"])) is None
