"""Per-trial result files, the tidy results table and its Markdown rendering.

A run directory looks like::

    runs/<sweep>-<YYYYmmdd-HHMMSS>/
        sweep.yaml            the resolved sweep (every default filled in)
        machine.json          fingerprint: CPU model, cores, memory, OS, Python, torch,
                              TorchServe, Java versions
        trials/<trial_id>-r<repeat>/
            config.properties rendered config
            env.json          environment variables given to the server
            logs/             TorchServe logs (ts_log.log, model_log.log, ...)
            requests.csv.gz   raw per-request records of the measured window
            result.json       the row (below), written atomically when the trial ends
        results.csv           one row per trial and repeat, rebuilt from result.json files
        results.md            Markdown tables
        report.html/.md       written by sweeper.report

Columns of results.csv (flat, prefixed, units in names). NaN/empty where not applicable.

identity:  sweep, run_id, trial_id (hash of the parameters), repeat, group_id (server-level
           group: trials sharing one JVM), status ("ok" | "failed" | "interrupted"),
           error (one line), started_at (ISO 8601 UTC), wall_s (whole trial incl. model
           registration and warm-up), measure_s (measured load window), overhead_s
           (wall_s - measure_s)
param_*:   param_model_name, param_model_batch_size, param_model_max_batch_delay_ms,
           param_model_min_workers, param_model_max_workers, param_model_response_timeout_s,
           param_server_<config.properties key> (e.g. param_server_number_of_netty_threads),
           param_env_<VAR> (e.g. param_env_OMP_NUM_THREADS)
load_*:    load_mode ("closed" | "open"), load_concurrency, load_rate_rps, load_duration_s,
           load_requests, load_processes
client_*:  measured by the load engine: client_requests, client_ok, client_errors,
           client_status_counts ("200:950 503:50"), client_success_rate (0..1),
           client_throughput_rps (2xx per second of the measured window),
           client_latency_{mean,p50,p90,p99,max}_ms (2xx only; open loop: from the
           scheduled send time), client_target_rate_rps, client_achieved_rate_rps,
           client_send_lag_{p50,p99,max}_ms, client_cpu_pct (engine CPU, 100 = one core),
           client_bound (bool: the client, not the server, set the pace),
           client_bound_reason, client_batch_size_mean (served batch size from the
           handler's X-Batch-Size header), client_handler_ms_mean (X-Handler-Ms)
server_*:  from /metrics counter deltas over the measured window: server_requests,
           server_inference_latency_mean_ms, server_queue_latency_mean_ms
proc_*:    psutil samples of the server's process tree (JVM + workers) during the window:
           proc_cpu_pct (100 = one core), proc_cpu_pct_frontend, proc_cpu_pct_workers,
           proc_rss_mb (peak), proc_threads (peak), proc_ctx_voluntary,
           proc_ctx_involuntary, proc_ctx_per_req ((voluntary + involuntary) / client_ok)
ceiling:   with settings.baseline or `sweeper baseline RUN_DIR` (sweeper.analysis.efficiency):
           baseline_samples_per_s (in-process samples/s of the same model and handler at
           the trial's batch size and torch threads), efficiency (client_throughput_rps /
           baseline_samples_per_s; closed loop only)
"""

from __future__ import annotations



import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from .analysis.aggregate import aggregate_trials

RESULT_FILE = "result.json"
IDENTITY = ["sweep", "run_id", "seq", "trial_id", "repeat", "group_id", "status", "error", "started_at"]
TIMING = ["wall_s", "measure_s", "overhead_s"]
PREFIXES = ("param_", "load_", "client_", "server_", "proc_")


def _clean(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_result(trial_dir: Path, row: dict) -> Path:
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


def load_rows(run_dir: Path) -> dict[str, dict]:
    """key ('<trial_id>-r<repeat>') -> row, from every trials/*/result.json."""
    out = {}
    for path in sorted((run_dir / "trials").glob(f"*/{RESULT_FILE}")):
        try:
            row = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a half-written file cannot exist (atomic rename); skip anything foreign
        out[path.parent.name] = row
    return out


def column_order(columns: list[str]) -> list[str]:
    ordered = [c for c in IDENTITY if c in columns]
    for prefix in PREFIXES:
        ordered += [c for c in columns if c.startswith(prefix)]
    ordered += [c for c in TIMING if c in columns]
    ordered += [c for c in columns if c not in ordered and c != "log_tail"]
    return ordered


def table(run_dir: Path) -> pd.DataFrame:
    rows = list(load_rows(run_dir).values())
    if not rows:
        return pd.DataFrame(columns=IDENTITY)
    df = pd.DataFrame(rows)
    df = df.sort_values(["seq", "repeat"], kind="stable") if "seq" in df else df
    return df[column_order(list(df.columns))].reset_index(drop=True)


def varying_columns(df: pd.DataFrame) -> list[str]:
    """The param_*/load_* columns that vary in this run (plus the model name)."""
    cols = [c for c in df.columns if c.startswith(("param_", "load_"))]
    varying = [c for c in cols if df[c].astype(str).nunique(dropna=False) > 1]
    return varying or [c for c in cols if c == "param_model_name"]


def _fmt(value: object, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _short(col: str) -> str:
    for prefix in ("param_model_", "param_server_", "param_env_", "param_", "load_"):
        if col.startswith(prefix):
            return col[len(prefix) :]
    return col


def _mean(row: pd.Series, col: str, digits: int = 1) -> str:
    return _fmt(float(row.get(col + "_mean", math.nan)), digits)


def _spread(row: pd.Series, col: str, digits: int = 1) -> str:
    """mean, with (min-max) when more than one repeat was measured."""
    mean = _mean(row, col, digits)
    if row.get("n_ok", 1) > 1:
        return f"{mean} ({_fmt(float(row[col + '_min']), digits)}-{_fmt(float(row[col + '_max']), digits)})"
    return mean


def markdown(df: pd.DataFrame, title: str = "", cores: int | None = None) -> str:
    """results.md: the aggregated table (repeats as mean (min-max)) and failed trials."""
    lines = [f"# {title}" if title else "# Results", ""]
    if df.empty:
        return "\n".join(lines + ["No trials finished.", ""])
    n_ok = int((df["status"] == "ok").sum())
    lines.append(f"{len(df)} trial runs: {n_ok} ok, {len(df) - n_ok} failed or interrupted.")
    lines.append("Figures are means over repeats with (min-max) when repeated; latency is client-side, ms.")
    lines.append("")
    agg = aggregate_trials(df)
    agg = agg[agg["n_ok"] > 0]
    has_efficiency = "efficiency" in df
    if not agg.empty:
        params = varying_columns(df)
        head = [_short(c) for c in params] + [
            "throughput req/s",
            "success",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "served batch",
            "ctx sw/req",
        ] + (["efficiency"] if has_efficiency else [])
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        bound_notes = []
        for _, r in agg.iterrows():
            cells = [f"{r[c]:g}" if isinstance(r[c], float) and not math.isnan(r[c]) else _fmt(r[c]) for c in params]
            cells += [
                _spread(r, "client_throughput_rps"),
                _mean(r, "client_success_rate", 3),
                _spread(r, "client_latency_p50_ms"),
                _mean(r, "client_latency_p90_ms"),
                _spread(r, "client_latency_p99_ms"),
                _mean(r, "client_batch_size_mean"),
                _mean(r, "proc_ctx_per_req"),
            ] + ([_mean(r, "efficiency", 2)] if has_efficiency else [])
            if bool(r.get("client_bound", False)):
                cells[0] = "⚠ " + cells[0]
                bound_notes.append(r["trial_id"])
            lines.append("| " + " | ".join(cells) + " |")
        if bound_notes:
            lines.append("")
            lines.append(
                f"⚠ WARNING: {len(bound_notes)} trial(s) were client-bound (the load engine, not the "
                f"server, set the pace): {', '.join(bound_notes)}. Their figures understate the server."
            )
    if cores:
        from .analysis.findings import thread_findings

        found = thread_findings(df, cores)
        if found:
            lines += ["", "## Finding (computed from this run)", ""] + [f"- {s}" for s in found]
    failed = df[df["status"] != "ok"]
    if not failed.empty:
        lines += ["", "## Failed or interrupted trials", "", "| trial | repeat | status | error |", "|---|---|---|---|"]
        for _, r in failed.iterrows():
            err = str(r.get("error", "")).replace("|", "\\|")
            lines.append(f"| {r['trial_id']} | {r['repeat']} | {r['status']} | {err} |")
    return "\n".join(lines) + "\n"


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cores(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "machine.json").read_text())["cores_usable"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_tables(run_dir: Path) -> list[dict]:
    """Rebuild results.csv and results.md from the per-trial files."""
    from .analysis.efficiency import add_efficiency

    df = add_efficiency(table(run_dir), run_dir, _cores(run_dir))
    _atomic_text(run_dir / "results.csv", df.to_csv(index=False))
    title = str(df["sweep"].iloc[0]) if not df.empty and "sweep" in df else run_dir.name
    _atomic_text(run_dir / "results.md", markdown(df, f"{title}: {run_dir.name}", cores=_cores(run_dir)))
    return df.to_dict("records")
