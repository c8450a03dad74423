"""Reading a run directory for the report: results.csv, machine.json, sweep.yaml and the
details of failed trials (error line, log tail). Also owns redaction: nothing that looks
like a token or key leaves this module.

The layout is sweeper.rundir's and the columns sweeper.results'; this module only reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sweeper.defaults import MIN_SUCCESS_RATE
from sweeper.errors import SweeperError
from sweeper.rundir import RESULT_FILE, RunDir, trial_key

# A log tail is for a human looking for the cause; a few dozen lines is enough and keeps a
# report with many failures small.
LOG_TAIL_LINES = 40
LOG_TAIL_CHARS = 6000
# Only the first failures get their log tail inline; the rest are listed with their error.
MAX_FAILURE_TAILS = 20

_SECRET_KEY = re.compile(r"(?i)token|secret|passw|credential|private|auth|(?:^|[_.-])keys?(?:$|[_.-])|apikey")
_SECRET_IN_TEXT = [
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1[redacted]"),
    (
        re.compile(r"(?i)((?:token|secret|password|api[_-]?key|key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"),
        r"\1[redacted]",
    ),
]
REDACTED = "[redacted]"

# Columns whose CSV text must become booleans (pandas reads "True"/"False"/"" as objects).
_BOOL_COLUMNS = ("client_bound", "client_unstable")


@dataclass(frozen=True)
class Failure:
    """One failed trial repeat, as shown in the report."""

    trial_id: str
    repeat: int
    error: str
    log_tail: str  # already redacted; may be empty
    log_source: str  # where the tail came from (relative path), empty if none


@dataclass(frozen=True)
class RunData:
    run_dir: Path
    results: pd.DataFrame  # one row per trial and repeat, as in results.csv
    machine: dict[str, Any]  # redacted
    sweep: dict[str, Any]  # redacted


def is_secret_key(name: str) -> bool:
    return bool(_SECRET_KEY.search(str(name)))


def redact(value: Any) -> Any:
    """Drop the values of secret-looking keys, recursively; scrub secret-looking text."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_text(text: str) -> str:
    for pattern, repl in _SECRET_IN_TEXT:
        text = pattern.sub(repl, text)
    return text


def read_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    csv = run.results_csv
    if not csv.is_file():
        raise SweeperError(f"{run_dir}: no results.csv here; is this a run directory?")
    return RunData(
        run_dir=run_dir,
        results=read_results(csv),
        machine=redact(_read_json(run.machine_json)),
        sweep=redact(read_yaml(run.sweep_yaml)),
    )


def read_results(csv: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(csv, keep_default_na=True)
    except pd.errors.EmptyDataError:
        # A sweep interrupted before its first trial leaves an empty table.
        df = pd.DataFrame()
    for name in _BOOL_COLUMNS:
        if name in df.columns:
            df[name] = df[name].map(_to_bool).astype(bool)
    for name in ("status", "error", "trial_id", "client_bound_reason", "load_mode"):
        if name in df.columns:
            df[name] = df[name].astype("string").fillna("")
    # Secret-looking environment variables are never shown, whatever the sweep varied.
    secret_env = [c for c in df.columns if c.startswith("param_env_") and is_secret_key(c[10:])]
    for name in secret_env:
        df[name] = REDACTED
    return df


def _to_bool(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return False
    return str(value).strip().lower() in ("true", "1", "yes")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return {"(unreadable)": f"{path.name}: {err}"}
    return data if isinstance(data, dict) else {"value": data}


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        return {"(unreadable)": f"{path.name}: {err}"}
    return data if isinstance(data, dict) else {}


def slo_from_sweep(sweep: dict[str, Any]) -> float | None:
    settings = sweep.get("settings")
    if isinstance(settings, dict):
        value = settings.get("slo_p99_ms")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def min_success_from_sweep(sweep: dict[str, Any] | None) -> float:
    """The run's settings.min_success_rate (its default where the file does not set it):
    the success floor of a recommendation, as of the search and the trials themselves."""
    settings = sweep.get("settings") if isinstance(sweep, dict) else None
    value = settings.get("min_success_rate") if isinstance(settings, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    return MIN_SUCCESS_RATE


def read_failures(data: RunData) -> list[Failure]:
    """Failed trial repeats in table order; log tails for the first MAX_FAILURE_TAILS only."""
    df = data.results
    if df.empty or "status" not in df.columns:
        return []
    failed = df[df["status"] == "failed"]
    out: list[Failure] = []
    for i, row in enumerate(failed.itertuples(index=False)):
        trial_id = str(getattr(row, "trial_id", ""))
        repeat = _int_or_zero(getattr(row, "repeat", 0))
        error = redact_text(str(getattr(row, "error", "") or ""))
        tail, source = ("", "")
        if i < MAX_FAILURE_TAILS:
            tail, source = _log_tail(RunDir(data.run_dir), trial_key(trial_id, repeat))
        out.append(Failure(trial_id, repeat, error, redact_text(tail), source))
    return out


def _int_or_zero(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _log_tail(run: RunDir, key: str) -> tuple[str, str]:
    """The result.json ``log_tail`` if there is one, else the end of the server's log."""
    trial_dir = run.trial_dir(key)
    tail = run.result(key).get("log_tail")
    if isinstance(tail, str) and tail.strip():
        return _clip(tail), f"{key}/{RESULT_FILE}"
    logs = trial_dir / "logs"
    for name in ("ts_log.log", "model_log.log"):
        path = logs / name
        if path.is_file():
            return _clip(_read_end(path)), f"{trial_dir.name}/logs/{name}"
    return "", ""


def _read_end(path: Path, max_bytes: int = 64 * 1024) -> str:
    # Server logs can be large; only the end matters.
    with path.open("rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - max_bytes))
        return fh.read().decode("utf-8", errors="replace")


def _clip(text: str) -> str:
    lines = text.rstrip("\n").splitlines()[-LOG_TAIL_LINES:]
    out = "\n".join(lines)
    return out[-LOG_TAIL_CHARS:]
