"""`RunDir`: the run directory's layout and its atomic writes. Every module that reads or
writes a run goes through it, so the names below appear nowhere else.

    runs/<sweep>-<YYYYmmdd-HHMMSS>/
        sweep.yaml            the resolved sweep (every default filled in)
        machine.json          fingerprint: CPU model, cores, memory, OS, Python, torch,
                              TorchServe, Java versions
        trials/<trial_id>-r<repeat>/
            config.properties rendered config
            env.json          environment variables given to the server
            logs/             TorchServe logs (ts_log.log, model_log.log, stdout.log)
            requests.csv.gz   raw per-request records of the measured window
            result.json       the row (sweeper.results), written atomically, last
        servers/<group_id>-<n>/  each TorchServe's working directory (pids.json, logs)
        nodes/<node>/machine.json   with --ray: each node's fingerprint (<node>: ip-nodeid)
        results.csv           one row per trial and repeat, rebuilt from result.json files
        results.md            Markdown tables
        baseline.csv          in-process ceilings (sweeper.ceiling)
        search.journal        an optuna search's study (Optuna's journal file), what --resume continues
        target_before.json    with a target (a TorchServe the sweeper did not start): what it had
                              registered before the first trial, what restoring it goes back to
        target_after.json     the same after the sweeper restored it, and what still differs
        report.html/.md       written by sweeper.report
        duel.json             sweeper duel: the top two measured head to head (sweeper.duel)

result.json is the store's format: a trial is finished when its result.json exists, and
the tables are always rebuilt from those files.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Mapping

from .errors import EnvironmentProblem

RESULT_FILE = "result.json"


def trial_key(trial_id: str, repeat: int) -> str:
    """A trial's directory name and resume key: one per trial and repeat."""
    return f"{trial_id}-r{repeat}"


def node_trial_key(key: str, node: str) -> str:
    """The directory of one trial run on one Ray node (settings.placement every_node), or of
    an attempt lost with its node."""
    return f"{key}@{node}"


def _clean(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_result(trial_dir: Path, row: Mapping[str, object]) -> Path:
    """Write result.json atomically (temporary file in the same dir, fsync, rename)."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    data = json.dumps({k: _clean(v) for k, v in row.items()}, indent=1, sort_keys=False, allow_nan=False)
    fd, tmp = tempfile.mkstemp(dir=trial_dir, prefix=".result-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, trial_dir / RESULT_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return trial_dir / RESULT_FILE


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace `path` in one step: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class RunDir:
    """One run directory. Paths are properties; nothing is created until written."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def create(cls, parent: Path, name: str, now: datetime) -> "RunDir":
        """A new `<parent>/<name>-<timestamp>`, with -1, -2, ... when two runs start in the
        same second."""
        stamp = now.strftime("%Y%m%d-%H%M%S")
        for n in range(100):
            path = parent / (f"{name}-{stamp}" + (f"-{n}" if n else ""))
            try:
                path.mkdir(parents=True, exist_ok=False)
                return cls(path)
            except FileExistsError:
                continue
        raise EnvironmentProblem(f"{parent}: cannot create a new run directory for {name}-{stamp}")

    # --- the layout ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sweep_yaml(self) -> Path:
        return self.path / "sweep.yaml"

    @property
    def machine_json(self) -> Path:
        return self.path / "machine.json"

    @property
    def results_csv(self) -> Path:
        return self.path / "results.csv"

    @property
    def results_md(self) -> Path:
        return self.path / "results.md"

    @property
    def baseline_csv(self) -> Path:
        return self.path / "baseline.csv"

    @property
    def search_journal(self) -> Path:
        """An optuna search's study (sweeper.search.optuna): Optuna's journal file."""
        return self.path / "search.journal"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    @property
    def verify_json(self) -> Path:
        """`sweeper verify`'s result (sweeper.verify)."""
        return self.path / "verify.json"

    @property
    def duel_json(self) -> Path:
        """`sweeper duel`'s result: the top two measured head to head (sweeper.duel)."""
        return self.path / "duel.json"

    @property
    def target_before_json(self) -> Path:
        """With a target: what it had registered before the first trial (sweeper.attach)."""
        return self.path / "target_before.json"

    @property
    def target_after_json(self) -> Path:
        """With a target: what it has registered after the sweeper restored it."""
        return self.path / "target_after.json"

    @property
    def trials_dir(self) -> Path:
        return self.path / "trials"

    def trial_dir(self, key: str) -> Path:
        return self.trials_dir / key

    @property
    def nodes_dir(self) -> Path:
        return self.path / "nodes"

    def node_machine_json(self, node: str) -> Path:
        """A Ray node's fingerprint (sweeper.executors.ray); `node` is its label."""
        return self.nodes_dir / node / "machine.json"

    def node_machines(self) -> dict[str, dict]:
        """node label -> machine.json of every node of a Ray run ({} for a local run)."""
        out = {}
        for path in sorted(self.nodes_dir.glob("*/machine.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                out[path.parent.name] = data
        return out

    def server_dir(self, name: str) -> Path:
        """Working directory of one TorchServe instance."""
        return self.path / "servers" / name

    # --- reading -------------------------------------------------------------------------

    def rows(self) -> dict[str, dict]:
        """key ('<trial_id>-r<repeat>') -> row, from every trials/*/result.json."""
        out = {}
        for path in sorted(self.trials_dir.glob(f"*/{RESULT_FILE}")):
            try:
                row = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a half-written file cannot exist (atomic rename); skip anything foreign
            out[path.parent.name] = row
        return out

    def result(self, key: str) -> dict:
        """One trial's row; {} when it has none (or an unreadable one)."""
        try:
            data = json.loads((self.trial_dir(key) / RESULT_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def record_machine(self, fingerprint: Mapping[str, object], at: str) -> None:
        """machine.json: the fingerprint of the machine the run started on. A resumed run
        keeps it and adds the resuming machine's, with when it resumed, to `resumed_on`:
        the figures of one run may then come from two machines, and the report says so."""
        first = self.machine()
        if not first:
            write_atomic(self.machine_json, json.dumps(dict(fingerprint), indent=2))
            return
        first.setdefault("resumed_on", []).append({"at": at, **fingerprint})
        write_atomic(self.machine_json, json.dumps(first, indent=2))

    def machine(self) -> dict:
        """machine.json; {} when missing or unreadable."""
        try:
            data = json.loads(self.machine_json.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def target_before(self) -> dict:
        """target_before.json; {} when missing or unreadable."""
        return _read_json(self.target_before_json)

    def target_after(self) -> dict:
        """target_after.json; {} when missing or unreadable."""
        return _read_json(self.target_after_json)

    def write_target_before(self, snapshot: Mapping[str, object]) -> None:
        write_atomic(self.target_before_json, json.dumps(dict(snapshot), indent=2, sort_keys=True))

    def write_target_after(self, snapshot: Mapping[str, object]) -> None:
        write_atomic(self.target_after_json, json.dumps(dict(snapshot), indent=2, sort_keys=True))

    def record_target(self, info: Mapping[str, object], at: str) -> None:
        """machine.json's `target`: what the target said of itself when the run started
        (a resumed run adds what it said then to the last `resumed_on` entry, or to
        `target_resumed` without one)."""
        data = self.machine()
        if "target" not in data:
            data["target"] = dict(info)
        elif data.get("resumed_on"):
            data["resumed_on"][-1]["target"] = dict(info)
        else:
            data.setdefault("target_resumed", []).append({"at": at, **info})
        write_atomic(self.machine_json, json.dumps(data, indent=2))

    def cores(self) -> int | None:
        """The cores the run's machine could use (machine.json cores_usable)."""
        try:
            return int(self.machine()["cores_usable"])
        except (KeyError, TypeError, ValueError):
            return None

    # --- writing -------------------------------------------------------------------------

    def write_result(self, key: str, row: Mapping[str, object]) -> Path:
        return write_result(self.trial_dir(key), row)

    def write_files(self, key: str, files: Mapping[str, bytes]) -> None:
        """A trial's files (name relative to its directory -> bytes), each atomically."""
        base = self.trial_dir(key)
        for name, data in files.items():
            rel = PurePosixPath(name)
            if rel.is_absolute() or ".." in rel.parts or name == RESULT_FILE:
                raise ValueError(f"{name!r}: not a file an executor may write into a trial directory")
            write_atomic(base.joinpath(*rel.parts), data)

    def write_trial(self, key: str, artifacts: Mapping[str, bytes], row: Mapping[str, object]) -> Path:
        """The trial's artifacts, then its row as result.json (last: it marks the trial
        finished, so a crash in between leaves a trial that is run again)."""
        self.write_files(key, artifacts)
        return self.write_result(key, row)
