"""`sweeper duel RUN_DIR`: the top two configurations of a run measured head to head.

Why: on a virtual machine the CPUs change speed under a sweep, and a drift that happens
to line up with the configurations (both repeats of one on fast minutes) makes the sweep's
bootstrap call a winner "better, with 95% confidence" by a margin that is the machine's
(docs/measurements.md#m56-batching-run-u-a-host-that-sped-up). The duel measures the two in
short alternating blocks, so whatever the machine does falls on both alike.

What it does:

1. Picks two trials: the recommendation's winner and runner-up (sweeper.report.recommend,
   which ranks with sweeper.analysis.objective: the best under the SLO when the sweep has
   one, else the best throughput), or the two given (`--configs A B`).
2. Keeps both alive at once, started and registered by sweeper.serve: one TorchServe with
   two registrations when they differ only per model (A as NAME, B as NAME_duel), two
   TorchServes when they differ at server level (one idle while the other serves; the
   second on free ports). Warmed up as a sweep warms them (sweeper.warmup): the server
   warm-up on each new server, the registration warm-up on B's registration beside A's.
3. Sends A's load profile to both in alternating blocks from the same engine processes, on
   connections to both held warm from the start (sweeper.load.alternating): one quad of
   lead-in, unmeasured, then `blocks` blocks in random ABBA / BAAB quads. The first part of
   each block (the settle: at least SETTLE_MIN_S and twice the larger p99 the sweep
   measured for the two) is not measured.
4. The paired ratio A/B over the blocks (sweeper.analysis.paired): throughput for a closed
   loop, mean latency for an open loop; its 95% interval and the verdict "A better",
   "B better" or "not distinguishable at this budget". Writes duel.json; the report uses
   its verdict for the pick it decides and keeps the sweep's unpaired figures beside it.
"""

from __future__ import annotations

import json
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .analysis import paired
from .defaults import MAX_DUEL_BLOCKS_S
from .errors import Interrupted, RequestsFailed, SpecError
from .rundir import RunDir, write_atomic

SETTLE_MIN_S = 0.2
DUEL_SUFFIX = "_duel"  # B's registration name beside A's on one server
FIGURES = {"throughput": ("rps", True), "latency_mean": ("mean_ms", False)}


@dataclass(frozen=True)
class Choice:
    """The two trials of a duel (sweeper.plan.Trial), why those, and the run's figures."""

    spec: object  # SweepSpec
    a: object
    b: object
    chosen: str  # how they were chosen, in words
    pick: str | None  # the recommendation's pick they decide ("throughput", "latency"), None with --configs
    rows: dict  # trial_id -> aggregated row (sweeper.analysis.aggregate)


@dataclass(frozen=True)
class Blocks:
    """How a duel measures: `blocks` measured blocks of `block_s` seconds after
    `lead_in` unmeasured ones, the first `settle_s` of each not measured."""

    blocks: int
    block_s: float
    settle_s: float
    seed: int = 0
    lead_in: int = paired.LEAD_IN_QUADS * paired.QUAD

    def order(self) -> tuple[int, ...]:
        """Which target each block serves, lead-in included."""
        return paired.schedule(self.lead_in // paired.QUAD + self.blocks // paired.QUAD, self.seed)

    @property
    def duration_s(self) -> float:
        return (self.lead_in + self.blocks) * self.block_s


def timing(block_s: float, p99_ms: float | None) -> tuple[float, float]:
    """(block_s, settle_s): each block's unmeasured start is twice the larger p99 the sweep
    measured for the two (what is still in flight from the other target, and this one's
    queue filling), at least SETTLE_MIN_S; a block is at least twice that."""
    settle = SETTLE_MIN_S
    if p99_ms is not None and math.isfinite(p99_ms):
        settle = round(max(settle, 2.0 * p99_ms / 1000.0), 3)
    return max(block_s, 2.0 * settle), settle


def check_blocks(blocks: int, source: str = "--blocks") -> int:
    """The measured blocks: a multiple of 4 (whole quads), at least 12 (six pairs, the
    fewest that give a 95% signed-rank interval). SpecError otherwise."""
    if not isinstance(blocks, int) or blocks < 12 or blocks % paired.QUAD:
        raise SpecError(source, "", f"must be a multiple of 4 and at least 12 (whole ABBA quads), got {blocks}")
    return blocks


def choose(run_dir: Path, configs: tuple[str, str] | None = None) -> Choice:
    """The two trials to duel. SpecError (exit 2) for a trial id the run does not have, and
    for a run without two eligible configurations."""
    from .analysis.aggregate import aggregate_trials
    from .plan import expand
    from .report.recommend import recommend
    from .report.rundata import read_run
    from .sweepfile import load_sweep

    run = RunDir(run_dir)
    where = str(run.path)
    if not run.results_csv.exists():
        raise SpecError(where, "", f"not a finished run directory (no {run.results_csv.name})")
    spec = load_sweep(run.sweep_yaml)
    if getattr(spec, "target", None) is not None:
        raise SpecError(where, "", "a run on a target (a TorchServe the sweeper did not start): "
                        "the duel starts TorchServes of its own")
    trials = aggregate_trials(read_run(run.path).results, spec.settings.min_success_rate)
    rows = {str(r["trial_id"]): r for r in trials.to_dict("records")}
    objective = spec.search.objective
    if configs:
        for c in configs:
            if c not in rows:
                known = ", ".join(sorted(rows)[:12]) + (" ..." if len(rows) > 12 else "")
                raise SpecError(where, "--configs", f"unknown config id {c!r} (this run's trials: {known})")
        a_id, b_id = configs
        chosen, pick = "given with --configs", None
    else:
        if objective == "capacity":
            raise SpecError(where, "", "a capacity run (search.objective capacity): a duel compares two "
                            "configurations under one load, not their capacities")
        slo = spec.settings.slo_p99_ms
        rec = recommend(trials, slo, "", objective)
        chosen_pick = rec.latency if rec.latency is not None else rec.throughput
        if chosen_pick is None or chosen_pick.runner_up is None:
            why = " ".join(rec.notes) if chosen_pick is None else "only one configuration qualified"
            raise SpecError(where, "", f"no two eligible configurations to duel ({why.rstrip('.')})")
        a_id, b_id = str(chosen_pick.winner["trial_id"]), str(chosen_pick.runner_up["trial_id"])
        pick = "latency" if chosen_pick is rec.latency else "throughput"
        chosen = (
            f"the recommendation's winner and runner-up (best throughput under p99 <= {slo:g} ms)"
            if pick == "latency" else "the recommendation's winner and runner-up (best throughput)"
        )
    plan = {t.trial_id: t for t in expand(spec) if t.repeat == 0}
    for c in (a_id, b_id):
        if c not in plan:
            raise SpecError(where, "", f"trial {c} is not in sweep.yaml's plan (was sweep.yaml edited?)")
        if plan[c].capacity is not None:
            raise SpecError(where, "", f"trial {c} is a capacity search: a duel compares two configurations "
                            "under one load")
    a, b = plan[a_id], plan[b_id]
    if a.load.mode != b.load.mode:
        raise SpecError(where, "", f"trial {a_id} ran under a {a.load.mode} loop and trial {b_id} under an "
                        f"{b.load.mode} loop: a duel compares two configurations under one load")
    return Choice(spec, a, b, chosen, pick, rows)


def figure_of(load) -> str:
    """What a duel compares under `load`: throughput for a closed loop (more is better),
    the mean latency at the rate for an open loop (less is better; a 1 s block's p99 at
    150 req/s is its second slowest request)."""
    return "throughput" if load.mode == "closed" else "latency_mean"


def measure_blocks(targets, load, blocks: Blocks, expect_status: tuple[int, int] = (200, 200),
                   speed_interval_s: float | None = 0.25) -> dict:
    """Run `load` against the two targets in alternating blocks and judge the pairs; with
    `speed_interval_s`, sample the host's CPU speed meanwhile (sweeper.hostspeed), to show
    how far the machine drifted and that it fell on both alike. The engine processes are
    gone when this returns or raises (sweeper.load.launch)."""
    from .hostspeed import SpeedProbe
    from .load.alternating import block_figures, block_index, run_alternating
    from .load.launch import START_DELAY_S

    order = blocks.order()
    figure = figure_of(load)
    key, higher_is_better = FIGURES[figure]
    probe: dict = {}

    def on_ready() -> None:  # the engines are connected; t0 is START_DELAY_S away
        probe["t0"] = time.monotonic() + START_DELAY_S
        if speed_interval_s:
            probe["probe"] = SpeedProbe(speed_interval_s).start()

    started = time.monotonic()
    try:
        run = run_alternating(targets, load, blocks.block_s, order, on_ready=on_ready)
    finally:
        speeds = probe["probe"].stop() if "probe" in probe else []
    load_s = time.monotonic() - started
    windows = block_figures(run, blocks.block_s, len(order), blocks.settle_s)[blocks.lead_in:]
    measured = order[blocks.lead_in:]
    values = [getattr(w, key) for w in windows]
    result = paired.paired_ratio(values, measured, higher_is_better)
    # each target's requests over the measured blocks (settle included): its success rate
    rec = run.records
    k = block_index(rec["scheduled_s"], blocks.block_s, len(order))
    full = np.asarray(order + (-1,))
    target = np.where(k >= blocks.lead_in, full[k], -1)
    side = {}
    for t, name in ((paired.A, "a"), (paired.B, "b")):
        mine = rec[target == t]
        served = (mine["status"] >= 200) & (mine["status"] < 300)
        latency = (mine["end_s"] - mine["scheduled_s"])[served] * 1000.0
        mine_values = [v for v, o in zip(values, measured) if o == t and math.isfinite(v)]
        side[name] = {
            "figure_mean": float(np.mean(mine_values)) if mine_values else math.nan,
            "requests": int(len(mine)),
            "success_rate": float((mine["status"] == expect_status[t]).mean()) if len(mine) else math.nan,
            "latency_mean_ms": float(latency.mean()) if len(latency) else math.nan,
            "latency_p99_ms": float(np.percentile(latency, 99)) if len(latency) else math.nan,
        }
    return {
        "ratio": result.ratio,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "level": result.level,
        "verdict": result.verdict,
        "figure": figure,
        "higher_is_better": higher_is_better,
        "blocks": blocks.blocks,
        "pairs": result.pairs,
        "blocks_to_separate": (paired.blocks_to_separate(result.ratio, result.ci_low, result.ci_high, blocks.blocks)
                               if result.verdict == paired.NOT_DISTINGUISHABLE else None),
        "dropped_pairs": result.dropped,
        "block_s": blocks.block_s,
        "settle_s": blocks.settle_s,
        "lead_in_blocks": blocks.lead_in,
        "seed": blocks.seed,
        "order": "".join("AB"[o] for o in measured),
        "block_values": [_clean(v) for v in values],
        "pair_log_ratios": [_clean(v) for v in paired.pair_log_ratios(values, measured)],
        "blocks_wall_s": round(load_s, 3),
        "client_cpu_pct": _clean(100.0 * run.client_cpu_s / run.wall_s if run.wall_s > 0 else math.nan),
        "a": side["a"],
        "b": side["b"],
        "host_speed": host_speed(speeds, probe.get("t0", 0.0), blocks, order),
    }


def host_speed(samples: list[tuple[float, float]], t0: float, blocks: Blocks, order: tuple[int, ...]) -> dict | None:
    """The host's CPU speed during the measured blocks (sweeper.hostspeed): the 5th and
    95th percentiles of its samples relative to their median (how far the machine moved),
    and the median over A's blocks relative to B's (near 1: the drift fell on both alike).
    None without samples."""
    by_target: dict[int, list[float]] = {paired.A: [], paired.B: []}
    every = []
    for at, speed in samples:
        k = int(math.floor((at - t0) / blocks.block_s))
        if blocks.lead_in <= k < len(order):
            by_target[order[k]].append(speed)
            every.append(speed)
    if len(every) < 4 or not by_target[paired.A] or not by_target[paired.B]:
        return None
    median = float(np.median(every))
    return {
        "samples": len(every),
        "low": float(np.percentile(every, 5)) / median,
        "high": float(np.percentile(every, 95)) / median,
        "a_over_b": float(np.median(by_target[paired.A]) / np.median(by_target[paired.B])),
    }


@dataclass(frozen=True)
class Arena:
    """Both configurations alive and warm: the engine's targets, and how they were set up."""

    targets: tuple
    layout: str
    warmups: dict
    groups: tuple = ()  # the servers' process groups (sweeper.drift.Throttle freezes them)


@contextmanager
def arena(choice: Choice, run: RunDir, inputs: tuple, load, valid_s: float,
          progress: Callable[[str], None] | None = None) -> Iterator[Arena]:
    """Start and warm both configurations (see the module docstring); stop every server
    on the way out, whatever happens. `inputs`: (model store, archive file, (A's request
    set, B's)) as sweeper.verify.trial_inputs gives them. `valid_s`: how long the keys
    must last (TorchServe's expire after 60 minutes)."""
    from .serve import new_server, register
    from .warmup import warm_registration, warm_server

    spec, a, b = choice.spec, choice.a, choice.b
    settings = spec.settings
    store, archive_file, (requests_a, requests_b) = inputs
    say = progress or (lambda line: None)
    servers: list = []
    stamp = time.strftime("%Y%m%d-%H%M%S")

    def target(server, name, requests):
        # the keys were refreshed once for this server (a refresh replaces them: a second one
        # would leave the first target with a dead key)
        url = f"{server.inference_url}/predictions/{name}"
        return requests.target(url, tuple(server.headers("inference").items()))

    def url_for(name, model):
        return archive_file or (None if name == model.name else f"{model.name}.mar")

    try:
        warmups: dict = {}
        if a.group_id == b.group_id:
            server = new_server(a, settings, store, run.server_dir(f"duel-{stamp}"))
            servers.append(server)  # before start, so the stop below reaps a half-started one
            server.start()
            name_b = a.model.name + DUEL_SUFFIX
            register(server, a.model.name, a.model, settings, url_for(a.model.name, a.model))
            register(server, name_b, b.model, settings, url_for(name_b, b.model))
            server.refresh_tokens(min_valid_s=valid_s)
            targets = (target(server, a.model.name, requests_a), target(server, name_b, requests_b))
            layout = f"one TorchServe, two registrations ({a.model.name} and {name_b})"
            say(f"  {layout}: server warm-up on A")
            warmups["a_server_warmup_s"] = warm_server(server, targets[0], load, settings)["server_warmup_s"]
            say("  registration warm-up on B")
            warmups["b_registration_warmup_s"] = round(warm_registration(server, targets[1], load, settings), 3)
        else:
            targets = ()
            for side, trial, requests in (("a", a, requests_a), ("b", b, requests_b)):
                # the second server on free ports: fixed ones (settings.base_port) are the first's
                mine = settings if side == "a" else settings.model_copy(update={"base_port": None})
                server = new_server(trial, mine, store, run.server_dir(f"duel-{stamp}-{side}"))
                servers.append(server)
                server.start()
                register(server, trial.model.name, trial.model, settings, url_for(trial.model.name, trial.model))
                server.refresh_tokens(min_valid_s=valid_s)
                targets += (target(server, trial.model.name, requests),)
                say(f"  server warm-up on {side.upper()}")
                warmups[f"{side}_server_warmup_s"] = warm_server(server, targets[-1], load, settings)["server_warmup_s"]
            layout = "two TorchServes (they differ at server level), one idle while the other serves"
        yield Arena(targets, layout, warmups, tuple(server.process_group for server in servers))
    finally:
        _stop_all(servers)


def _stop_all(servers: list) -> None:
    """Stop every server, even when one's stop raises (the first error is re-raised)."""
    failed: BaseException | None = None
    for server in servers:
        try:
            server.stop()
        except BaseException as exc:  # noqa: BLE001 - the others must still be stopped
            failed = failed or exc
    if failed is not None:
        raise failed


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises Interrupted, so the servers and engines are stopped as on Ctrl-C."""

    def handler(signum, _frame):
        raise Interrupted(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def duel(
    run_dir: Path,
    configs: tuple[str, str] | None = None,
    blocks: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Measure the two head to head, write duel.json into the run directory, return it."""
    from .spec import DuelSettings
    from .verify import trial_inputs

    started = time.monotonic()
    run = RunDir(run_dir)
    choice = choose(run.path, configs)
    spec, a, b = choice.spec, choice.a, choice.b
    settings = spec.settings
    own = settings.duel or DuelSettings()
    count = check_blocks(blocks if blocks is not None else own.blocks)
    p99s = [_number(choice.rows[t.trial_id].get("client_latency_p99_ms_mean")) for t in (a, b)]
    block_s, settle_s = timing(own.block_s, max((p for p in p99s if p is not None), default=None))
    plan = Blocks(count, block_s, settle_s, seed=settings.seed)
    if plan.duration_s > MAX_DUEL_BLOCKS_S:
        raise SpecError(str(run.path), "--blocks", f"{count} blocks of {block_s:g} s last {plan.duration_s / 60:.0f} min; "
                        f"at most {MAX_DUEL_BLOCKS_S / 60:.0f} min fit in a TorchServe key's 60 minutes")
    load = a.load
    store, archive_file, requests_a = trial_inputs(run.path, spec, a)
    requests_b = trial_inputs(run.path, spec, b)[2]
    say = progress or (lambda line: None)
    say(f"duel: trial {a.trial_id} (A: {_describe(a)}) against {b.trial_id} (B: {_describe(b)}), {choice.chosen}; "
        f"{count} blocks of {block_s:g} s ({settle_s:g} s settle each) after {plan.lead_in} lead-in blocks, "
        f"at A's load ({_load_text(load)})")
    # long enough for both server warm-ups at their cap, the registration warm-up and the blocks
    valid_s = 2 * settings.server_warmup_cap_s + settings.registration_warmup_cap_s + plan.duration_s + 120
    with _sigterm_interrupts():
        with arena(choice, run, (store, archive_file, (requests_a, requests_b)), load, valid_s, say) as ready:
            say(f"  {plan.lead_in + count} blocks, about {plan.duration_s:.0f} s")
            result = measure_blocks(ready.targets, load, plan, (requests_a.expect_status, requests_b.expect_status),
                                    settings.probe_interval_s)
    floor = settings.min_success_rate
    for side, trial, requests in (("a", a, requests_a), ("b", b, requests_b)):
        rate = result[side]["success_rate"]
        if not rate >= floor:
            raise RequestsFailed(
                f"duel: trial {trial.trial_id} ({side.upper()}) answered {_share(rate)} of its requests with "
                f"{requests.expect_status}, below settings.min_success_rate {floor:g}"
            )
    result = {
        "configs": [a.trial_id, b.trial_id],
        **result,
        "chosen": choice.chosen,
        "pick": choice.pick,
        "layout": ready.layout,
        "load": {"mode": load.mode, "concurrency": load.concurrency, "rate_rps": load.rate_rps,
                 "processes": load.processes},
        "note": _load_note(a, b),
        "params": {side: {k: v for k, v in t.params().items() if k.startswith("param_")}
                   for side, t in (("a", a), ("b", b))},
        "unpaired": unpaired(choice.rows[a.trial_id], choice.rows[b.trial_id], result["figure"]),
        **ready.warmups,
        "wall_s": round(time.monotonic() - started, 3),
    }
    write_atomic(run.duel_json, json.dumps(_clean(result), indent=1, allow_nan=False))
    return result


def unpaired(row_a: dict, row_b: dict, figure: str) -> dict:
    """The sweep's own figures for the two (means over repeats) and, for throughput, the
    ratio's 95% bootstrap interval over windows and repeats (sweeper.analysis.confidence):
    what the recommendation says without the duel."""
    from .analysis import confidence as ci

    column = "client_throughput_rps" if figure == "throughput" else "client_latency_mean_ms"
    a_mean, b_mean = _number(row_a.get(f"{column}_mean")), _number(row_b.get(f"{column}_mean"))
    out = {"a_mean": a_mean, "b_mean": b_mean, "ratio": a_mean / b_mean if a_mean and b_mean else None,
           "ci_low": None, "ci_high": None, "repeats": [row_a.get("n_ok"), row_b.get("n_ok")]}
    if figure == "throughput":
        samples_a, samples_b = row_a.get(f"{column}_samples"), row_b.get(f"{column}_samples")
        if isinstance(samples_a, list) and isinstance(samples_b, list) and samples_a and samples_b:
            c = ci.compare(samples_a, samples_b)
            if c.relative.known:
                out.update(ci_low=1.0 + c.relative.lo, ci_high=1.0 + c.relative.hi)
            out["verdict"] = c.verdict
    return out


def _describe(trial) -> str:
    m = trial.model
    parts = [f"batch={m.batch_size}", f"delay={m.max_batch_delay_ms}ms", f"workers={m.min_workers}-{m.max_workers}"]
    parts += [f"{k}={v}" for k, v in (*trial.server, *trial.env)]
    if trial.request is not None:
        parts.append(f"request={trial.request}")
    return " ".join(parts)


def _load_text(load) -> str:
    return f"closed c={load.concurrency}" if load.mode == "closed" else f"open {load.rate_rps:g} req/s"


def _load_note(a, b) -> str:
    if a.load == b.load:
        return ""
    return f"B ran at {_load_text(b.load)} in the sweep; the duel measured both at A's load ({_load_text(a.load)})"


def _share(rate: float) -> str:
    return "none" if not rate == rate else f"{math.floor(rate * 10000) / 100:.2f}%"


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _clean(value):
    """JSON-ready: numpy scalars as Python ones, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
