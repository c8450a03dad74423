"""Does the first trial on a freshly started server read like a later repeat of the same
configuration? And the first trial after its workers were scaled in place?

    python benchmarks/first_trial_bias.py RUN_DIR [RUN_DIR ...]

For a run with settings.repeats 2 in interleaved order (benchmarks/first_trial_bias.yaml:
`sweeper run benchmarks/first_trial_bias.yaml`), each configuration ran once per pass. A
pass reverses the groups and the model settings of the one before, so for most server
groups a different configuration is the first on a fresh server in each pass: one repeat
of it got the server warm-up (server_warmup_s > 0) and the other did not.

Printed, per kind of repeat (the first on a fresh server; the first after a scaling of
workers, server_scaled = 1; the first on a new registration, server_registered = 1), the
closed-loop throughput of that repeat divided by the other repeat of the same
configuration (which was not of that kind; its own kind is shown): each configuration's ratio, their median and
quartiles, and the same divided by each repeat's host CPU speed (host_speed), which takes
out a drift of the machine between the two passes.

A drift between the passes falls on the ratios of the two passes in opposite directions:
where the marked repeat ran in the first pass, a machine that sped up in the second makes
the ratio read low; where it ran in the second, high. So each kind also gets its median
per pass of the marked repeat, and the geometric mean of those two medians, in which a
drift between the passes (the same factor on every configuration) cancels.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import pandas as pd

FIGURE = "client_throughput_rps"
KINDS = (
    ("first on a fresh server", lambda r: (r.get("server_warmup_s") or 0) > 0),
    ("first after scaling workers", lambda r: r.get("server_scaled") == 1),
    ("first on a new registration", lambda r: r.get("server_registered") == 1 and not (r.get("server_warmup_s") or 0) > 0),
)


def _kind(row: dict) -> str:
    return next((name for name, test in KINDS if test(row)), "none of these")


def ratios(df: pd.DataFrame) -> dict[str, list[tuple[str, float, float, str, int]]]:
    """Per kind: (trial id, raw ratio, ratio divided by host speed, the other repeat's
    kind, the marked repeat's pass) of each configuration with exactly one repeat of that
    kind."""
    out: dict[str, list[tuple[str, float, float, str, int]]] = {name: [] for name, _ in KINDS}
    ok = df[(df["status"] == "ok") & (df["load_mode"] == "closed")]
    for tid, rows in ok.groupby("trial_id"):
        records = rows.to_dict("records")
        if len(records) != 2:
            continue
        for name, test in KINDS:
            marked = [r for r in records if test(r)]
            other = [r for r in records if not test(r)]
            if len(marked) == 1 and len(other) == 1:
                a, b = marked[0], other[0]
                raw = a[FIGURE] / b[FIGURE]
                speed = (a.get("host_speed") or float("nan")) / (b.get("host_speed") or float("nan"))
                adjusted = raw / speed if speed == speed and speed > 0 else float("nan")
                out[name].append((str(tid), raw, adjusted, _kind(b), int(a.get("repeat", 0))))
    return out


def _quartiles(values: list[float]) -> str:
    values = sorted(v for v in values if v == v)
    if not values:
        return "none"
    if len(values) < 4:
        return f"median {statistics.median(values):.3f} (n={len(values)}: {', '.join(f'{v:.3f}' for v in values)})"
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"median {q2:.3f}, quartiles {q1:.3f}-{q3:.3f} (n={len(values)})"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    frames = []
    for arg in argv:
        csv = Path(arg) / "results.csv"
        if not csv.is_file():
            print(f"{csv}: not found", file=sys.stderr)
            return 2
        frames.append(pd.read_csv(csv))
    found = ratios(pd.concat(frames, ignore_index=True))
    for name, rows in found.items():
        print(f"{name}: this repeat / the other repeat of the same configuration")
        for tid, raw, norm, other, rep in rows:
            print(f"  {tid}  {raw:.3f}  (host-speed adjusted {norm:.3f}; pass {rep + 1}; the other repeat: {other})")
        print(f"  raw: {_quartiles([r[1] for r in rows])}")
        print(f"  host-speed adjusted: {_quartiles([r[2] for r in rows])}")
        print(f"  drift between the passes cancelled: {_across_passes(rows)}")
    return 0


def _across_passes(rows: list[tuple[str, float, float, str, int]]) -> str:
    """The median raw ratio where the marked repeat ran in each pass, and their geometric
    mean (a drift between the passes divides one median and multiplies the other)."""
    by_pass = {rep: [r[1] for r in rows if r[4] == rep] for rep in sorted({r[4] for r in rows})}
    if len(by_pass) != 2 or not all(by_pass.values()):
        return "needs configurations marked in each of two passes"
    medians = {rep: statistics.median(values) for rep, values in by_pass.items()}
    parts = ", ".join(f"pass {rep + 1} median {m:.3f} (n={len(by_pass[rep])})" for rep, m in medians.items())
    return f"{parts}; geometric mean {math.sqrt(math.prod(medians.values())):.3f}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
