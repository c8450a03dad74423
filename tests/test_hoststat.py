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
