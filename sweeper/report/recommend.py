"""The recommendation: which configuration to use, how sure we are, and how to apply it.

With search.objective capacity one pick instead: the configuration with the highest mean
capacity_rps_at_slo (recommend_capacity). Otherwise two picks over eligible *closed-loop* trials, each trial's repeats reduced to their mean,
both by the sweep's one objective (sweeper.analysis.objective, which the search uses too):
- throughput: the highest mean client_throughput_rps;
- latency: the highest mean throughput among trials whose mean p99 is <= the SLO.

Only a closed loop measures what the server can do; an open loop's throughput is the rate
it was offered (times its success), so ranking it would rank the load, not the
configuration. Open-loop trials are judged by latency at their rate instead: a note names,
at the highest rate where some configuration met the SLO, the one with the lowest p99.

A *configuration* is the set of param_* values; the load (mode, concurrency, rate) is the
condition it was measured under. The runner-up is the best trial of a *different*
configuration, because the same configuration at another load level says nothing about
which configuration to choose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

import pandas as pd

from ..defaults import MIN_SUCCESS_RATE
from sweeper.analysis import confidence as ci
from sweeper.analysis.objective import (
    CAPACITY,
    P99,
    THROUGHPUT,
    candidates,
    capacity_candidates,
    closed_loop,
    ranked,
    ranked_by_capacity,
    within_slo,
)
from sweeper.hoststat import STEAL_NOTE_PCT
from sweeper.report import fmt

MANAGEMENT_URL = "http://127.0.0.1:8081"


@dataclass(frozen=True)
class Pick:
    """A winning trial, its runner-up and what to do with it."""

    objective: str  # "throughput" | "latency" | "capacity"
    winner: dict
    runner_up: dict | None
    confidence: str  # one or two sentences on how sure the choice is
    within_noise: bool | None  # None: cannot tell (one repeat, or no runner-up)
    caveats: tuple[str, ...]
    config_lines: tuple[str, ...]
    env_lines: tuple[str, ...]
    api_lines: tuple[str, ...]


@dataclass(frozen=True)
class Recommendation:
    slo_p99_ms: float | None
    slo_source: str  # where the SLO came from, for the reader
    throughput: Pick | None
    latency: Pick | None
    notes: tuple[str, ...] = field(default=())  # why a pick is missing
    # search.objective capacity: the highest capacity_rps_at_slo (then the other two are None)
    capacity: Pick | None = None


def recommend_capacity(trials: pd.DataFrame, slo_p99_ms: float | None, slo_source: str = "") -> Recommendation:
    """The pick of a capacity run (search.objective capacity): the configuration with the
    highest mean capacity_rps_at_slo; the runner-up is the next configuration."""
    pool = capacity_candidates(trials)
    if pool.empty:
        measured = trials[trials["n_ok"] > 0] if "n_ok" in trials.columns else trials.iloc[0:0]
        why = (
            "no trial finished its capacity search"
            if measured.empty
            else "no configuration met the SLO even at search.capacity.start_rps (capacity 0): lower start_rps or relax the SLO"
        )
        return Recommendation(slo_p99_ms, slo_source, None, None, (f"Nothing to recommend: {why}.",))
    order = ranked_by_capacity(pool)
    winner = order.iloc[0]
    others = order[order["config"] != winner["config"]]
    runner = others.iloc[0] if len(others) else None
    confidence, within_noise = _capacity_confidence(winner, runner)
    caveats = []
    limited = str(winner.get("capacity_limited_by") or "")
    if limited:
        caveats.append(_LIMIT_WORDS.get(limited.split("+")[0], limited) + (" (max_steps ran out before the precision)" if "+steps" in limited else ""))
    if bool(winner.get("client_bound", False)):
        caveats.append(f"At its capacity the load engine was client-bound ({winner.get('client_bound_reason') or 'see client_bound_reason'}).")
    pick = _make_pick("capacity", winner, runner, confidence, within_noise, caveats)
    return Recommendation(slo_p99_ms, slo_source, None, None, (), capacity=pick)


_LIMIT_WORDS = {
    "p99": "The search stopped at the rate where p99 exceeded the SLO.",
    "success": "The search stopped at the rate where the success rate fell below settings.min_success_rate.",
    "client": "The search stopped where the load engine could not keep the rate: the capacity is a lower bound set by the client.",
    "max_rps": "Every rate up to search.capacity.max_rps met the SLO: the capacity is at least that; raise max_rps.",
    "steps": "max_steps ran out while every rate still met the SLO: the capacity is at least this; raise max_steps.",
}


def _capacity_confidence(winner: pd.Series, runner: pd.Series | None) -> tuple[str, bool | None]:
    """The winner against the runner-up. One search finds the capacity to within its
    precision (capacity_precision: the gap to the first failing rate), so a gap below that
    is not resolved; across repeats, overlapping ranges are not either."""
    w = float(winner[f"{CAPACITY}_mean"])
    if runner is None:
        return "Only one configuration met the SLO at some rate, so there is nothing to compare it with.", None
    r = float(runner[f"{CAPACITY}_mean"])
    gap = (w - r) / r if r > 0 else float("inf")
    head = f"Its capacity beats the runner-up's ({fmt.num(r)} req/s, trial {runner['trial_id']}) by {fmt.num(gap * 100)}%."
    precision = pd.to_numeric(pd.Series([winner.get("capacity_precision_mean"), runner.get("capacity_precision_mean")]), errors="coerce").max()
    overlap = int(winner.get("n_ok", 1)) > 1 and int(runner.get("n_ok", 1)) > 1 and float(winner[f"{CAPACITY}_min"]) <= float(runner[f"{CAPACITY}_max"])
    if overlap:
        return f"{head} Their ranges over repeats overlap: not distinguishable; run more repeats.", True
    if not pd.isna(precision) and gap <= precision:
        return f"{head} That is within the search's precision ({precision:.0%}): not distinguishable.", True
    if int(winner.get("n_ok", 1)) < 2:
        return f"{head} One repeat: the search's own noise is unknown; run 3 or more repeats to know.", None
    return f"{head} Their ranges over repeats do not overlap.", False


def recommend(trials: pd.DataFrame, slo_p99_ms: float | None, slo_source: str = "", objective: str = "throughput") -> Recommendation:
    if objective == "capacity":
        return recommend_capacity(trials, slo_p99_ms, slo_source)
    notes: list[str] = []
    eligible = candidates(trials)
    if eligible.empty:
        floor = float(trials.attrs.get("min_success_rate", MIN_SUCCESS_RATE))
        served = "every request served (status ok, success rate 1.0)" if floor >= 1.0 else (
            f"status ok and a success rate of at least settings.min_success_rate ({floor:.2%}) in every repeat"
        )
        notes.append(f"No trial finished with {served}; there is nothing to recommend.")
        return Recommendation(slo_p99_ms, slo_source, None, None, tuple(notes))

    closed = closed_loop(eligible)
    open_loop = eligible.drop(closed.index)
    if closed.empty:
        notes.append(
            "No closed-loop trial qualified: throughput is ranked over closed-loop trials only "
            "(an open loop's throughput is the rate it was offered). Open-loop trials are "
            "judged by latency at their rate."
        )
        best = None
    else:
        best = _pick("throughput", closed)
    if not open_loop.empty and slo_p99_ms is not None:
        notes += _open_loop_note(open_loop, slo_p99_ms)

    latency: Pick | None = None
    if slo_p99_ms is None:
        notes.append(
            "No latency objective: set settings.slo_p99_ms in the sweep or pass --slo-p99-ms "
            "to get the best configuration under a p99 limit."
        )
    else:
        meeting = within_slo(closed, slo_p99_ms)
        if meeting.empty:
            with_p99 = closed[closed[f"{P99}_mean"].notna()]
            if with_p99.empty:
                notes.append(f"No trial meets p99 ≤ {fmt.value(slo_p99_ms)} ms: no p99 was measured.")
            else:
                low = with_p99.loc[with_p99[f"{P99}_mean"].idxmin()]
                notes.append(
                    f"No trial meets p99 ≤ {fmt.value(slo_p99_ms)} ms. The lowest p99 was "
                    f"{fmt.num(low[f'{P99}_mean'])} ms (trial {low['trial_id']}, "
                    f"{fmt.load_label(low)}); relax the SLO or sweep lower load or smaller "
                    "batch delays."
                )
        else:
            latency = _pick("latency", meeting, slo_p99_ms)
    return Recommendation(slo_p99_ms, slo_source, best, latency, tuple(notes))


def _open_loop_note(open_loop: pd.DataFrame, slo_p99_ms: float) -> list[str]:
    meeting = open_loop[open_loop[f"{P99}_mean"] <= slo_p99_ms]
    if meeting.empty:
        return [f"Open loop: no configuration met p99 ≤ {fmt.value(slo_p99_ms)} ms at any rate measured."]
    rate = meeting["load_rate_rps"].max()
    at_rate = meeting[meeting["load_rate_rps"] == rate].sort_values(f"{P99}_mean", kind="stable")
    best = at_rate.iloc[0]
    params = [c for c in best.index if c.startswith("param_") and open_loop[c].astype(str).nunique() > 1]
    what = ", ".join(f"{fmt.short_name(c)}={fmt.value(best[c])}" for c in params) or f"trial {best['trial_id']}"
    return [
        f"Open loop: at {fmt.value(rate)} req/s, the highest rate at which a configuration met "
        f"p99 ≤ {fmt.value(slo_p99_ms)} ms, {what} had the lowest p99 "
        f"({fmt.num(best[f'{P99}_mean'])} ms, trial {best['trial_id']}, "
        f"{len(at_rate)} configuration(s) met it there)."
    ]


def _pick(objective: str, pool: pd.DataFrame, slo_p99_ms: float | None = None) -> Pick:
    order = ranked(pool)
    winner = order.iloc[0]
    others = order[order["config"] != winner["config"]]
    runner = others.iloc[0] if len(others) else None
    confidence, within_noise = _confidence(winner, runner)
    return _make_pick(objective, winner, runner, confidence, within_noise, _caveats(winner, runner, slo_p99_ms))


def _make_pick(
    objective: str, winner: pd.Series, runner: pd.Series | None, confidence: str, within_noise: bool | None, caveats: list[str]
) -> Pick:
    return Pick(
        objective=objective,
        winner=winner.to_dict(),
        runner_up=None if runner is None else runner.to_dict(),
        confidence=confidence,
        within_noise=within_noise,
        caveats=tuple(caveats),
        config_lines=config_lines(winner),
        env_lines=env_lines(winner),
        api_lines=api_lines(winner),
    )


def _confidence(winner: pd.Series, runner: pd.Series | None) -> tuple[str, bool | None]:
    """The winner against the runner-up on the 95% bootstrap interval of the difference
    (sweeper.analysis.confidence: over windows and repeats)."""
    w_mean = winner[f"{THROUGHPUT}_mean"]
    if runner is None:
        return "Only one configuration qualified, so there is nothing to compare it with.", None
    r_mean = runner[f"{THROUGHPUT}_mean"]
    gap = (w_mean - r_mean) / r_mean * 100 if r_mean else float("inf")
    head = (
        f"It beats the runner-up ({fmt.num(r_mean)} req/s, trial {runner['trial_id']}) "
        f"by {fmt.num(gap)}%."
    )
    c = ci.compare(_samples(winner), _samples(runner))
    if c.verdict == ci.UNKNOWN:
        w_n, r_n = int(winner["n_ok"]), int(runner["n_ok"])
        who = "both" if w_n < 2 and r_n < 2 else ("the winner" if w_n < 2 else "the runner-up")
        return (
            f"{head} One repeat only for {who} and no stability windows: the spread is unknown, "
            "so this difference may be noise. Run 3 or more repeats to know.",
            None,
        )
    rel = c.relative
    interval = (
        f"difference {fmt.num(c.diff.estimate)} req/s, 95% CI {fmt.num(c.diff.lo)} to "
        f"{fmt.num(c.diff.hi)} req/s, {_pct(rel.lo)} to {_pct(rel.hi)}"
    )
    basis = f"bootstrap over windows and repeats, {c.diff.repeats} or more repeats each"
    if c.verdict == ci.BETTER:
        return f"{head} The winner is {ci.BETTER} ({interval}; {basis}).", False
    return f"{head} The two are {ci.NOT_DISTINGUISHABLE} ({interval}; {basis}). {c.advice}", True


def _samples(row: pd.Series) -> list:
    samples = row.get(f"{THROUGHPUT}_samples")
    if isinstance(samples, list) and samples:
        return samples
    # a table without samples (built by hand): the repeat means are all there is
    v = row.get(f"{THROUGHPUT}_mean")
    return [] if fmt.is_missing(v) else [[float(v)]]


def _pct(v: float) -> str:
    return f"{v * 100:+.1f}%"


# The winner's repeats ran on CPUs this much faster (host_speed, sweeper.hostspeed) than the
# runner-up's: a caveat. The probe moves by several percent with nothing changing, but a
# host that speeds up by a third mid-run can make a winner "better, with 95% confidence"
# by a margin that mostly goes once divided by the speed
# (docs/measurements.md#code-recommend-host-speed).
SPEED_NOTE_PCT = 10.0


def _speed_gap_pct(winner: pd.Series, runner: pd.Series | None) -> float | None:
    """How much faster (%) the host's CPUs ran during the winner's repeats than during the
    runner-up's; None when either has no host_speed."""
    if runner is None:
        return None
    w, r = winner.get("host_speed_mean"), runner.get("host_speed_mean")
    if fmt.is_missing(w) or fmt.is_missing(r) or r <= 0:
        return None
    return (float(w) / float(r) - 1.0) * 100.0


def _caveats(winner: pd.Series, runner: pd.Series | None, slo_p99_ms: float | None, duelled: bool = False) -> list[str]:
    """`duelled`: the two were measured head to head (sweeper duel), so a drift of the
    machine fell on both alike and the host-speed caveat does not apply."""
    out = []
    if bool(winner.get("client_bound", False)):
        reason = winner.get("client_bound_reason") or "the load client set the pace"
        out.append(
            f"The winner was client-bound ({reason}): the server may do more than measured, "
            "and the ranking near the top may be the client's, not the server's."
        )
    if bool(winner.get("client_unstable", False)):
        out.append(
            "The winner was unstable: its windows never agreed within settings.stability.max_cv, "
            "so its figures may move on a rerun."
        )
    stolen = [
        (who, row.get("host_steal_pct_max"))
        for who, row in (("winner", winner), ("runner-up", runner))
        if row is not None and not fmt.is_missing(row.get("host_steal_pct_max")) and row.get("host_steal_pct_max") > STEAL_NOTE_PCT
    ]
    if stolen:
        said = " and ".join(f"the {who}'s ({pct:.0f}%)" for who, pct in stolen)
        out.append(
            f"Another guest of this machine's host took CPU (steal above {STEAL_NOTE_PCT:g}%) during a repeat of "
            f"{said}: part of the difference may be the host's, not the configuration's."
        )
    faster = None if duelled else _speed_gap_pct(winner, runner)
    if faster is not None and faster > SPEED_NOTE_PCT:
        out.append(
            f"The host's CPUs ran {faster:.0f}% faster during the winner's repeats than during the runner-up's "
            "(host_speed, mean over repeats): part of the difference may be the machine's, not the configuration's, "
            "and the interval above does not know it. Rerun both, or add repeats."
        )
    if runner is not None and bool(runner.get("client_bound", False)):
        out.append("The runner-up was client-bound: its throughput is a lower bound.")
    if slo_p99_ms is not None:
        worst = winner.get(f"{P99}_max")
        if not fmt.is_missing(worst) and worst > slo_p99_ms:
            out.append(
                f"Its mean p99 meets the SLO but its worst repeat ({fmt.num(worst)} ms) does not."
            )
    return out


def with_duel(pick: Pick, confidence: str, within_noise: bool, swap: bool, slo_p99_ms: float | None) -> Pick:
    """The pick as a head-to-head duel (sweeper duel, report/duel.py) decided it: its
    confidence sentence and within_noise from the duel's verdict, without the host-speed
    caveat; with `swap` the runner-up, which the duel found better, becomes the winner."""
    if pick.runner_up is None:
        return pick
    winner, runner = pd.Series(pick.winner), pd.Series(pick.runner_up)
    if swap:
        winner, runner = runner, winner
    return _make_pick(pick.objective, winner, runner, confidence, within_noise, _caveats(winner, runner, slo_p99_ms, duelled=True))


def config_lines(row: pd.Series) -> tuple[str, ...]:
    """config.properties lines of the server-level parameters (need a restart)."""
    return tuple(
        f"{name[len('param_server_'):]}={fmt.value(row[name])}"
        for name in row.index
        if name.startswith("param_server_") and not fmt.is_missing(row[name])
    )


def env_lines(row: pd.Series) -> tuple[str, ...]:
    """Environment of the server (the workers inherit it; needs a restart)."""
    return tuple(
        f"{name[len('param_env_'):]}={fmt.value(row[name])}"
        for name in row.index
        if name.startswith("param_env_") and not fmt.is_missing(row[name])
    )


def api_lines(row: pd.Series) -> tuple[str, ...]:
    """Management API calls that apply the per-model settings on a running server."""
    model = fmt.value(row.get("param_model_name")) or "model"
    query = [f"url={quote(model)}.mar"]
    for column, key in (
        ("param_model_batch_size", "batch_size"),
        ("param_model_max_batch_delay_ms", "max_batch_delay"),
        ("param_model_min_workers", "initial_workers"),
        ("param_model_response_timeout_s", "response_timeout"),
    ):
        v = row.get(column)
        if not fmt.is_missing(v):
            query.append(f"{key}={quote(fmt.value(v))}")
    query.append("synchronous=true")
    lines = [
        "# needs enable_model_api=true; with token authorization on (the default) add",
        '#   -H "Authorization: Bearer <management key from key_file.json>"',
        f'curl -X DELETE "{MANAGEMENT_URL}/models/{quote(model)}"   # if already registered',
        f'curl -X POST "{MANAGEMENT_URL}/models?{"&".join(query)}"',
    ]
    lo, hi = row.get("param_model_min_workers"), row.get("param_model_max_workers")
    if not fmt.is_missing(hi) and fmt.value(lo) != fmt.value(hi):
        lo_part = f"min_worker={fmt.value(lo)}&" if not fmt.is_missing(lo) else ""
        lines.append(
            f'curl -X PUT "{MANAGEMENT_URL}/models/{quote(model)}?{lo_part}'
            f'max_worker={fmt.value(hi)}&synchronous=true"'
        )
    return tuple(lines)
