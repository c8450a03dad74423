"""Shared pieces of the end-to-end tests: sweep files in tmp dirs, leak checks by pid."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent


def write_sweep(tmp_path: Path, name: str, **groups) -> Path:
    """A sweep file from its groups. settings.server_warmup_s defaults to 0 here (the
    tests check behaviour, not speed; a test of the server warm-up sets it)."""
    groups["settings"] = {"server_warmup_s": 0, **(groups.get("settings") or {})}
    doc = {"name": name, **groups}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_dirs(out: Path) -> list[Path]:
    if not out.exists():
        return []
    return sorted(p for p in out.iterdir() if (p / "sweep.yaml").exists())


def server_pids(run_dir: Path) -> set[int]:
    """Every pid any server of the run was seen with (written by TorchServe.stop)."""
    pids: set[int] = set()
    for f in (run_dir / "servers").glob("*/pids.json"):
        pids.update(json.loads(f.read_text()))
    return pids


def ts_processes_under(path: Path) -> list[psutil.Process]:
    """TorchServe JVMs / workers whose command line or cwd mentions `path`."""
    out = []
    needle = str(path)
    for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            cwd = p.info["cwd"] or ""
        except psutil.Error:
            continue
        if ("org.pytorch.serve" in cmd or "model_service_worker" in cmd or "torchserve" in cmd) and (
            needle in cmd or cwd.startswith(needle)
        ):
            out.append(p)
    return out


def assert_nothing_left(out: Path) -> None:
    """No pid of any server of any run under `out` is alive, and no TorchServe process runs there."""
    for run_dir in run_dirs(out):
        pids = server_pids(run_dir)
        assert pids, f"{run_dir}: no pids.json written: was every server stopped?"
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"processes left behind: {alive}"
    left = ts_processes_under(out)
    assert not left, f"TorchServe processes left under {out}: {[p.pid for p in left]}"


def find_process(out: Path, marker: str, timeout_s: float = 60.0) -> psutil.Process:
    """Wait for a process of a server under `out` whose command line contains `marker`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in ts_processes_under(out):
            try:
                if marker in " ".join(p.cmdline()):
                    return p
            except psutil.Error:
                continue
        # workers' command lines do not mention the run dir: look among the JVM's children
        for jvm in ts_processes_under(out):
            try:
                for child in jvm.children(recursive=True):
                    if marker in " ".join(child.cmdline()):
                        return child
            except psutil.Error:
                continue
        time.sleep(0.05)
    raise TimeoutError(f"no process matching {marker!r} under {out}")


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def measuring(out: Path, trial_index: int = 0) -> bool:
    """True once the sweep's trial number `trial_index` (0-based) has its directory."""
    for run_dir in run_dirs(out):
        trials = sorted((run_dir / "trials").glob("*"), key=lambda p: p.stat().st_mtime)
        if len(trials) > trial_index:
            return True
    return False


def serving(out: Path, at_least: int = 1) -> bool:
    """True once the servers under `out` have answered `at_least` predictions (their access
    logs say so). The sweeper sends each payload once before the warm-up, so more than that
    means the load engine is running."""
    seen = 0
    for log in out.glob("*/servers/*/logs/access_log.log"):
        seen += log.read_text(errors="replace").count("/predictions/")
        if seen >= at_least:
            return True
    return False


def in_thread(fn, *args) -> threading.Thread:
    errors: list[BaseException] = []

    def wrapper():
        try:
            fn(*args)
        except BaseException as exc:  # surfaced by join_checked
            errors.append(exc)

    t = threading.Thread(target=wrapper, daemon=True)
    t.errors = errors  # type: ignore[attr-defined]
    t.start()
    return t


def sweeper_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sweeper.cli", *args]


def kill(proc: psutil.Process, sig: int = signal.SIGKILL) -> None:
    os.kill(proc.pid, sig)
