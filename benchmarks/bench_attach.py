"""Does a sweep attached to a TorchServe started outside the sweeper measure what a sweep on
the sweeper's own servers measures? The same batching grid, both ways, side by side.

    python benchmarks/bench_attach.py [--batch-sizes 1 8] [--delays-ms 5 50] [--workers 1]
                                      [--concurrency 16] [--duration-s 5] [--warmup-s 1]
                                      [--server-warmup-s 15] [--repeats 2] [--attached-first]
                                      [--out benchmarks/data/attach]

1. Own servers: `sweeper run` of a sweep of the MLP, batch size x max batch delay, closed
   loop, --repeats runs of each configuration (interleaved): the sweeper starts, warms and
   stops its TorchServe as in any sweep.
2. Attached: a TorchServe started here the way a user starts one (`torchserve --start --ncs`
   in its own directory and TMPDIR), with the config.properties the sweeper renders for
   that sweep (same keys; the same log4j configuration; the same environment, thread
   variables removed), then `sweeper run --target` of the same sweep. Stopped by its process
   group afterwards.

The two runs take turns on this machine, own servers first (--attached-first: the other
way round); each gets the same warm-ups (settings.server_warmup_s on its first trial,
settings.registration_warmup_s on each new registration).

Prints, per configuration: each run's client throughput (mean over its repeats), the
own-server run's run-to-run noise (the spread of its repeats: (max - min) / mean; with 2
repeats that is |r0 - r1| / mean), and attached / own. The last lines are the summary:
the median and range of attached / own, the own-server noise, and whether the
difference is within it. Performance goals live here, not in tests; run it on a quiet
machine, as nothing else shares the cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pandas as pd
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeper.torchserve.config import Ports, render_config  # noqa: E402
from sweeper.torchserve.process import LOG4J_CONFIG, free_ports, server_environment, torchserve_executable  # noqa: E402

MODEL_STORE = ROOT / "model_store"


def sweep_doc(args, name: str) -> dict:
    return {
        "name": name,
        "description": "bench_attach: the same batching grid on the sweeper's own servers and attached",
        "model": {"name": "mlp", "batch_size": args.batch_sizes, "max_batch_delay_ms": args.delays_ms,
                  "min_workers": args.workers},
        "load": {"mode": "closed", "concurrency": args.concurrency, "duration_s": args.duration_s},
        "settings": {"repeats": args.repeats, "warmup_s": args.warmup_s, "server_warmup_s": args.server_warmup_s},
    }


class Outside:
    """A TorchServe started the way a user starts one; stopped by its process group."""

    def __init__(self, base: Path):
        self.base = base
        self.work, self.tmp = base / "work", base / "tmp"
        self.work.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.ports = Ports(*free_ports("127.0.0.1", 5))
        self.pgid: int | None = None

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def start(self) -> None:
        config = render_config((), self.ports, MODEL_STORE, sweep="bench_attach", group_id="outside")
        (self.work / "config.properties").write_text(config)
        env = server_environment(os.environ, {})
        env.update(TMPDIR=str(self.tmp), TEMP=str(self.tmp))
        cmd = [torchserve_executable(), "--start", "--ncs", "--ts-config", "config.properties",
               "--model-store", str(MODEL_STORE), "--log-config", str(LOG4J_CONFIG)]
        with open(self.base / "stdout.log", "ab") as out:  # --start leaves the JVM on this stdout
            proc = subprocess.Popen(cmd, cwd=self.work, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.pgid = proc.pid
        proc.wait(timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._healthy():
                return
            time.sleep(0.2)
        raise RuntimeError(f"the outside TorchServe did not answer /ping within 60 s (see {self.base / 'stdout.log'})")

    def _healthy(self) -> bool:
        try:
            keys = json.loads((self.work / "key_file.json").read_text())
            r = httpx.get(self.url(self.ports.inference) + "/ping",
                          headers={"Authorization": f"Bearer {keys['inference']['key']}"}, timeout=2)
            return r.status_code == 200
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            return False

    def target(self) -> dict:
        return {"inference": self.url(self.ports.inference), "management": self.url(self.ports.management),
                "metrics": self.url(self.ports.metrics), "key_file": str(self.work / "key_file.json")}

    def stop(self) -> None:
        if self.pgid is None:
            return
        procs = [p for p in psutil.process_iter() if _pgid(p.pid) == self.pgid]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            _, procs = psutil.wait_procs(procs, timeout=10)
            if not procs:
                break


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def run_sweeper(doc: dict, where: Path, extra: list[str]) -> pd.DataFrame:
    """`sweeper run` of `doc` (a subprocess, as a user runs it); its results.csv."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = where / "runs"
    log = where / "sweeper.log"
    with open(log, "w") as f:
        code = subprocess.call([sys.executable, "-m", "sweeper.cli", "run", str(path), "--out", str(out), "--no-report",
                                *extra], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    runs = sorted(p for p in out.iterdir() if (p / "results.csv").exists()) if out.exists() else []
    if code != 0 or not runs:
        tail = "".join(log.read_text().splitlines(keepends=True)[-5:])
        raise RuntimeError(f"sweeper run {path.name} exited {code}; the end of {log}:\n{tail}")
    return pd.read_csv(runs[-1] / "results.csv")


def by_configuration(df: pd.DataFrame) -> dict[tuple[int, int], list[float]]:
    """(batch size, delay ms) -> the client throughput of each repeat."""
    ok = df[df["status"] == "ok"]
    out: dict[tuple[int, int], list[float]] = {}
    for (batch, delay), group in ok.groupby(["param_model_batch_size", "param_model_max_batch_delay_ms"]):
        out[(int(batch), int(delay))] = [float(v) for v in group.sort_values("repeat")["client_throughput_rps"]]
    return out


def spread(values: list[float]) -> float:
    """(max - min) / mean of a configuration's repeats; NaN with one."""
    if len(values) < 2 or statistics.mean(values) <= 0:
        return math.nan
    return (max(values) - min(values)) / statistics.mean(values)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--delays-ms", type=int, nargs="+", default=[5, 50])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration-s", type=float, default=5.0)
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--server-warmup-s", type=float, default=15.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--attached-first", action="store_true", help="run the attached sweep before the own-server one")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data" / "attach")
    args = p.parse_args()
    if not (MODEL_STORE / "mlp.mar").exists():
        print(f"bench_attach: {MODEL_STORE / 'mlp.mar'} missing: run `make archives`", file=sys.stderr)
        return 2
    base = args.out / datetime.now().strftime("%Y%m%d-%H%M%S")
    results: dict[str, dict] = {}

    def own() -> None:
        results["own"] = by_configuration(run_sweeper(sweep_doc(args, "bench_attach_own"), base / "own", []))

    def attached() -> None:
        outside = Outside(base / "outside")
        try:
            outside.start()
            doc = {**sweep_doc(args, "bench_attach_attached"), "target": outside.target()}
            results["attached"] = by_configuration(run_sweeper(doc, base / "attached", []))
        finally:
            outside.stop()

    started = time.monotonic()
    for step in ((attached, own) if args.attached_first else (own, attached)):
        step()
    own_r, att_r = results["own"], results["attached"]

    print(f"bench_attach: MLP, {args.workers} worker(s), closed loop c={args.concurrency}, {args.duration_s:g} s windows, "
          f"{args.repeats} repeat(s) each; {'attached' if args.attached_first else 'own servers'} first; "
          f"{time.monotonic() - started:.0f} s; runs under {base}")
    print(f"{'configuration':<22} {'own req/s (repeats)':<28} {'own noise':>9} {'attached req/s (repeats)':<30} {'attached/own':>12}")
    ratios, noises = [], []
    for key in sorted(set(own_r) | set(att_r)):
        o, a = own_r.get(key, []), att_r.get(key, [])
        o_mean = statistics.mean(o) if o else math.nan
        a_mean = statistics.mean(a) if a else math.nan
        ratio = a_mean / o_mean if o and a and o_mean > 0 else math.nan
        noise = spread(o)
        ratios += [] if math.isnan(ratio) else [ratio]
        noises += [] if math.isnan(noise) else [noise]
        reps = lambda vs: f"{statistics.mean(vs):8.1f} ({', '.join(f'{v:.0f}' for v in vs)})" if vs else "   failed"  # noqa: E731
        print(f"batch={key[0]:<3} delay={key[1]:>3} ms   {reps(o):<28} {noise * 100:8.1f}% {reps(a):<30} {ratio:12.3f}")
    print()
    if not ratios:
        print("summary: no configuration was measured both ways: see the sweeper logs under", base)
        return 1
    median_ratio = statistics.median(ratios)
    print(f"summary: attached/own throughput: median {median_ratio:.3f}, range {min(ratios):.3f}-{max(ratios):.3f} "
          f"over {len(ratios)} configuration(s)")
    if noises:
        noise = statistics.median(noises)
        within = abs(median_ratio - 1.0) <= noise
        print(f"summary: own-server run-to-run noise (spread of repeats): median {noise * 100:.1f}%, max {max(noises) * 100:.1f}%")
        print(f"summary: the attached run {'agrees with' if within else 'differs from'} the own-server run "
              f"{'within' if within else 'beyond'} that noise ({abs(median_ratio - 1.0) * 100:.1f}% vs {noise * 100:.1f}%)")
    else:
        print("summary: own-server noise unknown (one repeat): give --repeats 2 or more to judge the ratio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
