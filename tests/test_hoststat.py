"""The machine's CPU split over a window, from /proc/stat (sweeper.hoststat)."""

from __future__ import annotations

import sys

import pytest

from sweeper import hoststat

STAT = "cpu  {user} 0 {system} {idle} {iowait} 0 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nctxt 5\n"


def stat_file(tmp_path, name, **kw):
    path = tmp_path / name
    path.write_text(STAT.format(**kw))
    return path


def test_busy_and_steal_are_shares_of_all_cpu_time(tmp_path):
    before = hoststat.cpu_times(stat_file(tmp_path, "a", user=100, system=50, idle=1000, iowait=10, steal=5))
    after = hoststat.cpu_times(stat_file(tmp_path, "b", user=250, system=100, idle=1040, iowait=10, steal=15))
    # deltas: user 150, system 50, idle 40, iowait 0, steal 10: total 250
    cols = hoststat.columns(before, after)
    assert cols["host_busy_pct"] == pytest.approx(100 * 200 / 250)
    assert cols["host_steal_pct"] == pytest.approx(100 * 10 / 250)


def test_unreadable_or_empty_windows_give_no_columns(tmp_path):
    assert hoststat.cpu_times(tmp_path / "missing") is None
    (tmp_path / "odd").write_text("intr 1 2 3\n")
    assert hoststat.cpu_times(tmp_path / "odd") is None
    same = hoststat.cpu_times(stat_file(tmp_path, "a", user=1, system=1, idle=1, iowait=0, steal=0))
    assert hoststat.columns(same, same) == {}
    assert hoststat.columns(None, same) == {}


def test_an_old_kernel_without_steal_reads_as_zero_steal(tmp_path):
    (tmp_path / "old").write_text("cpu  10 0 10 80 0\n")
    (tmp_path / "new").write_text("cpu  20 0 20 160 0\n")
    cols = hoststat.columns(hoststat.cpu_times(tmp_path / "old"), hoststat.cpu_times(tmp_path / "new"))
    assert cols["host_steal_pct"] == 0 and cols["host_busy_pct"] == pytest.approx(20.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_this_machine_reads():
    times = hoststat.cpu_times()
    assert times is not None and len(times) == len(hoststat.FIELDS) and sum(times) > 0


def test_results_md_and_the_recommendation_name_trials_measured_under_steal(tmp_path):
    """A repeat with host steal above STEAL_NOTE_PCT marks its trial in results.md and, for
    the winner or runner-up, adds a caveat to the recommendation."""
    from test_results import put, row

    from sweeper import results
    from sweeper.analysis.aggregate import aggregate_trials
    from sweeper.report.markdown import markdown
    from sweeper.report.recommend import recommend

    over = hoststat.STEAL_NOTE_PCT + 7
    put(tmp_path, row("a", 0, client_throughput_rps=200.0, host_steal_pct=1.0))
    put(tmp_path, row("a", 1, client_throughput_rps=210.0, host_steal_pct=over))
    put(tmp_path, row("b", 0, param_model_batch_size=2, client_throughput_rps=100.0, host_steal_pct=0.5))
    put(tmp_path, row("b", 1, param_model_batch_size=2, client_throughput_rps=105.0, host_steal_pct=0.5))
    table = results.table(tmp_path)
    md = markdown(table)
    # a's stolen repeat is left out of its figures: a has a repeat without
    assert "⧗ STEAL: in 1 trial(s)" in md and "a (1 left out)" in md
    assert sum(line.startswith("| ⧗") for line in md.splitlines()) == 1
    agg = aggregate_trials(table).set_index("trial_id")
    assert agg.loc["a", "client_throughput_rps_mean"] == 200.0 and agg.loc["a", "n_stolen"] == 1
    assert agg.loc["b", "client_throughput_rps_mean"] == 102.5 and agg.loc["b", "n_stolen"] == 0
    pick = recommend(aggregate_trials(table), None).throughput
    assert pick.winner["trial_id"] == "a" and not any("steal" in c for c in pick.caveats)

    # every repeat of a under steal: both kept, marked, and the winner carries a caveat
    put(tmp_path, row("a", 0, client_throughput_rps=200.0, host_steal_pct=over))
    table = results.table(tmp_path)
    assert aggregate_trials(table).set_index("trial_id").loc["a", "client_throughput_rps_mean"] == 205.0
    assert f"a (every repeat; up to {over:.0f}%)" in markdown(table)
    pick = recommend(aggregate_trials(table), None).throughput
    assert any("steal above" in c and f"the winner's ({over:.0f}%)" in c for c in pick.caveats)

    # below the threshold: no mark, no caveat, nothing left out
    for r in (0, 1):
        put(tmp_path, row("a", r, client_throughput_rps=200.0 + 10 * r, host_steal_pct=hoststat.STEAL_NOTE_PCT - 1))
    table = results.table(tmp_path)
    assert "STEAL" not in markdown(table)
    assert aggregate_trials(table).set_index("trial_id").loc["a", "n_stolen"] == 0
    assert not any("steal" in c for c in recommend(aggregate_trials(table), None).throughput.caveats)


def test_a_winner_measured_on_faster_cpus_than_the_runner_up_carries_a_caveat(tmp_path):
    """host_speed (sweeper.hostspeed): when the winner's repeats ran on CPUs more than
    SPEED_NOTE_PCT faster than the runner-up's, the recommendation says so."""
    from test_results import put, row

    from sweeper import results
    from sweeper.analysis.aggregate import aggregate_trials
    from sweeper.report.recommend import SPEED_NOTE_PCT, recommend

    def pick(speed_a: float):
        for r in (0, 1):
            put(tmp_path, row("a", r, client_throughput_rps=300.0 + r, host_speed=speed_a))
            put(tmp_path, row("b", r, param_model_batch_size=2, client_throughput_rps=200.0 + r, host_speed=1.0))
        return recommend(aggregate_trials(results.table(tmp_path)), None).throughput

    fast = pick(1.0 + (SPEED_NOTE_PCT + 20) / 100)
    assert fast.winner["trial_id"] == "a"
    assert any(f"{SPEED_NOTE_PCT + 20:.0f}% faster during the winner's repeats" in c for c in fast.caveats)
    assert not any("faster during" in c for c in pick(1.0 + (SPEED_NOTE_PCT - 5) / 100).caveats)
    assert not any("faster during" in c for c in pick(0.8).caveats)  # the winner won on slower CPUs
