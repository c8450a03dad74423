"""The whole machine's CPU time over a window, from /proc/stat: how busy it was, and how
much time the hypervisor gave to other guests (steal).

On a virtual machine `steal` is time this guest was ready to run and its virtual CPU was
not: another tenant of the host had it. It is outside the sweeper's control and it moves
throughput: steal can come in bursts, and throughput follows it second by second
(benchmarks/bench_noise.py measures it; docs/measurements.md#code-steal-bursts). A trial's
host_steal_pct says whether it ran in such a burst. Linux only; elsewhere the columns
are absent.
"""

from __future__ import annotations

from pathlib import Path

# Above this share of the machine stolen during a repeat, the repeat is left out of its
# trial's figures where it can be (sweeper.analysis.aggregate.used_repeats) and results.md
# says so: a closed-loop repeat under heavy steal can serve far less than its twin
# (docs/measurements.md#code-steal-repeats).
STEAL_NOTE_PCT = 5.0

PROC_STAT = Path("/proc/stat")
# the first eight fields of the "cpu" line: user nice system idle iowait irq softirq steal
# (guest and guest_nice are already inside user and nice)
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_times(path: Path = PROC_STAT) -> tuple[int, ...] | None:
    """The machine's cumulative CPU time per FIELDS (clock ticks), None where unreadable."""
    try:
        with open(path, encoding="ascii") as f:
            first = f.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    values = [int(v) for v in first[1 : 1 + len(FIELDS)]]
    values += [0] * (len(FIELDS) - len(values))  # an old kernel without steal
    return tuple(values)


def columns(before: tuple[int, ...] | None, after: tuple[int, ...] | None) -> dict[str, float]:
    """host_busy_pct (time running anything: not idle, iowait or steal) and host_steal_pct,
    each as a percentage of all the machine's CPU time between the two readings."""
    if before is None or after is None:
        return {}
    delta = dict(zip(FIELDS, (a - b for a, b in zip(after, before))))
    total = sum(delta.values())
    if total <= 0:
        return {}
    idle = delta["idle"] + delta["iowait"]
    return {
        "host_busy_pct": 100.0 * (total - idle - delta["steal"]) / total,
        "host_steal_pct": 100.0 * delta["steal"] / total,
    }
