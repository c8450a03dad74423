"""The Ray executor against a real 2-node Ray cluster on this machine
(ray.cluster_utils.Cluster, both nodes on 127.0.0.1, each with sweeper_slot: 1) and real
TorchServes: both nodes run trials, every_node gives one row per node per trial, a node
removed mid-trial gives a failed row and the sweep goes on, Ctrl-C stops every remote
TorchServe, and nothing is left afterwards.

One cluster for the module (starting one costs seconds); the test that removes a node
adds a fresh one back. Every process the cluster starts carries TAG in its environment,
so the leak checks look at this module's processes only.
"""

from __future__ import annotations

import _thread
import os
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import psutil
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from handlers.models import MODELS  # noqa: E402
from sweeper.compare import compare  # noqa: E402
from sweeper.cli import main  # noqa: E402
from sweeper.errors import Interrupted  # noqa: E402
from sweeper.executors.ray import RayExecutor  # noqa: E402
from sweeper.rundir import RunDir  # noqa: E402
from sweeper import results  # noqa: E402
from sweeper.context import SweepContext  # noqa: E402
from sweeper.runner import run_sweep  # noqa: E402
from sweeper.search import STRATEGIES, search_options  # noqa: E402
from sweeper.plan import expand, space  # noqa: E402
from sweeper.sweepfile import parse_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TAG = "SWEEPER_RAY_TEST"
NODE = {"num_cpus": 1, "resources": {"sweeper_slot": 1}, "object_store_memory": 80 * 2**20}

pytestmark = [pytest.mark.e2e, pytest.mark.ray]


def tagged(tag: str, servers_only: bool) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE or p.environ().get(TAG) != tag:
                continue
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if not servers_only or any(s in cmd for s in ("org.pytorch.serve", "model_service_worker", "torchserve")):
            out.append(p)
    return out


def wait_gone(tag: str, servers_only: bool, timeout_s: float = 15.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while (left := tagged(tag, servers_only)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture(scope="module")
def cluster():
    tag = uuid.uuid4().hex
    os.environ[TAG] = tag  # inherited by gcs, raylets, workers and their TorchServes
    c = None
    try:
        c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
        c.add_node(**NODE)
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False)
        c.tag = tag
        yield c
    finally:
        del os.environ[TAG]
        ray.shutdown()
        if c is not None:
            c.shutdown()
        left = wait_gone(tag, servers_only=False, timeout_s=20.0)
        for p in left:  # report, then clean up what the cluster left
            p.kill()
        assert not left, f"processes left after the cluster's shutdown: {[(p.pid, p.cmdline()) for p in left]}"


def a_context(tmp_path: Path, **settings) -> SweepContext:
    spec = parse_sweep(
        {
            "name": "raytest",
            "model": {"name": "mlp", "batch_size": [1, 4], "max_batch_delay_ms": 5, "min_workers": 1},
            "load": {"mode": "closed", "concurrency": 2, "duration_s": settings.pop("duration_s", 1)},
            "settings": {"warmup_s": 0.2, "server_warmup_s": 0, "ready_timeout_s": 90, **settings},
        },
        "raytest.yaml",
    )
    body = MODELS["mlp"].example_request()
    return SweepContext(spec=spec, run_dir=tmp_path, run_id=tmp_path.name, model_store=ROOT / "model_store", request_body=body)


def sweep(ctx: SweepContext, executor=None, on_progress=None):
    """The sweep loop, then the tables, as `sweeper run` does (also when the loop fails)."""
    strategy = STRATEGIES["grid"](ctx.spec, space(ctx.spec), search_options(ctx.spec))
    try:
        return run_sweep(ctx, strategy, executor or RayExecutor(ctx), progress=on_progress)
    finally:
        results.write_tables(ctx.run_dir)


def test_the_ray_executor_meets_the_executor_contract(cluster, tmp_path):
    ctx = a_context(tmp_path)
    trial = expand(ctx.spec)[0]
    executor = RayExecutor(ctx)
    try:
        assert executor.slots == 2
        executor.submit(trial)
        results = []
        while not results:
            results = executor.wait()
    finally:
        executor.close()
    (result,) = results
    assert result.trial == trial and result.final and result.dir_key == trial.key
    assert result.status == "ok", result.row.get("error")
    assert {"requests.csv.gz", "logs/ts_log.log"} <= set(result.artifacts)  # the inputs: the runner
    assert result.row["node_id"] in {n.node_id for n in executor.nodes}
    assert not RunDir(tmp_path).trial_dir(trial.key).exists()  # the runner writes, not the executor
    assert not wait_gone(cluster.tag, servers_only=True)


def test_the_cli_runs_a_sweep_on_both_nodes_and_results_name_the_node(cluster, tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(
        "name: two\nmodel: {name: mlp, batch_size: [1, 4], max_batch_delay_ms: 5, min_workers: 1}\n"
        "load: {mode: closed, concurrency: 2, duration_s: 1.5}\nsettings: {warmup_s: 0.3, server_warmup_s: 0, ready_timeout_s: 90}\n"
    )
    code = main(["run", str(path), "--ray", cluster.address, "--out", str(tmp_path / "runs"), "--no-report"])
    (run_dir,) = (tmp_path / "runs").iterdir()
    df = pd.read_csv(run_dir / "results.csv")
    assert code == 0, df[["status", "error"]].to_string()
    assert len(df) == 2 and (df["status"] == "ok").all()
    assert df["node_id"].nunique() == 2, df[["trial_id", "node_label"]]  # both nodes ran trials
    assert df["node_ip"].nunique() == 1  # two nodes of one machine: one address, two ids
    for key in df["trial_id"] + "-r" + df["repeat"].astype(str):  # files came home, as locally
        files = {p.relative_to(run_dir / "trials" / key).as_posix() for p in (run_dir / "trials" / key).rglob("*")}
        assert {"result.json", "requests.csv.gz", "config.properties", "env.json", "logs/ts_log.log"} <= files
    assert len(RunDir(run_dir).node_machines()) == 2
    assert not wait_gone(cluster.tag, servers_only=True)


def test_every_node_gives_one_row_per_node_per_trial_and_compare_splits_it(cluster, tmp_path):
    ctx = a_context(tmp_path, placement="every_node")
    outcome = sweep(ctx)
    df = pd.DataFrame(outcome.rows)
    assert (df["status"] == "ok").all(), df[["status", "error"]]
    assert len(df) == 4  # 2 trials x 2 nodes
    assert df.groupby("trial_id")["node_id"].nunique().eq(2).all()
    assert sorted(p.parent.name for p in (tmp_path / "trials").glob("*/result.json")) == sorted(
        f"{t}-r0@{n}" for t in df["trial_id"].unique() for n in df["node_label"].unique()
    )
    merged, best = compare([tmp_path])  # one run, split by node
    assert len(best) == 2 and len(merged) == 2
    # resume: every node measured every trial already, nothing runs again
    again = sweep(ctx)
    assert len(again.rows) == 4
    assert not wait_gone(cluster.tag, servers_only=True)


def test_ray_thread_settings_do_not_reach_the_server(cluster):
    """Ray sets OMP_NUM_THREADS in its workers; the server gets the trial's value or none."""
    from sweeper.torchserve.process import server_environment

    @ray.remote(num_cpus=0)
    def env_in_a_worker(trial_env):
        return os.environ.get("OMP_NUM_THREADS"), server_environment(os.environ, trial_env)

    raw, env = ray.get(env_in_a_worker.remote({}))
    assert raw is not None  # the trap is real: Ray set it
    assert "OMP_NUM_THREADS" not in env
    _, env = ray.get(env_in_a_worker.remote({"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}))
    assert env["OMP_NUM_THREADS"] == "3" and env["MKL_NUM_THREADS"] == "3"


def test_ctrl_c_on_the_driver_stops_every_remote_torchserve(cluster, tmp_path):
    ctx = a_context(tmp_path, duration_s=20)
    executor = RayExecutor(ctx)

    def interrupt_when_measuring():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(tagged(cluster.tag, servers_only=True)) < 4:
            time.sleep(0.2)  # both servers up (wrapper + JVM at least)
        time.sleep(3.0)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_measuring, daemon=True).start()
    with pytest.raises(Interrupted):
        sweep(ctx, executor)
    rows = RunDir(tmp_path).rows()
    assert {r["status"] for r in rows.values()} == {"interrupted"}
    assert not wait_gone(cluster.tag, servers_only=True, timeout_s=10.0)


def test_a_node_lost_mid_trial_gives_a_failed_row_and_the_sweep_goes_on(cluster, tmp_path):
    ctx = a_context(tmp_path, duration_s=5, max_consecutive_failures=5)
    executor = RayExecutor(ctx)
    worker = next(n for n in cluster.worker_nodes)
    victim = next(n for n in executor.nodes if n.node_id == worker.node_id)

    def remove_worker_mid_trial():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(node is victim for node, _, _ in list(executor._running.values())):
            time.sleep(0.1)
        time.sleep(4.0)  # its server up, its model registering or its load running
        cluster.remove_node(worker)

    remover = threading.Thread(target=remove_worker_mid_trial, daemon=True)
    remover.start()
    try:
        outcome = sweep(ctx, executor)
    finally:
        remover.join()
        cluster.add_node(**NODE)  # the next test gets two nodes again
        cluster.wait_for_nodes()
    df = pd.DataFrame(outcome.rows)
    lost = df[df["error"].astype(str).str.contains("was lost during the trial")]
    assert len(lost) == 1 and victim.label in lost["error"].iloc[0], df[["status", "error"]]
    assert lost["node_id"].iloc[0] == victim.node_id
    ok = df[df["status"] == "ok"]
    assert set(ok["trial_id"]) == set(df["trial_id"])  # the lost trial was run again on the head
    retried = ok[ok["trial_id"] == lost["trial_id"].iloc[0]]
    assert len(retried) == 1 and retried["node_id"].iloc[0] != victim.node_id
    assert (tmp_path / "results.csv").exists()
    assert not wait_gone(cluster.tag, servers_only=True)
