"""`sweeper verify RUN_DIR`: a second opinion on the winner.

Reruns the run's recommended configuration (the throughput winner) on a fresh TorchServe
and measures it alternately with our load engine and with an independent client - wrk,
or ApacheBench `ab` (the client pytorch/serve's own benchmark uses) - at the same number
of connections in flight for the same time. Alternating (engine then client, client then
engine, ...) cancels slow drift. The median ratio engine/client says whether our engine
measured the server or itself: near 1.0 it measured the server.

The winner runs as it ran in the sweep: a user's archive (model.archive) and the request
set of the winning trial (`request`). With wrk both clients send the set's payloads in
turn, one per request, as the sweep's engine did (wrk through a Lua `request` function).
ab sends one body, so with ab both send the set's first payload. verify.json says which
set, how many payloads it has and how many were sent.

Writes `verify.json` into the run directory (the report shows it when present).
Only 2xx responses count, for both clients.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from .errors import SpecError, SweeperError
from .load.external import Measurement, Request, find_client, run_client
from .rundir import RunDir, write_atomic

DEFAULT_CONCURRENCY = 16  # when the winner ran open loop: a closed loop needs a level
MAX_CONCURRENCY = 256  # a capacity winner's in-flight requests, capped (wrk and ab connections)

def engine_target(req: Request):
    """The load engine's Target for `req`."""
    from .load import Target

    def headers(body: bytes, content_type: str) -> tuple[tuple[str, str], ...]:
        out = [("Content-Type", content_type)] if body else []
        if req.authorization:
            out.append(("Authorization", req.authorization))
        return tuple(out)

    bodies = tuple((body, headers(body, ct)) for body, ct in req.payloads) if req.more else ()
    return Target(req.url, body=req.body, headers=headers(req.body, req.content_type), method=req.method, bodies=bodies)


def run_engine(req: Request, connections: int, duration_s: float) -> Measurement:
    from .load import LoadProfile, run_load, summarize

    s = summarize(run_load(engine_target(req), LoadProfile("closed", concurrency=connections, duration_s=duration_s)))
    return Measurement(float(s["client_throughput_rps"]), int(s["client_errors"]))


def pairs(
    req: Request,
    client: tuple[str, str],
    connections: int,
    duration_s: float,
    count: int,
    progress: Callable[[str], None] | None = None,
    engine: Callable[[Request, int, float], Measurement] = run_engine,
) -> dict:
    """`count` alternating pairs (engine first in even pairs); the ratios and their median."""
    name, path = client
    rows = []
    with tempfile.TemporaryDirectory(prefix="sweeper-verify-") as tmp:
        for i in range(count):
            order = ("engine", name) if i % 2 == 0 else (name, "engine")
            got: dict[str, Measurement] = {}
            for who in order:
                if who == "engine":
                    got[who] = engine(req, connections, duration_s)
                else:
                    got[who] = run_client(name, path, req, connections, duration_s, Path(tmp))
            e, c = got["engine"], got[name]
            ratio = e.ok_rps / c.ok_rps if c.ok_rps > 0 else float("nan")
            rows.append({"order": list(order), "engine_rps": e.ok_rps, "client_rps": c.ok_rps,
                         "engine_errors": e.errors, "client_errors": c.errors, "ratio": ratio})
            if progress:
                progress(f"  pair {i + 1}/{count} ({' then '.join(order)}): engine {e.ok_rps:,.1f} req/s, "
                         f"{name} {c.ok_rps:,.1f} req/s, ratio {ratio:.3f}")
    ratios = [r["ratio"] for r in rows if r["ratio"] == r["ratio"]]
    return {
        "client": name,
        "connections": connections,
        "duration_s": duration_s,
        "pairs": rows,
        "ratio_median": statistics.median(ratios) if ratios else float("nan"),
        "ratio_min": min(ratios) if ratios else float("nan"),
        "ratio_max": max(ratios) if ratios else float("nan"),
    }


def winner(run_dir: Path):
    """The winner's trial (sweeper.plan.Trial, rebuilt from the run's sweep.yaml), the
    closed-loop concurrency to verify it at, and why that concurrency.

    The winner is the recommendation's: the throughput pick, or a capacity run's pick
    (search.objective capacity). A closed-loop winner is verified at its own concurrency;
    a capacity winner at the requests in flight at its capacity (Little's law: the rate
    times the mean latency of the step at the capacity); an open-loop one at
    DEFAULT_CONCURRENCY."""
    from .analysis.aggregate import aggregate_trials
    from .analysis.objective import best
    from .plan import expand
    from .report.rundata import read_run
    from .sweepfile import load_sweep

    data = read_run(run_dir)
    spec = load_sweep(RunDir(run_dir).sweep_yaml)
    trials_df = aggregate_trials(data.results, spec.settings.min_success_rate)
    capacity = "capacity_rps_at_slo" in data.results.columns
    w = best(trials_df, spec.settings.slo_p99_ms, objective="capacity" if capacity else "throughput")
    if w is None:
        raise SweeperError(
            f"{run_dir}: no configuration to verify: no trial met the sweep's objective "
            f"(every repeat ok, success rate >= {spec.settings.min_success_rate:g}"
            + (f", p99 <= {spec.settings.slo_p99_ms:g} ms" if spec.settings.slo_p99_ms else "") + ")"
        )
    trials = {t.trial_id: t for t in expand(spec) if t.repeat == 0}
    trial = trials.get(str(w["trial_id"]))
    if trial is None:
        raise SweeperError(f"{run_dir}: trial {w['trial_id']} is not in sweep.yaml's plan (was sweep.yaml edited?)")
    if capacity:
        # the means over the repeats (sweeper.analysis.aggregate)
        rate = float(w.get("capacity_rps_at_slo_mean") or 0)
        latency_ms = float(w.get("client_latency_mean_ms_mean") or "nan")
        if rate > 0 and latency_ms == latency_ms:
            concurrency = in_flight(rate, latency_ms)
            return spec, trial, concurrency, (
                f"the requests in flight at its capacity: {rate:,.0f} req/s x {latency_ms:.1f} ms mean latency"
            )
        return spec, trial, DEFAULT_CONCURRENCY, "no capacity to derive it from: the default for an open-loop winner"
    if trial.load.mode == "closed":
        return spec, trial, trial.load.concurrency, "the winner's own concurrency"
    return spec, trial, DEFAULT_CONCURRENCY, "the default for an open-loop winner"


def in_flight(rate_rps: float, latency_ms: float, most: int = MAX_CONCURRENCY) -> int:
    """Requests in flight at `rate_rps` with `latency_ms` mean latency (Little's law),
    rounded up, at least 1 and at most `most`."""
    return max(1, min(most, math.ceil(rate_rps * latency_ms / 1000.0)))


def verify(
    run_dir: Path,
    count: int = 4,
    duration_s: float = 10.0,
    preference: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Rerun the winner, measure `count` alternating pairs, write verify.json; return it."""
    from .load import LoadProfile
    from .warmup import warm_server
    from .serve import new_server, register

    from .sweepfile import load_sweep

    swept = RunDir(run_dir).sweep_yaml
    if swept.exists() and load_sweep(swept).target is not None:
        raise SpecError(str(swept), "target",
                        "a run on a target (docs/attach.md): sweeper verify starts a server of its own, which would not measure the target")
    client = find_client(preference)
    if client is None:
        what = "wrk or ab" if preference == "auto" else preference
        raise SweeperError(f"no independent client found: install {what} (Debian: apt-get install wrk apache2-utils)")
    run_dir = Path(run_dir)
    spec, trial, connections, why = winner(run_dir)
    settings = spec.settings
    store, archive_file, requests = trial_inputs(run_dir, spec, trial)
    # wrk sends the set's payloads in turn, as the engine does; ab sends one body, so with
    # ab both send the first (verify.json: request_payloads_sent)
    sent = requests.payloads if client[0] == "wrk" else requests.payloads[:1]
    run = RunDir(run_dir)
    server = new_server(trial, settings, store, run.server_dir(f"verify-{int(time.time())}"))
    if progress:
        progress(f"verify trial {trial.trial_id} ({trial.model.name} batch={trial.model.batch_size} "
                 f"delay={trial.model.max_batch_delay_ms}ms) at {connections} in flight ({why}), {count} pairs of "
                 f"{duration_s:g} s, engine vs {client[0]}")
    try:
        server.start()
        register(server, trial.model.name, trial.model, settings, archive_file)
        server.refresh_tokens(min_valid_s=count * 2 * (duration_s + 5))
        auth = server.headers("inference").get("Authorization", "")
        url = f"{server.inference_url}/predictions/{trial.model.name}"
        req = Request(url, sent[0].body, sent[0].content_type, auth, method=requests.method,
                      more=tuple((p.body, p.content_type) for p in sent[1:]))
        # warm the server up as a sweep warms a fresh server's first trial (the JVM's JIT:
        # sweeper.warmup.warm_server, whose last run is our engine on new connections),
        # then the other client once, unrecorded
        warm = min(2.0, duration_s)
        warmed = warm_server(server, engine_target(req), LoadProfile("closed", concurrency=connections,
                             duration_s=duration_s), settings)
        if progress:
            progress(f"  server warm-up: {warmed['server_warmup_s']:.1f} s, JIT compiler threads at the end "
                     f"{warmed['server_warmup_jit_pct']:.1f}% of a core")
        with tempfile.TemporaryDirectory(prefix="sweeper-verify-") as tmp:
            run_client(client[0], client[1], req, connections, warm, Path(tmp))
        result = pairs(req, client, connections, duration_s, count, progress)
    finally:
        server.stop()  # its logs stay in servers/verify-*, as every server's do
    result.update(server_warmup_s=warmed["server_warmup_s"], server_warmup_jit_pct=warmed["server_warmup_jit_pct"])
    result.update(trial_id=trial.trial_id, params={k: v for k, v in trial.params().items() if k.startswith("param_")})
    result.update(connections_why=why, request=requests.name, request_payloads=len(requests.payloads),
                  request_payloads_sent=len(sent), body_bytes=len(sent[0].body),
                  body_bytes_mean=sum(len(p.body) for p in sent) / len(sent),
                  content_type=sent[0].content_type, method=requests.method)
    write_atomic(run.verify_json, json.dumps(result, indent=1, default=str))
    return result


def trial_inputs(run_dir: Path, spec, trial):
    """The model store, the archive's file name (None: <name>.mar) and the request set the
    trial ran with (the winner for verify, each of the two for sweeper duel): a user's
    archive and payloads (sweeper.usermodel, read again from the run's sweep.yaml, whose
    paths are absolute), or the sweeper's own model and example."""
    from .payload import builtin_request_set, example_body
    from .preflight import model_store_for
    from .usermodel import resolve

    source = str(RunDir(run_dir).sweep_yaml)
    user = resolve(spec, source)
    store = user.model_store or model_store_for(spec, source)
    if trial.request is not None:
        requests = user.request_sets[trial.request]
    else:
        requests = builtin_request_set(example_body(trial.model.name))
    return store, user.archive_file, requests
