"""The thread-contention finding is computed from the data, whatever the data says."""

from __future__ import annotations

import pandas as pd

from sweeper.analysis.findings import thread_findings


def _frame(points):
    rows = []
    for workers, threads, tput, ctx in points:
        rows.append(dict(status="ok", param_server_default_workers_per_model=workers, param_env_OMP_NUM_THREADS=threads,
                         client_throughput_rps=tput, proc_ctx_per_req=ctx))
    return pd.DataFrame(rows)


def test_contention_cuts_throughput_and_switches_track_it():
    df = _frame([(1, 1, 500, 2.0), (2, 1, 900, 2.5), (2, 2, 400, 8.0), (4, 2, 100, 20.0)])
    text = thread_findings(df, cores=2)
    assert text[0].startswith("Best: default_workers_per_model=2, OMP_NUM_THREADS=1 at 900 req/s")
    assert "9.0x apart" in text[0]
    assert "above the 2 cores cut mean throughput by 64%" in text[1]  # 250 vs 700: -64.3%
    assert "strongly track" in text[2] and "-0.80" in text[2]


def test_no_effect_is_reported_as_such():
    df = _frame([(1, 1, 500, 5.0), (2, 1, 500, 1.0), (2, 2, 520, 9.0), (4, 2, 510, 2.0)])
    text = thread_findings(df, cores=2)
    assert "raised mean throughput by 3%" in text[1]
    assert "do not explain" in text[2]


def test_nothing_to_say_without_thread_axes():
    df = pd.DataFrame([dict(status="ok", param_model_batch_size=b, client_throughput_rps=100.0 * b) for b in (1, 2)])
    assert thread_findings(df, cores=2) == []


def _repeated(points):
    """points: (workers, threads, [throughput of each repeat], ctx)."""
    rows = []
    for workers, threads, tputs, ctx in points:
        for t in tputs:
            rows.append(dict(status="ok", param_server_default_workers_per_model=workers,
                             param_env_OMP_NUM_THREADS=threads, client_throughput_rps=t, proc_ctx_per_req=ctx))
    return pd.DataFrame(rows)


def test_findings_carry_intervals_and_say_when_they_are_noise():
    one = thread_findings(_frame([(1, 1, 500, 2.0), (2, 1, 900, 2.5), (2, 2, 400, 8.0), (4, 2, 100, 20.0)]), cores=2)
    assert all("no spread known: this may be noise" in s for s in one)

    clear = thread_findings(_repeated([
        (1, 1, [500, 510, 490], 2.0), (2, 1, [900, 880, 920], 2.5),
        (2, 2, [400, 410, 390], 8.0), (4, 2, [100, 105, 95], 20.0),
    ]), cores=2)
    assert "95% CI" in clear[0] and "noise" not in clear[0]
    assert "95% CI" in clear[1] and "noise" not in clear[1]

    noisy = thread_findings(_repeated([
        (1, 1, [300, 700], 2.0), (2, 1, [320, 690], 2.5),
        (2, 2, [310, 700], 8.0), (4, 2, [290, 720], 20.0),
    ]), cores=2)
    assert "cannot be told from noise" in noisy[1]
    assert "cannot be told from noise" in noisy[2]
