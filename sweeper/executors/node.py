"""`NodeRunner`: what runs on one node of a Ray cluster (sweeper.executors.ray makes it a
Ray actor; this module does not import Ray, so it is tested as plain Python).

It owns a private directory on the node: the model archives shipped from the driver (no
shared filesystem needed), and a scratch run directory where the node's TorchServes keep
their working directories. Trials run through a `LocalExecutor` on that node (server
reuse per group, re-registration when per-model settings change), and each trial's row
and files go back to the driver as values; nothing the driver needs stays on the node.

What depends on the machine is checked here, on the node, not on the driver: Java, the
CPUs named in settings.server_cpus/client_cpus, the listening address and fixed ports.
A node that fails a check fails its trials with one line naming the node and the rule.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ..errors import EnvironmentProblem, SweeperError
from ..machine import bind_problem, fingerprint, is_loopback, machine_cpus
from ..plan import Trial

if TYPE_CHECKING:  # pragma: no cover
    from ..context import SweepContext


def node_problem(settings) -> str | None:
    """Why trials cannot run on this machine (None when they can)."""
    from ..torchserve.process import check_java, check_ports

    try:
        check_java()
    except EnvironmentProblem as exc:
        return str(exc)
    cpus = machine_cpus()
    for key in ("server_cpus", "client_cpus"):
        missing = [c for c in getattr(settings, key) or [] if c not in cpus]
        if missing:
            return f"settings.{key}: CPU {missing[0]} does not exist here (this node has CPUs {min(cpus)}-{max(cpus)})"
    if not is_loopback(settings.host):
        problem = bind_problem(settings.host)
        if problem:
            return f"settings.host: cannot listen on {settings.host} here: {problem}"
    if settings.base_port:
        try:
            check_ports(settings.host, settings.base_port)
        except EnvironmentProblem as exc:
            return f"settings.base_port: {exc}"
    return None


class NodeRunner:
    """One per node, for the whole sweep; runs one trial at a time."""

    def __init__(self, ctx: "SweepContext", archives: Mapping[str, bytes]):
        from .local import LocalExecutor

        self.root = Path(tempfile.mkdtemp(prefix="sweeper-node-"))
        store = self.root / "model_store"
        store.mkdir()
        for name, data in archives.items():
            (store / name).write_bytes(data)
        self.ctx = replace(ctx, run_dir=self.root / "run", model_store=store)
        self.executor = LocalExecutor(self.ctx)
        self.problem = node_problem(ctx.spec.settings)
        self._fingerprint = fingerprint()

    def fingerprint(self) -> dict:
        return dict(self._fingerprint)

    def run(self, trial: Trial) -> tuple[dict, dict[str, bytes]]:
        """(row, files) of one trial; a problem of this node is a failed row."""
        started = time.monotonic()
        host = self._fingerprint.get("hostname") or socket.gethostname()
        if self.problem:
            return self._failed(f"node {host}: {self.problem}", started), {}
        try:
            result = self.executor.run(trial)
        except (SweeperError, OSError) as exc:
            # a machine problem that only shows at start (a CPU, a port, a missing binary)
            self.executor.close()
            line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return self._failed(f"node {host}: {line}", started), {}
        return dict(result.row), dict(result.artifacts)

    @staticmethod
    def _failed(error: str, started: float) -> dict:
        return {
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "status": "failed",
            "error": error,
            "wall_s": time.monotonic() - started,
        }

    def abort(self) -> None:
        """Stop the running trial's TorchServe now (called from a second thread while
        run() is busy): its process group goes, and run() returns a failed row."""
        server = self.executor.server
        pgid = getattr(server, "_pgid", None) if server is not None else None
        if pgid:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                time.sleep(0.5)

    def close(self) -> None:
        try:
            self.executor.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def pid(self) -> int:
        return os.getpid()
