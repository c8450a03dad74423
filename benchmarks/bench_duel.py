"""Does a duel survive a drifting machine? Paired (sweeper duel) against unpaired comparisons
of two configurations under a switched drift, judged against a quiet reference.

    python benchmarks/bench_duel.py                      # a pair that differs (about 17 min)
    python benchmarks/bench_duel.py --same               # one configuration twice (about 13 min)
    python benchmarks/bench_duel.py --smoke              # tiny durations: the plumbing (about 2 min)
    python benchmarks/bench_duel.py --simulate           # the statistics alone, no server (seconds)
    python benchmarks/bench_duel.py --engine-cost        # the alternating engine's CPU per request

A pair (default: benchmarks/duel_pair.yaml, the batching sweep's MLP at batch 8 / 5 ms,
closed loop at 32 in flight, with 2 workers against 3: 2.3% apart on a 2-core VM; --sweep,
--a and --b name others, e.g. --b min_workers=4, 10-11% apart) runs on one TorchServe as
two registrations, started and warmed up as `sweeper duel` does. Then:

1. the quiet reference: one long duel (--quiet-blocks, 240 one-second blocks) with nothing
   else running: its ratio A/B is the pair's quiet ratio;
2. under the drift (--drift-on-s 20 s on and --drift-off-s 20 s off; --drift quota, the
   default: the server frozen for 40% of every 100 ms as a CPU quota or a hypervisor's
   steal does, sweeper.drift.Throttle; --drift burner: a CPU burner on one core,
   sweeper.drift.Drift), --duels rounds of: a duel of the default budget (56 blocks),
   and an unpaired comparison as a sweep makes it: A measured, then B, each with the
   sweep's warm-up and stability windows, judged by the bootstrap interval over windows
   (sweeper.analysis.confidence, what the recommendation uses without a duel).

Each line says the interval and whether it covers the quiet ratio (--save FILE keeps every
block's figure as JSON). The LAST line is

    duel: interval covered the quiet ratio in N of 10 duels (unpaired: M of 10)

With --same (A and B the same configuration, two registrations) the last line counts the
duels that said "not distinguishable at this budget" instead:

    same: N of 10 duels said not distinguishable (unpaired: M of 10)

Run it on a quiet machine (nothing else measuring): the quiet reference is only quiet if the
machine is. The goals: N >= 9 and M < N; a pair that differs by 3% or more separated within
60 s of blocks; the same configuration "not distinguishable" in 9 of 10 duels or more.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from sweeper.analysis import paired  # noqa: E402

# t quantiles at 0.975 for the simulation's t-interval (df 1..30; beyond: the normal's)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def say(line: str) -> None:
    print(line, flush=True)


# --- the statistics alone ---------------------------------------------------------------------


def simulate(args) -> int:
    """Coverage and power of the duel's interval (Hodges-Lehmann / signed rank over pairs)
    against a t-interval over quads, for blocks under a 20 s on / 20 s off drift (the machine
    at 60% while on) with lognormal block noise: what docs/duel.md and
    sweeper.analysis.paired cite."""
    rng = np.random.default_rng(args.seed)
    block_s, settle_s, blocks = 1.0, 0.2, 56
    say(f"{args.trials} simulated duels each: {blocks} blocks of {block_s:g} s ({settle_s:g} s settle), "
        f"a 20 s on / 20 s off drift at 0.6x, block noise as given")
    say("| block noise | true ratio | method | covered | separated |")
    say("| ---: | ---: | --- | ---: | ---: |")
    # 7%: a block's own noise on the 2-core VM, its slow part taken out by the pairs
    # (docs/measurements.md#m71-how-noisy-a-duels-blocks-are-on-the-2-core-vm-quiet-and-under-a-cpu-quota)
    for noise in (0.02, 0.04, 0.07):
        for true in (1.0, 1.03):
            counts = {"signed rank, pairs": [0, 0], "t, quads": [0, 0]}
            for _ in range(args.trials):
                order = paired.schedule(blocks // 4 + 1, int(rng.integers(1 << 30)))
                phase = rng.uniform(0, 40.0)
                values = []
                for b, target in enumerate(order):
                    ts = np.linspace(b * block_s + settle_s, (b + 1) * block_s, 50, endpoint=False)
                    speed = float(np.mean(np.where(((ts + phase) // 20.0) % 2 == 0, 0.6, 1.0)))
                    values.append((true if target == paired.A else 1.0) * speed * math.exp(noise * rng.standard_normal()))
                values, order = values[4:], order[4:]
                got = paired.paired_ratio(values, order)
                counts["signed rank, pairs"][0] += got.ci_low <= true <= got.ci_high
                counts["signed rank, pairs"][1] += got.verdict == paired.A_BETTER
                lo, hi = _t_quads(values, order)
                counts["t, quads"][0] += lo <= true <= hi
                counts["t, quads"][1] += lo > 1.0
            for method, (covered, separated) in counts.items():
                say(f"| {noise:.0%} | {true:g} | {method} | {covered / args.trials:.1%} | {separated / args.trials:.1%} |")
    return 0


def _t_quads(values, order) -> tuple[float, float]:
    v, o = np.asarray(values).reshape(-1, 4), np.asarray(order).reshape(-1, 4)
    a = np.where(o == paired.A, v, 0).sum(1) / 2
    b = np.where(o == paired.B, v, 0).sum(1) / 2
    d = np.log(a) - np.log(b)
    n = len(d)
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * d.std(ddof=1) / math.sqrt(n)
    return math.exp(d.mean() - half), math.exp(d.mean() + half)


# --- the engine's cost ---------------------------------------------------------------------


def engine_cost(args) -> int:
    """Engine CPU per request, plain closed loop against the alternating one (two fake
    servers, 1 s blocks), alternately, against the tests' fake server in this process."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fakeserver import FakeServer

    from sweeper.load import LoadProfile, Target, run_load
    from sweeper.load.alternating import run_alternating

    profile = LoadProfile("closed", concurrency=16, duration_s=args.cost_s)
    blocks = int(args.cost_s)
    say(f"engine CPU per request, closed loop at 16 in flight for {args.cost_s:g} s, one engine process, "
        "fake servers answering at once")
    say("| engine | repeat | requests | CPU us / request |")
    say("| --- | ---: | ---: | ---: |")
    with FakeServer() as a, FakeServer() as b:
        ta, tb = Target(a.url("/p"), b"x" * 100), Target(b.url("/p"), b"x" * 100)
        run_load(ta, LoadProfile("closed", concurrency=16, duration_s=1.0))
        per: dict[str, list[float]] = {"plain": [], "alternating": []}
        for r in range(args.cost_repeats):
            for kind in ("plain", "alternating") if r % 2 == 0 else ("alternating", "plain"):
                if kind == "plain":
                    run = run_load(ta, profile)
                else:
                    run = run_alternating((ta, tb), profile, 1.0, paired.schedule(max(1, blocks // 4), r))
                us = 1e6 * run.client_cpu_s / max(1, len(run.records))
                per[kind].append(us)
                say(f"| {kind} | {r + 1} | {len(run.records):,} | {us:.1f} |")
    plain, alt = float(np.median(per["plain"])), float(np.median(per["alternating"]))
    say(f"median CPU per request: plain {plain:.1f} us, alternating {alt:.1f} us ({(alt / plain - 1) * 100:+.1f}%)")
    return 0


# --- the pair on TorchServe -------------------------------------------------------------------


def _params(text: str) -> dict[str, int]:
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        out[key.strip()] = int(value)
    return out


def _trial(spec, wanted: dict[str, int]):
    from sweeper.plan import expand

    for t in expand(spec):
        if t.repeat or t.load.mode != "closed":
            continue
        model = t.model.__dict__
        if all(model.get(k) == v for k, v in wanted.items()):
            return t
    raise SystemExit(f"bench_duel: no closed-loop trial of the sweep has {wanted}")


def _unpaired(targets, load, settings, quiet_ratio: float) -> dict:
    """A then B as a sweep measures them (warm-up, stability windows); the bootstrap
    interval of the ratio of their window throughputs."""
    from sweeper.analysis import confidence as ci
    from sweeper.load import run_load
    from sweeper.load import windows as load_windows
    from sweeper.measure import stability_rule
    from sweeper.warmup import warmup_profile

    rule = stability_rule(settings)
    windows = []
    for target in targets:
        warm = warmup_profile(load, settings.warmup_s) if settings.warmup_s > 0 else None
        run = run_load(target, load, warmup=warm, stability=rule)
        outcome = run.windows or load_windows.posthoc(run)
        used = [w.rps for w in load_windows.cut(run.records, outcome.window_s, outcome.end_s)
                if outcome.first <= w.index <= outcome.last]
        windows.append(used)
    c = ci.compare([windows[0]], [windows[1]])
    ratio = float(np.mean(windows[0]) / np.mean(windows[1]))
    lo, hi = 1.0 + c.relative.lo, 1.0 + c.relative.hi
    return {"ratio": ratio, "lo": lo, "hi": hi, "covered": lo <= quiet_ratio <= hi,
            "separated": c.verdict == ci.BETTER or (hi < 1.0)}


def pair(args) -> int:
    from sweeper import duel as d
    from sweeper.archive import ensure_archives
    from sweeper.drift import Drift, Throttle
    from sweeper.load import run_load
    from sweeper.payload import builtin_request_set, example_body
    from sweeper.preflight import DEFAULT_MODEL_STORE
    from sweeper.rundir import RunDir
    from sweeper.sweepfile import load_sweep, resolve_sweep_path

    spec = load_sweep(resolve_sweep_path(args.sweep, ROOT / "sweeps"))
    settings = spec.settings
    if args.smoke:
        settings = settings.model_copy(update={"server_warmup_s": 0.0, "server_warmup_max_s": 0.0,
                                               "registration_warmup_s": 0.0, "registration_warmup_max_s": 0.0})
    spec = spec.model_copy(update={"settings": settings})
    a = _trial(spec, _params(args.a))
    b = a if args.same else _trial(spec, _params(args.b))
    load = a.load
    store = DEFAULT_MODEL_STORE
    ensure_archives(store, [a.model.name])
    requests = builtin_request_set(example_body(a.model.name))
    choice = d.Choice(spec, a, b, "bench_duel", None, {})
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-duel-"))
    run = RunDir(out)
    say(f"pair: A {d._describe(a)}, B {d._describe(b)}{' (the same configuration)' if args.same else ''}; "
        f"load {d._load_text(load)}; servers' logs under {out}")
    started = time.monotonic()
    # the keys must last the whole run (TorchServe's expire after 60 minutes)
    expected_s = (args.quiet_blocks + args.duels * (args.blocks + 4 + 30)) * args.block_s + 300
    if expected_s > 3300:
        raise SystemExit(f"bench_duel: about {expected_s / 60:.0f} min of load, longer than a TorchServe key lasts (60 min)")
    valid_s = expected_s
    rows = []
    saved: dict = {"args": vars(args), "rounds": []}
    with d.arena(choice, run, (store, None, (requests, requests)), load, valid_s, say) as ready:
        say(f"  ready after {time.monotonic() - started:.0f} s ({ready.layout})")
        # each one's p99 alone sets the blocks' settle (as a duel takes it from the sweep)
        p99 = []
        for target in ready.targets:
            rec = run_load(target, replace(load, duration_s=args.probe_s, requests=None)).records
            ok = (rec["status"] >= 200) & (rec["status"] < 300)
            if not ok.any():
                codes, counts = np.unique(rec["status"], return_counts=True)
                raise SystemExit(f"bench_duel: {target.url} served nothing (status: count {dict(zip(codes.tolist(), counts.tolist()))})")
            p99.append(float(np.percentile((rec["end_s"] - rec["scheduled_s"])[ok], 99)) * 1000.0)
        block_s, settle_s = d.timing(args.block_s, max(p99))
        say(f"  p99 alone: A {p99[0]:.1f} ms, B {p99[1]:.1f} ms; blocks of {block_s:g} s, {settle_s:g} s settle")

        quiet = None
        if not args.same:
            got = d.measure_blocks(ready.targets, load, d.Blocks(args.quiet_blocks, block_s, settle_s, seed=10_000))
            quiet = got["ratio"]
            say(f"quiet reference: {args.quiet_blocks} blocks, A/B {quiet:.4f} (95% CI {got['ci_low']:.4f}-"
                f"{got['ci_high']:.4f}), {got['verdict']}")
            saved["quiet"] = got
        reference = 1.0 if args.same else quiet

        if args.drift == "burner":
            drift = Drift(on_s=args.drift_on_s, off_s=args.drift_off_s, cpus=(args.drift_cpu,))
        else:
            drift = Throttle(ready.groups, on_s=args.drift_on_s, off_s=args.drift_off_s, share=args.drift_share)
        say(f"drift: {drift.describe()}")
        with drift:
            for i in range(args.duels):
                t0 = time.monotonic()
                got = d.measure_blocks(ready.targets, load, d.Blocks(args.blocks, block_s, settle_s, seed=i))
                took = time.monotonic() - t0
                covered = got["ci_low"] <= reference <= got["ci_high"]
                un = _unpaired(ready.targets, load, settings, reference)
                rows.append((got, covered, un, took))
                saved["rounds"].append({"duel": got, "unpaired": un, "duel_s": took})
                if args.save:
                    Path(args.save).write_text(json.dumps(saved, indent=1, default=str))
                speed = got.get("host_speed") or {}
                moved = f", host speed {speed['low']:.2f}-{speed['high']:.2f}x" if speed else ""
                say(f"  round {i + 1}: duel A/B {got['ratio']:.4f} [{got['ci_low']:.4f}, {got['ci_high']:.4f}] "
                    f"{got['verdict']}, covered {'yes' if covered else 'no'} ({took:.0f} s, {got['blocks']} blocks{moved}); "
                    f"unpaired {un['ratio']:.4f} [{un['lo']:.4f}, {un['hi']:.4f}], covered {'yes' if un['covered'] else 'no'}")
    duels = len(rows)
    covered = sum(r[1] for r in rows)
    unpaired_covered = sum(r[2]["covered"] for r in rows)
    say(f"total {time.monotonic() - started:.0f} s; each duel's blocks {args.blocks} x {block_s:g} s = "
        f"{args.blocks * block_s:g} s (+ {paired.LEAD_IN_QUADS * paired.QUAD} lead-in blocks)")
    if args.same:
        said = sum(r[0]["verdict"] == paired.NOT_DISTINGUISHABLE for r in rows)
        unpaired_said = sum(not r[2]["separated"] for r in rows)
        say(f"same: {said} of {duels} duels said not distinguishable (unpaired: {unpaired_said} of {duels})")
        return 0
    direction = paired.A_BETTER if quiet > 1 else paired.B_BETTER
    separated = sum(r[0]["verdict"] == direction for r in rows)
    took = [r[3] for r in rows]
    say(f"separated in the quiet direction ({direction}): {separated} of {duels} duels, each duel "
        f"{min(took):.0f}-{max(took):.0f} s of blocks; quiet ratio {quiet:.4f} ({abs(quiet - 1) * 100:.1f}% apart)")
    say(f"duel: interval covered the quiet ratio in {covered} of {duels} duels (unpaired: {unpaired_covered} of {duels})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default=str(Path(__file__).parent / "duel_pair.yaml"),
                        help="the sweep whose model, load and settings to use")
    parser.add_argument("--a", default="min_workers=2", help="A's per-model settings")
    parser.add_argument("--b", default="min_workers=3", help="B's per-model settings")
    parser.add_argument("--same", action="store_true", help="B is A's configuration (a second registration)")
    parser.add_argument("--duels", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=56, help="measured blocks of each duel under the drift")
    parser.add_argument("--block-s", type=float, default=1.0)
    parser.add_argument("--quiet-blocks", type=int, default=240, help="blocks of the quiet reference")
    parser.add_argument("--probe-s", type=float, default=3.0, help="each one alone, for its p99 (the settle)")
    parser.add_argument("--drift-on-s", type=float, default=20.0)
    parser.add_argument("--drift-off-s", type=float, default=20.0)
    parser.add_argument("--drift", choices=("quota", "burner"), default="quota",
                        help="quota: the server frozen for a share of every 100 ms (sweeper.drift.Throttle); "
                             "burner: a CPU burner on one core (sweeper.drift.Drift)")
    parser.add_argument("--drift-share", type=float, default=0.6, help="quota: the share of each 100 ms the server runs")
    parser.add_argument("--drift-cpu", type=int, default=0, help="burner: its core")
    parser.add_argument("--save", help="write the quiet reference's and every round's figures (blocks included) "
                                       "to this JSON file")
    parser.add_argument("--out", help="directory for the servers' logs (default: a new temporary one)")
    parser.add_argument("--smoke", action="store_true", help="tiny durations and no server warm-up: the plumbing only")
    parser.add_argument("--simulate", action="store_true", help="the statistics alone, no server")
    parser.add_argument("--trials", type=int, default=2000, help="--simulate: duels per case")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engine-cost", action="store_true", help="the alternating engine's CPU per request")
    parser.add_argument("--cost-s", type=float, default=8.0)
    parser.add_argument("--cost-repeats", type=int, default=4)
    args = parser.parse_args()
    if args.simulate:
        return simulate(args)
    if args.engine_cost:
        return engine_cost(args)
    if args.smoke:
        args.duels, args.blocks, args.quiet_blocks, args.block_s, args.probe_s = 2, 12, 12, 0.5, 1.0
        args.drift_on_s = args.drift_off_s = 2.0
    if os.getloadavg()[0] > 1.5 and not args.smoke:
        say(f"note: load average {os.getloadavg()[0]:.1f}: the machine is not quiet, the quiet reference will not be")
    return pair(args)


if __name__ == "__main__":
    sys.exit(main())
