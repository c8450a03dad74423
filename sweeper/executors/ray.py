"""`RayExecutor`: trials on the nodes of a Ray cluster (`sweeper run SWEEP --ray [ADDRESS]`).

Ray is an optional extra (`pip install .[ray]`); this module imports it only when an
executor is created. The scheduling is Ray's; this module decides only which node runs
which trial:

- One benchmark per machine at a time: every node offers the custom resource
  `sweeper_slot: 1` (`ray start ... --resources '{"sweeper_slot": 1}'`), and one
  long-lived actor per node (sweeper.executors.node.NodeRunner) holds it for the whole
  sweep, pinned to its node. The TorchServe and its load engine run inside that actor,
  on the same node, as they do locally.
- settings.placement `spread`: each trial runs once, on the next free node (preferring
  one whose server already has the trial's server-level group). `every_node`: each trial
  runs on every node, into `trials/<trial_id>-r<repeat>@<node>/`.
- The model archive goes to the nodes once through Ray's object store; each trial's row
  and files come back as values and the runner writes them, as for a local run. Rows
  gain node_* columns; each node's fingerprint is nodes/<node>/machine.json.
- A node lost mid-trial gives a failed row naming it; under `spread` the trial is run
  once more on another node when one is left. close() (end of sweep, Ctrl-C) stops the
  TorchServes in the actors, then the actors. An actor killed any other way takes its
  TorchServe with it: each server has a reaper that watches the actor's pid
  (sweeper.torchserve.reaper). Ray itself kills only an exiting worker's direct children.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EnvironmentProblem
from ..rundir import node_trial_key, trial_key, write_atomic
from ..trialresult import TrialResult

if TYPE_CHECKING:  # pragma: no cover
    from ..plan import Trial
    from ..context import SweepContext

SLOT = "sweeper_slot"
INSTALL = "--ray needs Ray, an optional extra: pip install 'torchserve-sweeper[ray]' (in this checkout: .venv/bin/pip install -e '.[ray]')"
START = "ray start --head --resources '{\"sweeper_slot\": 1}'"
ACTOR_START_TIMEOUT_S = 300.0
CLOSE_TIMEOUT_S = 30.0
ABORTED_CALL_WAIT_S = 3.0  # Ctrl-C answers within seconds, not at the end of a load window


def import_ray():
    """The ray module; EnvironmentProblem with the install line when it is missing."""
    try:
        import ray
    except ImportError:
        raise EnvironmentProblem(INSTALL) from None
    return ray


def node_label(ip: str, node_id: str) -> str:
    """A node's name in directory names and tables: readable and unique (two nodes of one
    test machine share an ip)."""
    return f"{ip}-{node_id[:6]}"


class _Node:
    def __init__(self, node_id: str, ip: str, actor):
        self.node_id = node_id
        self.ip = ip
        self.actor = actor
        self.label = node_label(ip, node_id)
        self.machine: dict = {}
        self.group: str | None = None  # the server-level group its server runs now
        self.alive = True
        self.queue: collections.deque = collections.deque()  # every_node: its own trials

    def columns(self) -> dict:
        return {
            "node_label": self.label,
            "node_ip": self.ip,
            "node_id": self.node_id,
            "node_hostname": self.machine.get("hostname", ""),
            "node_cpu_model": self.machine.get("cpu_model", ""),
            "node_cores_usable": self.machine.get("cores_usable"),
        }


class RayExecutor:
    def __init__(self, ctx: "SweepContext", address: str = "auto", placement: str | None = None):
        ray = import_ray()
        self.ray = ray
        self.ctx = ctx
        self.placement = placement or ctx.spec.settings.placement
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise EnvironmentProblem(f"cannot connect to a Ray cluster at {address!r}: {line} (start one with: {START})") from None
        self._closed = False
        self.nodes: list[_Node] = []
        self._queue: collections.deque = collections.deque()  # spread: (trial, attempt)
        self._running: dict = {}  # ObjectRef -> (node, trial, attempt)
        self._sent: dict = {}  # ObjectRef -> when the call was made (time.monotonic)
        self._ready: list[TrialResult] = []
        self._fanout: dict[str, int] = {}  # every_node: trial key -> results still to come
        self._held: dict[str, list[TrialResult]] = {}  # every_node: results of unfinished trials
        started = time.monotonic()
        try:
            self._start_actors()
        except BaseException:
            self.close()
            raise
        self.startup_s = time.monotonic() - started  # actors placed, archive shipped, nodes checked
        self._done = self._ok_rows_by_node() if self.placement == "every_node" else {}

    # --- nodes ------------------------------------------------------------------------

    def _start_actors(self) -> None:
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .node import NodeRunner

        found = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(SLOT, 0) >= 1]
        if not found:
            raise EnvironmentProblem(
                f"the Ray cluster has no node with the custom resource {SLOT}: start each node with "
                f"{START} (workers: ray start --address HEAD:6379 --resources '{{\"{SLOT}\": 1}}')"
            )
        archives = ray.put(self._archives())
        remote = ray.remote(NodeRunner)
        for n in found:
            actor = remote.options(
                resources={SLOT: 1},
                num_cpus=0,
                max_concurrency=2,  # abort() while run() is busy
                max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False),
            ).remote(self.ctx, archives)
            self.nodes.append(_Node(n["NodeID"], n.get("NodeManagerAddress", "?"), actor))
        refs = {node.actor.fingerprint.remote(): node for node in self.nodes}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=ACTOR_START_TIMEOUT_S)
        if pending:
            busy = ", ".join(refs[r].label for r in pending)
            raise EnvironmentProblem(
                f"Ray node(s) {busy}: no sweeper actor started within {ACTOR_START_TIMEOUT_S:g} s "
                f"(is another sweep holding their {SLOT}?)"
            )
        run = self.ctx.run
        for ref in ready:
            node = refs[ref]
            try:
                node.machine = ray.get(ref)
            except ray.exceptions.RayError as exc:
                node.alive = False
                print(f"sweeper: Ray node {node.label} is not used: {_first_line(exc)}")
                continue
            write_atomic(run.node_machine_json(node.label), json.dumps(node.machine, indent=2))
        if not self._live():
            raise EnvironmentProblem("no Ray node could start the sweeper's actor")

    def _archives(self) -> dict[str, bytes]:
        """The model archive the trials register, by file name (the nodes get their own copy)."""
        name = self.ctx.archive_file or f"{self.ctx.spec.model.name}.mar"
        path = Path(self.ctx.model_store) / name
        try:
            return {name: path.read_bytes()}
        except OSError as exc:
            raise EnvironmentProblem(f"{path}: cannot read the model archive to ship to the nodes: {exc.strerror or exc}") from None

    def _live(self) -> list[_Node]:
        return [n for n in self.nodes if n.alive]

    def _ok_rows_by_node(self) -> dict[tuple[str, str], dict]:
        """Resume of an every_node run: (trial key, node id) -> its ok row."""
        out = {}
        for row in self.ctx.run.rows().values():
            if row.get("status") == "ok" and row.get("node_id"):
                out[(trial_key(str(row.get("trial_id")), int(row.get("repeat") or 0)), str(row["node_id"]))] = row
        return out

    # --- the protocol -----------------------------------------------------------------

    @property
    def slots(self) -> int:
        return max(1, len(self._live()))

    def submit(self, trial: "Trial") -> None:
        if not self._live():
            self._ready.append(self._failed(trial, None, "no node with a sweeper_slot is left in the Ray cluster"))
            return
        if self.placement == "every_node":
            todo = []
            for node in self._live():
                prior = self._done.get((trial.key, node.node_id))
                if prior is not None:  # resume: this node measured it already
                    self._held.setdefault(trial.key, []).append(TrialResult(trial, prior, {}, node_trial_key(trial.key, node.label), final=False))
                else:
                    todo.append(node)
            self._fanout[trial.key] = len(todo)
            for node in todo:
                node.queue.append(trial)
            if not todo:
                self._release(trial)
        else:
            self._queue.append((trial, 0))
        self._dispatch()

    def wait(self) -> list[TrialResult]:
        ray = self.ray
        while not self._ready and self._running:
            done, _ = ray.wait(list(self._running), num_returns=1)
            more, _ = ray.wait([r for r in self._running if r not in done], num_returns=len(self._running) - 1, timeout=0) if len(self._running) > 1 else ([], [])
            for ref in [*done, *more]:
                self._collect(ref)
            self._dispatch()
        out, self._ready = self._ready, []
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ray = self.ray
        if not ray.is_initialized():
            return
        try:
            busy = {node.node_id: node for node, _, _ in self._running.values()}
            if busy:  # Ctrl-C mid-trial: stop those servers now; the calls' load engines end
                # with their window, or with the actor (Ray kills a worker's direct children)
                _wait_quietly(ray, [n.actor.abort.remote() for n in busy.values()], CLOSE_TIMEOUT_S)
                _wait_quietly(ray, list(self._running), ABORTED_CALL_WAIT_S)
            self._running.clear()
            self._sent.clear()
            _wait_quietly(ray, [n.actor.close.remote() for n in self.nodes if n.alive], CLOSE_TIMEOUT_S)
        finally:
            for node in self.nodes:
                try:
                    ray.kill(node.actor, no_restart=True)
                except Exception:  # noqa: BLE001 - gone already; its reaper stops its server
                    pass
            if self._owns_connection:
                ray.shutdown()

    # --- scheduling -------------------------------------------------------------------

    def _free(self) -> list[_Node]:
        busy = {node.node_id for node, _, _ in self._running.values()}
        return [n for n in self._live() if n.node_id not in busy]

    def _dispatch(self) -> None:
        for node in self._free():
            if self.placement == "every_node":
                if node.queue:
                    self._start(node, node.queue.popleft(), 0)
                continue
            if not self._queue:
                break
            # a node whose server already runs the trial's group saves a restart
            pick = next((i for i, (t, _) in enumerate(self._queue) if t.group_id == node.group), 0)
            trial, attempt = self._queue[pick]
            del self._queue[pick]
            self._start(node, trial, attempt)

    def _start(self, node: _Node, trial: "Trial", attempt: int) -> None:
        ref = node.actor.run.remote(trial)
        self._running[ref] = (node, trial, attempt)
        self._sent[ref] = time.monotonic()
        node.group = trial.group_id

    def _collect(self, ref) -> None:
        ray = self.ray
        node, trial, attempt = self._running.pop(ref)
        sent = self._sent.pop(ref)
        try:
            row, files = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self._lost(node, trial, attempt, exc)
            return
        # what Ray adds to the trial: scheduling the call, shipping the trial out and its
        # files back (the round trip seen here minus the trial's own wall time on the node)
        overhead = time.monotonic() - sent - float(row.get("wall_s") or 0.0)
        row = {**row, **node.columns(), "ray_overhead_s": overhead}
        if row.get("status") != "ok":
            node.group = None  # a failed trial stops its server
        if self.placement == "every_node":
            self._hold(TrialResult(trial, row, files, node_trial_key(trial.key, node.label), final=False))
        else:
            self._ready.append(TrialResult(trial, row, files, trial.key))

    def _lost(self, node: _Node, trial: "Trial", attempt: int, exc: Exception) -> None:
        """The node (or its actor) died mid-trial."""
        node.alive = False
        error = f"Ray node {node.label} ({node.machine.get('hostname', node.ip)}) was lost during the trial: {_first_line(exc)}"
        if self.placement == "every_node":
            self._hold(self._failed(trial, node, error, key=node_trial_key(trial.key, node.label)))
            for queued in list(node.queue):  # its other trials cannot run anywhere else
                self._hold(self._failed(queued, node, f"Ray node {node.label} was lost before the trial ran", key=node_trial_key(queued.key, node.label)))
            node.queue.clear()
            return
        if attempt == 0 and self._live():
            # run it once more elsewhere; this attempt keeps its own row
            self._ready.append(self._failed(trial, node, error + "; retried on another node", key=node_trial_key(trial.key, node.label), final=False))
            self._queue.appendleft((trial, 1))
        else:
            self._ready.append(self._failed(trial, node, error))
        if not self._live():
            while self._queue:
                queued, _ = self._queue.popleft()
                self._ready.append(self._failed(queued, None, "no node with a sweeper_slot is left in the Ray cluster"))

    def _hold(self, result: TrialResult) -> None:
        key = result.trial.key
        self._held.setdefault(key, []).append(result)
        self._fanout[key] -= 1
        if self._fanout[key] <= 0:
            self._release(result.trial)

    def _release(self, trial: "Trial") -> None:
        """every_node: the trial is done on every node; hand its results over together."""
        results = self._held.pop(trial.key, [])
        self._fanout.pop(trial.key, None)
        if not results:
            results = [self._failed(trial, None, "no node with a sweeper_slot is left in the Ray cluster")]
        last = results[-1]
        self._ready.extend(results[:-1])
        self._ready.append(TrialResult(last.trial, last.row, last.artifacts, last.key, final=True))

    def _failed(self, trial: "Trial", node: _Node | None, error: str, key: str | None = None, final: bool = True) -> TrialResult:
        row = {"status": "failed", "error": error, "wall_s": float("nan")}
        if node is not None:
            row.update(node.columns())
        return TrialResult(trial, row, {}, key or trial.key, final=final)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _wait_quietly(ray, refs: list, timeout_s: float) -> None:
    if not refs:
        return
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    for ref in ready:
        try:
            ray.get(ref)
        except Exception:  # noqa: BLE001 - closing: a dead actor or an aborted trial is expected
            pass
