"""Capacity under the SLO: the highest open-loop rate a configuration serves with
p99 <= slo_p99_ms and success >= min_success_rate. Pure: the rate search and the verdict
on one step; running a step against TorchServe is sweeper.measure's (measure_capacity).

The search is MLPerf LoadGen's FindPeakPerformance in shape: the rate grows by `growth`
from start_rps until a rate fails (or max_rps passes), then a binary search between the
last passing and the first failing rate narrows it until (fail - pass) / pass <=
precision. A rate fails when two steps at it fail in a row: a failing step is run once
more, and a pass then counts (one short step's p99 near the knee is noise). At most max_steps steps are run whatever happens, so a trial's time is bounded
by max_steps x (step_s + the engine's start + draining the step's backlog).

A step fails when its p99 (latency from the schedule, 2xx only) exceeds the SLO, when
its success rate is below min_success_rate, or when the engine could not keep the
schedule (achieved rate below CLIENT_RATE_FRACTION of the target: requests refused at the
outstanding cap, or a starved engine): then the server was not offered the rate, and
the search must not credit it with it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Callable

# the same fraction sweeper.load.summary calls client-bound
CLIENT_RATE_FRACTION = 0.99


@dataclass(frozen=True)
class CapacityRule:
    """search.capacity with the SLO it searches under (part of a capacity trial's identity)."""

    slo_p99_ms: float
    min_success_rate: float
    start_rps: float
    max_rps: float
    growth: float
    precision: float
    step_s: float
    warmup_s: float  # the first warmup_s of each step is sent but not judged
    max_steps: int

    def step_bound_s(self, overhead_s: float = 3.0) -> float:
        """A generous upper bound on one step's wall time (engine start, the step, its
        backlog: at most about (growth - 1) x step_s after the first failing step)."""
        return self.step_s * max(2.0, self.growth) + overhead_s

    def describe(self) -> str:
        return (
            f"capacity search {self.start_rps:g}..{self.max_rps:g} req/s (x{self.growth:g}, then to "
            f"{self.precision:.0%}), p99 <= {self.slo_p99_ms:g} ms, <= {self.max_steps} steps of {self.step_s:g} s"
        )


@dataclass(frozen=True)
class Step:
    """One open-loop window at one rate, and the verdict on it."""

    rate_rps: float
    p99_ms: float
    success_rate: float
    achieved_rps: float
    throughput_rps: float
    passed: bool
    reason: str  # why it failed ("" when it passed)
    limit: str  # what failed: "" | "p99" | "success" | "client"


def judge(rate_rps: float, p99_ms: float, success_rate: float, achieved_rps: float, throughput_rps: float, rule: CapacityRule) -> Step:
    """The verdict on one step's figures (NaN p99: nothing was served, a failure)."""
    reasons, limit = [], ""
    if not achieved_rps >= CLIENT_RATE_FRACTION * rate_rps:
        reasons.append(f"engine kept {_num(achieved_rps)} of {rate_rps:g} req/s")
        limit = "client"
    if not success_rate >= rule.min_success_rate:
        reasons.append(f"success {_num(success_rate, 4)} < {rule.min_success_rate:g}")
        limit = limit or "success"
    if not p99_ms <= rule.slo_p99_ms:
        reasons.append(f"p99 {_num(p99_ms)} ms > {rule.slo_p99_ms:g} ms")
        limit = limit or "p99"
    return Step(rate_rps, p99_ms, success_rate, achieved_rps, throughput_rps, not reasons, "; ".join(reasons), limit)


@dataclass(frozen=True)
class Capacity:
    """The search's outcome.

    rps: the highest passing rate; 0.0 when even start_rps failed.
    limited_by: what ended the search at rps: "p99" | "success" | "client" (the verdict on
    the lowest failing rate), "max_rps" (max_rps passed: the capacity is at least that),
    or, with "steps" appended ("p99+steps"), max_steps ran out before the precision was
    reached.
    best: index in `steps` of the step at rps (the last passing one), or of the first
    step when none passed.
    """

    rps: float
    limited_by: str
    steps: tuple[Step, ...]
    best: int
    fail_rps: float = math.nan  # the lowest rate that failed twice (a confirmed failure)

    def columns(self) -> dict:
        lo, hi = self.rps, self.fail_rps
        return {
            "capacity_rps_at_slo": self.rps,
            "capacity_limited_by": self.limited_by,
            "capacity_first_fail_rps": hi,
            "capacity_precision": (hi - lo) / lo if lo > 0 and not math.isnan(hi) else math.nan,
            "capacity_steps_n": len(self.steps),
            "capacity_steps": json.dumps([_step_json(s) for s in self.steps]),
        }


def find_capacity(step: Callable[[float], Step], rule: CapacityRule) -> Capacity:
    """Run `step(rate)` as the search decides (see the module docstring)."""
    steps: list[Step] = []
    passed: float | None = None  # highest passing rate
    failed: Step | None = None  # the step at the lowest failing rate
    best = 0

    def run(rate: float) -> Step:
        nonlocal passed, failed, best
        s = step(rate)
        steps.append(s)
        if not s.passed and len(steps) < rule.max_steps:
            # a failure is believed when a second step at the same rate fails too: near the
            # knee one short step's p99 is noise: a 3 s step can fail a rate that the next
            # step passes, and a higher one too (docs/measurements.md#code-capacity-confirm)
            s = step(rate)
            steps.append(s)
        if s.passed:
            passed, best = rate, len(steps) - 1
        else:
            failed = s
        return s

    rate = rule.start_rps
    while len(steps) < rule.max_steps:  # growth
        if not run(rate).passed or rate >= rule.max_rps:
            break
        rate = min(rate * rule.growth, rule.max_rps)
    while passed is not None and failed is not None and len(steps) < rule.max_steps:  # bisection
        if (failed.rate_rps - passed) / passed <= rule.precision:
            break
        run((passed + failed.rate_rps) / 2.0)
    if failed is None:
        limited = "max_rps" if passed is not None and passed >= rule.max_rps else "steps"
    else:
        limited = failed.limit
        if passed is not None and (failed.rate_rps - passed) / passed > rule.precision:
            limited += "+steps"
    return Capacity(passed or 0.0, limited, tuple(steps), best, failed.rate_rps if failed else math.nan)


def _step_json(s: Step) -> dict:
    out = asdict(s)
    for key in ("p99_ms", "success_rate", "achieved_rps", "throughput_rps"):
        v = out[key]
        out[key] = None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)
    return out


def _num(value: float, digits: int = 1) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.{digits}f}"
