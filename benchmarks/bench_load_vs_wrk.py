"""The load engine against wrk on a real TorchServe: is the engine ever the bottleneck?

    python benchmarks/bench_load_vs_wrk.py [--pairs 5] [--duration-s 10] [--concurrency 16]
                                           [--wrk-threads 1] [--ping]

Starts TorchServe (own temp dir, free ports, token auth off), registers the MLP archive
(model_store/mlp.mar, built by sweeper.archive when missing) with 2 workers, batch size 8
and max batch delay 5 ms, then runs alternating paired closed-loop runs of wrk and of the
sweeper engine (one process), each with the same number of connections in flight, and
prints each pair and the median ratio engine/wrk. Alternating the order inside each pair
cancels drift (JIT warm-up, other load on the machine). Goal: ratio >= 0.95.
With --ping the pairs hit GET /ping instead (no model): the clients' raw speed.

Only 2xx responses count, for both. wrk reports its counts through a Lua `done` hook as
one JSON line (requests, non-2xx/3xx, socket errors); 2xx = requests - non-2xx/3xx
(TorchServe's prediction API never answers 3xx). The engine's figure is summarize()'s
client_throughput_rps (2xx / first send to last completion).

wrk: apt-get install wrk (Debian/Ubuntu), or build it from https://github.com/wg/wrk.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_load_common import ROOT, torchserve  # noqa: E402

from handlers.models import MODELS  # noqa: E402
from sweeper.torchserve import management  # noqa: E402
from sweeper.archive import ensure_archives  # noqa: E402
from sweeper.load import LoadProfile, Target, run_load, summarize  # noqa: E402
from sweeper.plan import ModelParams  # noqa: E402

MODEL = ModelParams(
    name="mlp", batch_size=8, max_batch_delay_ms=5, min_workers=2, max_workers=2, response_timeout_s=120
)

LUA = """\
-- Written by benchmarks/bench_load_vs_wrk.py.
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()
wrk.method = os.getenv("BENCH_METHOD")
if #body > 0 then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non_2xx_3xx": %d, "connect": %d, '
    .. '"read": %d, "write": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def find_wrk() -> str:
    wrk = shutil.which("wrk") or ("/usr/bin/wrk" if Path("/usr/bin/wrk").exists() else None)
    if wrk is None:
        raise SystemExit(
            "wrk not found: install it (Debian/Ubuntu: sudo apt-get install wrk; "
            "or build https://github.com/wg/wrk) and run this again"
        )
    return wrk


def run_wrk(wrk: str, url: str, script: Path, env: dict, threads: int, connections: int,
            duration_s: float) -> dict:
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration_s + 60)
    lines = [line for line in out.stdout.splitlines() if line.startswith("WRK_JSON ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    data = json.loads(lines[-1][len("WRK_JSON ") :])
    ok = data["requests"] - data["non_2xx_3xx"]
    errors = data["non_2xx_3xx"] + sum(data[k] for k in ("connect", "read", "write", "timeout"))
    return {"ok_rps": ok / (data["duration_us"] / 1e6), "errors": errors}


def run_engine(target: Target, connections: int, duration_s: float) -> dict:
    s = summarize(run_load(target, LoadProfile("closed", concurrency=connections, duration_s=duration_s)))
    return {
        "ok_rps": s["client_throughput_rps"],
        "errors": s["client_errors"],
        "cpu_pct": s["client_cpu_pct"],
        "bound": s["client_bound_reason"] or "no",
        "batch": s["client_batch_size_mean"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16, help="connections in flight, both clients")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (1 = one event loop, like the one engine process)")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--ping", action="store_true", help="GET /ping instead of MLP predictions")
    args = parser.parse_args()
    wrk = find_wrk()

    store = ROOT / "model_store"
    if not args.ping:
        ensure_archives(store, [MODEL.name])
    with tempfile.TemporaryDirectory(prefix="bench-load-wrk-") as tmp, torchserve(store) as server:
        if args.ping:
            url, body, method = server.inference_url + "/ping", b"", "GET"
            what = "GET /ping"
        else:
            management.register_model(server, **dataclasses.asdict(MODEL))
            url = f"{server.inference_url}/predictions/{MODEL.name}"
            body, method = MODELS[MODEL.name].example_request(), "POST"
            what = (f"POST {MODEL.name}: {MODEL.min_workers} workers, batch {MODEL.batch_size}, "
                    f"delay {MODEL.max_batch_delay_ms} ms")
        body_file = Path(tmp) / "body"
        body_file.write_bytes(body)
        script = Path(tmp) / "post.lua"
        script.write_text(LUA)
        env = {"BENCH_BODY_FILE": str(body_file), "BENCH_METHOD": method, "PATH": "/usr/bin:/bin"}
        headers = (("Content-Type", "application/json"),) if body else ()
        target = Target(url, body=body, headers=headers, method=method)

        print(f"TorchServe {what}; {args.concurrency} in flight; {args.duration_s:g} s per run; "
              f"wrk -t{args.wrk_threads}; engine: 1 process")
        run_wrk(wrk, url, script, env, args.wrk_threads, args.concurrency, args.warmup_s)
        run_engine(target, args.concurrency, args.warmup_s)

        print("| pair | order | wrk 2xx req/s | engine 2xx req/s | engine/wrk | wrk errors "
              "| engine errors | engine CPU % | engine batch mean | engine client bound |")
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        ratios = []
        for i in range(args.pairs):
            order = ("wrk", "engine") if i % 2 == 0 else ("engine", "wrk")
            res = {}
            for client in order:
                if client == "wrk":
                    res[client] = run_wrk(wrk, url, script, env, args.wrk_threads, args.concurrency,
                                          args.duration_s)
                else:
                    res[client] = run_engine(target, args.concurrency, args.duration_s)
            w, e = res["wrk"], res["engine"]
            ratio = e["ok_rps"] / w["ok_rps"] if w["ok_rps"] > 0 else float("nan")
            ratios.append(ratio)
            print(f"| {i + 1} | {' then '.join(order)} | {w['ok_rps']:,.1f} | {e['ok_rps']:,.1f} | "
                  f"{ratio:.3f} | {w['errors']} | {e['errors']} | {e['cpu_pct']:.0f} | {e['batch']:.2f} "
                  f"| {e['bound']} |", flush=True)
        print(f"\nmedian engine/wrk ratio over {len(ratios)} pairs: {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
