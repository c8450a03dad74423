"""The report's head-to-head section: duel.json read from the run directory (`sweeper duel`
writes it; the report only reads what it left), and the recommendation decided by its
verdict.

When the duel measured the two of a pick (its winner and runner-up, in either order), that
pick's confidence sentence becomes the duel's verdict, the sweep's unpaired comparison
stays beside it, and the host-speed caveat goes (a drift fell on both alike). When the
duel found the runner-up better, the runner-up becomes the pick's winner.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

from sweeper.analysis.paired import A_BETTER, B_BETTER, NOT_DISTINGUISHABLE
from sweeper.defaults import MAX_DUEL_BLOCKS_S
from sweeper.report.recommend import Pick, Recommendation, with_duel
from sweeper.rundir import RunDir

FIGURE_WORDS = {"throughput": "throughput", "latency_mean": "mean latency"}


def read(run_dir: Path) -> dict | None:
    """duel.json of a run, or None (missing, unreadable, or without the keys it must have)."""
    try:
        data = json.loads(RunDir(run_dir).duel_json.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("configs"), list) or len(data["configs"]) != 2:
        return None
    if data.get("verdict") not in (A_BETTER, B_BETTER, NOT_DISTINGUISHABLE):
        return None
    return data


def _ratio(v) -> str:
    return "n/a" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.3f}"


def _pct(v) -> str:
    return "n/a" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{(v - 1.0) * 100:+.1f}%"


def interval_text(duel: dict) -> str:
    """'A/B throughput 1.042 (95% CI 1.018-1.066, +1.8% to +6.6%)'."""
    figure = FIGURE_WORDS.get(str(duel.get("figure")), str(duel.get("figure")))
    lo, hi = duel.get("ci_low"), duel.get("ci_high")
    return (f"A/B {figure} {_ratio(duel.get('ratio'))} (95% CI {_ratio(lo)}–{_ratio(hi)}, "
            f"{_pct(lo)} to {_pct(hi)})")


def budget_text(duel: dict) -> str:
    return (f"{duel.get('blocks')} blocks of {duel.get('block_s', 0):g} s, interleaved in ABBA/BAAB quads on one host "
            f"({duel.get('pairs')} pairs)")


def longer_text(duel: dict) -> str:
    """How much longer to measure: 'measure longer (sweeper duel --blocks 124, about 2 min:
    at the spread these pairs had, a difference of the size seen, 2.0%, is separated 4
    times in 5 with that many)'; past what one duel may last, that it would take longer."""
    need, ratio = duel.get("blocks_to_separate"), duel.get("ratio")
    if not isinstance(need, int) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
        return "measure longer (sweeper duel --blocks)"
    size = f"a difference of the size seen, {abs(ratio - 1.0) * 100:.1f}%,"
    block_s = duel.get("block_s")
    if isinstance(block_s, (int, float)) and block_s > 0:
        if need * block_s > MAX_DUEL_BLOCKS_S:
            return (f"at the spread these pairs had, {size} would need about {need:,} blocks "
                    f"({need * block_s / 3600:.1f} h), more than one duel measures ({MAX_DUEL_BLOCKS_S / 60:.0f} min)")
        took = f", about {need * block_s / 60:.0f} min" if need * block_s >= 90 else ""
    else:
        took = ""
    return (f"measure longer (sweeper duel --blocks {need}{took}: at the spread these pairs had, {size} is separated "
            f"4 times in 5 with that many)")


def summary(duel: dict) -> str:
    """One paragraph for the report's section."""
    a, b = duel["configs"]
    verdict = duel["verdict"]
    said = {A_BETTER: f"{A_BETTER} (trial {a})", B_BETTER: f"{B_BETTER} (trial {b})",
            NOT_DISTINGUISHABLE: f"{NOT_DISTINGUISHABLE}: {longer_text(duel)} or treat them as equal"}[verdict]
    text = (f"Head to head: trial {a} (A) against trial {b} (B), {duel.get('chosen', '')}, measured in "
            f"{budget_text(duel)}: {interval_text(duel)}; verdict: {said}.")
    note = duel.get("note")
    if note:
        text += f" {note}."
    speed = duel.get("host_speed")
    if isinstance(speed, dict) and all(isinstance(speed.get(k), (int, float)) for k in ("low", "high", "a_over_b")):
        text += (f" Meanwhile the host's CPU speed ranged {speed['low']:.2f}-{speed['high']:.2f}x of its median "
                 f"(5th-95th percentile), and A's blocks ran at {speed['a_over_b']:.2f}x the speed of B's.")
    un = duel.get("unpaired") or {}
    if isinstance(un.get("ratio"), (int, float)):
        text += f" The sweep's repeats alone (unpaired) read A/B {_ratio(un['ratio'])}"
        if isinstance(un.get("ci_low"), (int, float)) and isinstance(un.get("ci_high"), (int, float)):
            text += f" (95% CI {_ratio(un['ci_low'])}–{_ratio(un['ci_high'])})"
        text += "."
    return text


def rows(duel: dict) -> list[dict]:
    """The section's table: per configuration, what the duel and the sweep measured."""
    figure = FIGURE_WORDS.get(str(duel.get("figure")), str(duel.get("figure")))
    unit = "req/s" if duel.get("figure") == "throughput" else "ms"
    un = duel.get("unpaired") or {}
    out = []
    for i, side in enumerate(("a", "b")):
        got = duel.get(side) or {}
        out.append({
            "label": "AB"[i],
            "trial_id": duel["configs"][i],
            "duel": got.get("figure_mean"),
            "sweep": un.get(f"{side}_mean"),
            "p99_ms": got.get("latency_p99_ms"),
            "requests": got.get("requests"),
            "figure": f"{figure} ({unit})",
        })
    return out


def section(duel: dict | None) -> dict | None:
    """What the templates show, or None without a duel."""
    if duel is None:
        return None
    how = str(duel.get("layout") or "")
    wall = duel.get("wall_s")
    if isinstance(wall, (int, float)) and math.isfinite(wall):
        how += f"{'; ' if how else ''}the duel took {wall:.0f} s, warm-ups included"
    return {"summary": summary(duel), "rows": rows(duel), "verdict": duel["verdict"], "how": how[:1].upper() + how[1:]}


def apply(rec: Recommendation, duel: dict | None) -> Recommendation:
    """The recommendation with the duel's verdict on the pick whose two it measured."""
    if duel is None:
        return rec
    changes = {}
    for name in ("latency", "throughput"):
        pick = getattr(rec, name)
        decided = _decided(pick, duel, rec.slo_p99_ms)
        if decided is not None:
            changes[name] = decided
    return replace(rec, **changes) if changes else rec


def _decided(pick: Pick | None, duel: dict, slo_p99_ms: float | None) -> Pick | None:
    if pick is None or pick.runner_up is None:
        return None
    a, b = (str(c) for c in duel["configs"])
    winner, runner = str(pick.winner.get("trial_id")), str(pick.runner_up.get("trial_id"))
    if {a, b} != {winner, runner} or a == b:
        return None
    verdict = duel["verdict"]
    better = {A_BETTER: a, B_BETTER: b}.get(verdict)  # the trial the duel found better, if any
    swap = better == runner
    first, second = (runner, winner) if swap else (winner, runner)
    if better is None:
        said = f"the two are {NOT_DISTINGUISHABLE} head to head"
    elif swap:
        said = (f"head to head the runner-up of the sweep's ranking, trial {first}, is better than trial {second}: "
                "it is the pick")
    else:
        said = f"head to head trial {first} is better than trial {second}"
    confidence = (
        f"Decided by the duel (sweeper duel: {budget_text(duel)}): {interval_text(duel)} with A = trial {a}; "
        f"{said}. From the sweep's repeats alone (unpaired, which a drift of the machine can fool): {pick.confidence}"
    )
    return with_duel(pick, confidence, better is None, swap, slo_p99_ms)
