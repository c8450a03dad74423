"""What Ray adds to a sweep, and how long sweeps take on a local multi-node Ray cluster.

    .venv/bin/python benchmarks/bench_ray.py                       # smoke: local, 1 node, 2 nodes
    .venv/bin/python benchmarks/bench_ray.py --sweeps smoke batching --nodes 2 --no-local

For each sweep: `sweeper run SWEEP` on this machine (the local executor), then
`sweeper run SWEEP --ray ADDRESS` on a ray.cluster_utils.Cluster of N nodes on this
machine (each node num_cpus=1, sweeper_slot: 1). Prints the sweep's wall time, the trials'
mean wall_s, and Ray's overhead per trial: the ray_overhead_s column (the driver's round
trip of a trial's call, trial and files shipped both ways, minus the trial's wall time on
the node), plus the actors' start-up once per sweep. Nodes of one machine share its cores:
two TorchServes on a machine with few cores measure each other, so read the 2-node wall time as
"both nodes were used", not as a speed-up a real cluster would show.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SWEEPER = [sys.executable, "-m", "sweeper.cli"]


def run(sweep: str, out: Path, ray_address: str | None) -> dict:
    cmd = [*SWEEPER, "run", sweep, "--out", str(out), "--no-report", "--yes"]
    if ray_address:
        cmd += ["--ray", ray_address]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    run_dir = sorted(p for p in out.iterdir() if (p / "results.csv").exists())[-1]
    df = pd.read_csv(run_dir / "results.csv")
    startup = re.search(r"actors ready in ([\d.]+) s", proc.stderr)
    out_row = {
        "sweep": sweep,
        "where": "local" if not ray_address else "ray",
        "rc": proc.returncode,
        "trials": len(df),
        "failed": int((df["status"] != "ok").sum()),
        "sweep_wall_s": round(wall, 1),
        "trial_wall_s_mean": round(df["wall_s"].mean(), 2),
        "trial_wall_s_sum": round(df["wall_s"].sum(), 1),
        "errors": "; ".join(sorted(set(df.loc[df["status"] != "ok", "error"].astype(str)))),
    }
    if "ray_overhead_s" in df:
        out_row.update(
            nodes_used=df["node_id"].nunique(),
            ray_overhead_s_mean=round(df["ray_overhead_s"].mean(), 3),
            ray_overhead_s_max=round(df["ray_overhead_s"].max(), 3),
            actors_ready_s=float(startup.group(1)) if startup else None,
        )
    if proc.returncode not in (0, 1):
        print(proc.stderr[-2000:], file=sys.stderr)
    return out_row


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweeps", nargs="+", default=["smoke"])
    parser.add_argument("--nodes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--no-local", action="store_true")
    args = parser.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        out = Path(tmp)
        if not args.no_local:
            for sweep in args.sweeps:
                rows.append({**run(sweep, out / f"local-{sweep}", None), "nodes": 0})
                print(rows[-1], flush=True)
        for n in args.nodes:
            node = {"num_cpus": 1, "resources": {"sweeper_slot": 1}, "object_store_memory": 80 * 2**20}
            cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
            try:
                for _ in range(n - 1):
                    cluster.add_node(**node)
                cluster.wait_for_nodes()
                for sweep in args.sweeps:
                    rows.append({**run(sweep, out / f"ray{n}-{sweep}", cluster.address), "nodes": n})
                    print(rows[-1], flush=True)
            finally:
                ray.shutdown()
                cluster.shutdown()
    print(pd.DataFrame(rows).to_markdown(index=False) if _has_tabulate() else pd.DataFrame(rows).to_string(index=False))
    return 0


def _has_tabulate() -> bool:
    import importlib.util

    return importlib.util.find_spec("tabulate") is not None


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    sys.exit(main())
