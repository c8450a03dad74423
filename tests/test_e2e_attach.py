"""End-to-end: the sweeper attached to a real TorchServe it did not start.

The target is started here, outside the sweeper, as a user would: plain `torchserve --start
--ncs --ts-config ... --model-store ...` in its own working directory with its own TMPDIR
(its pid file lives there, so no other instance's `--stop` can reach it), token
authorization on, metrics_mode=prometheus, enable_model_api=true. It serves two models:
mlp (ours) and textclf (a handler this project did not write, tests/foreign_model.py).
The sweeper runs as a subprocess (`sweeper run ... --target`) and must leave: textclf
untouched (same worker pid), mlp's settings as they were, the server answering, and no
process of its own. One target for the module; it is stopped by its process group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest
import yaml

from e2e_helpers import ROOT, sweeper_cmd, wait_for
from foreign_model import build_archive
from handlers.models import MODELS
from sweeper.torchserve.process import free_ports, torchserve_executable

pytestmark = pytest.mark.e2e

TAG = "SWEEPER_ATTACH_TEST"  # in the sweeper's environment only: what it leaves is found by it


class Target:
    """A TorchServe started the way a user starts one, owned by this test module."""

    def __init__(self, base: Path):
        self.base = base
        self.work, self.tmp, self.store = base / "work", base / "tmp", base / "store"
        for d in (self.work, self.tmp, self.store):
            d.mkdir(parents=True, exist_ok=True)
        self.ports = free_ports("127.0.0.1", 3)
        self.inference, self.management, self.metrics = (f"http://127.0.0.1:{p}" for p in self.ports)
        self.pgid: int | None = None

    def start(self) -> None:
        (self.work / "config.properties").write_text(
            f"inference_address={self.inference}\nmanagement_address={self.management}\nmetrics_address={self.metrics}\n"
            "metrics_mode=prometheus\nenable_model_api=true\ndefault_workers_per_model=1\n"
        )
        env = {**os.environ, "TMPDIR": str(self.tmp), "TEMP": str(self.tmp)}
        env.pop(TAG, None)
        with open(self.base / "stdout.log", "ab") as out:  # --start leaves the JVM on the caller's stdout
            proc = subprocess.Popen(
                [torchserve_executable(), "--start", "--ncs", "--ts-config", "config.properties",
                 "--model-store", str(self.store)],
                cwd=self.work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pgid = proc.pid
        proc.wait(timeout=60)
        wait_for(lambda: (self.work / "key_file.json").exists() and self._healthy(), 60, "the target's /ping")

    def _healthy(self) -> bool:
        try:
            r = httpx.get(self.inference + "/ping", headers=self.headers("inference"), timeout=2)
            return r.status_code == 200 and r.json().get("status") == "Healthy"
        except (httpx.HTTPError, ValueError, KeyError, OSError):
            return False

    def headers(self, api: str) -> dict:
        keys = json.loads((self.work / "key_file.json").read_text())
        return {"Authorization": f"Bearer {keys[api]['key']}"}

    def register(self, url: str, **params) -> None:
        r = httpx.post(self.management + "/models", params={"url": url, "synchronous": "true", **params},
                       headers=self.headers("management"), timeout=120)
        assert r.status_code == 200, r.text

    def models(self) -> dict[str, dict]:
        r = httpx.get(self.management + "/models", headers=self.headers("management"), timeout=10)
        out = {}
        for m in r.json()["models"]:
            d = httpx.get(f"{self.management}/models/{m['modelName']}", headers=self.headers("management"), timeout=10).json()
            if isinstance(d, list):  # not an error: the model may go between the two calls
                out[m["modelName"]] = d[0]
        return out

    def settings(self) -> dict:
        """Each model's settings and its workers' pids."""
        return {n: {k: d[k] for k in ("modelUrl", "minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout")}
                | {"pids": sorted(w["pid"] for w in d["workers"])} for n, d in self.models().items()}

    def processes(self) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == self.pgid:
                    out.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return out

    def stop(self) -> None:
        if self.pgid is None:
            return
        procs = self.processes()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            _, procs = psutil.wait_procs(procs, timeout=10)
            if not procs:
                break


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    base = tmp_path_factory.mktemp("target")
    t = Target(base)
    shutil.copy(ROOT / "model_store" / "mlp.mar", t.store / "mlp.mar")
    build_archive(t.store)  # textclf.mar
    try:
        t.start()
        t.register("mlp.mar", model_name="mlp", initial_workers=1, batch_size=1, max_batch_delay=20)
        t.register("textclf.mar", model_name="textclf", initial_workers=1)
        yield t
    finally:
        t.stop()
    assert not t.processes(), "the target outlived its process group's stop"


def write_sweep(tmp_path: Path, t: Target) -> Path:
    doc = {
        "name": "attached",
        "model": {"registered": "mlp", "batch_size": [1, 4], "min_workers": [1, 2]},
        "load": {"mode": "closed", "concurrency": 4, "duration_s": 1},
        "settings": {"warmup_s": 0, "server_warmup_s": 0, "registration_warmup_s": 0.5},
        "target": {"management": t.management, "metrics": t.metrics, "key_file": str(t.work / "key_file.json")},
    }
    path = tmp_path / "attached.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def tagged(tag: str) -> list[psutil.Process]:
    """Live processes (other than this one) whose environment carries the tag."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.status() != psutil.STATUS_ZOMBIE and p.environ().get(TAG) == tag:
                out.append(p)
        except psutil.Error:
            continue
    return out


def sweeper(tag: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(sweeper_cmd(*args), cwd=ROOT, env={**os.environ, TAG: tag}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def the_run(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if (p / "sweep.yaml").exists()]
    return run


def left_as_found(t: Target, before: dict) -> None:
    assert t.settings() == before  # textclf's worker is the same process: never restarted
    r = httpx.post(f"{t.inference}/predictions/mlp", content=MODELS["mlp"].example_request(),
                   headers={**t.headers("inference"), "Content-Type": "application/json"}, timeout=30)
    assert t._healthy() and r.status_code == 200, r.text


@pytest.mark.timeout(150)
def test_a_sweep_attached_to_a_running_torchserve_leaves_it_as_found(target, tmp_path):
    before = target.settings()
    assert set(before) == {"mlp", "textclf"} and before["mlp"]["minWorkers"] == 1
    tag = uuid.uuid4().hex
    out = tmp_path / "runs"
    started = time.monotonic()
    proc = sweeper(tag, "run", str(write_sweep(tmp_path, target)), "--target", target.inference, "--out", str(out),
                   "--no-report")
    try:
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    took = time.monotonic() - started
    assert proc.returncode == 0, log
    wait_for(lambda: not tagged(tag), 10, "no process of the sweeper's left")
    left_as_found(target, before)
    run = the_run(out)
    df = pd.read_csv(run / "results.csv")
    assert len(df) == 4 and (df["status"] == "ok").all(), df[["status", "error"]]
    assert (df["client_ok"] > 0).all() and (df["server_requests"] == df["client_ok"]).all()
    names = dict(zip(zip(df["param_model_batch_size"], df["param_model_min_workers"]), df["server_model_name"]))
    assert names == {(1, 1): "mlp", (1, 2): "mlp", (4, 1): "mlp_sweeper_1", (4, 2): "mlp_sweeper_1"}
    assert (df["param_model_max_batch_delay_ms"] == 20).all()  # mlp's own, left out of the sweep
    b4 = df[df["param_model_batch_size"] == 4]
    assert (b4["client_batch_size_mean"] > 1).all()  # the copy batches: batch 4 under 4 in flight
    # the target is this machine's: its processes were sampled (frontend and the trial's workers)
    assert (df["proc_cpu_pct"] > 0).all() and (df["proc_cpu_pct_workers"] > 0).all()
    machine = json.loads((run / "machine.json").read_text())
    assert machine["target"]["torchserve"] == "0.12.0" and machine["target"]["processes_sampled"] is True
    assert machine["target"]["model"]["batchSize"] == 1
    after = json.loads((run / "target_after.json").read_text())
    assert after["restored"] is True and after["differences"] == []
    assert "target left as found" in log
    print(f"attached sweep of 4 trials: {took:.1f} s")


@pytest.mark.timeout(180)
def test_a_sigkilled_sweeper_is_finished_and_the_target_restored_by_resume(target, tmp_path):
    before = target.settings()
    tag = uuid.uuid4().hex
    out = tmp_path / "runs"
    path = write_sweep(tmp_path, target)
    proc = sweeper(tag, "run", str(path), "--target", target.inference, "--out", str(out), "--no-report")
    try:
        # killed while a trial runs on the sweeper's own registration, with mlp given back
        wait_for(lambda: "mlp_sweeper_1" in target.models(), 90, "the sweeper's registration on the target")
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: not tagged(tag), 15, "the killed sweeper's engines gone")
    assert "mlp_sweeper_1" in target.models()  # what a SIGKILL leaves: nothing could clean up
    run = the_run(out)
    assert (run / "target_before.json").exists() and not (run / "target_after.json").exists()
    resumed = sweeper(tag, "run", "--resume", str(run), "--no-report")
    try:
        log, _ = resumed.communicate(timeout=120)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    assert resumed.returncode == 0, log
    assert "undid what the interrupted run left (unregistered mlp_sweeper_1" in log
    wait_for(lambda: not tagged(tag), 10, "no process of the sweeper's left")
    left_as_found(target, before)
    df = pd.read_csv(run / "results.csv")
    assert len(df) == 4 and (df["status"] == "ok").all(), df[["status", "error"]]
    after = json.loads((run / "target_after.json").read_text())
    assert after["restored"] is True and after["differences"] == []
