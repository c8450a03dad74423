"""The machine's CPU speed over a window (sweeper.hostspeed)."""

from __future__ import annotations

import time

import pytest

from sweeper import hostspeed


def test_columns_are_the_median_and_the_count():
    cols = hostspeed.columns([(0.0, 1.0), (0.25, 1.2), (0.5, 5.0)])
    assert cols == {"host_speed": 1.2, "host_speed_n": 3}
    assert hostspeed.columns([]) == {}


@pytest.mark.timeout(30)
def test_the_probe_samples_until_stopped():
    probe = hostspeed.SpeedProbe(interval_s=0.02).start()
    # about 15 samples in 0.3 s on an idle machine; on a busy one the probe's thread waits
    # for a CPU, so wait (bounded) for five rather than for a fixed time
    deadline = time.monotonic() + 10
    while len(probe.samples) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    samples = probe.stop()
    assert len(samples) >= 5
    assert all(speed > 0 for _, speed in samples)
    stamps = [t for t, _ in samples]
    assert stamps == sorted(stamps)
    count = len(samples)
    time.sleep(0.1)
    assert len(probe.samples) == count  # stopped means stopped


def test_time_spent_waiting_is_not_counted_as_slowness(monkeypatch):
    """Waiting (for a CPU, the GIL, the hypervisor) is not the CPU being slow. A unit that
    sleeps 50 ms and does almost no work costs almost no CPU time: a wall-clock timer
    would read it as 0.02 units per ms, the thread's CPU clock as far more."""
    monkeypatch.setattr(hostspeed, "unit", lambda loops=0: time.sleep(0.05))
    assert hostspeed.units_per_cpu_ms() > 1.0


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
