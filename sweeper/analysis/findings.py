"""The thread-contention finding, in words computed from a run's data.

Only what the data says: best and worst configuration and their ratio, the throughput
change when workers x torch threads exceed the cores, and how closely context switches
per request track throughput (Spearman rank correlation). Nothing here is hard-coded.

Each figure carries its 95% bootstrap interval (sweeper.analysis.confidence: the
measurement noise of every configuration resampled over its windows and repeats) and says
when it cannot be told from noise: a finding from one repeat on a shared machine must not
read as a fact.
"""

from __future__ import annotations

import math

import pandas as pd

from ..defaults import MIN_SUCCESS_RATE
from . import confidence as ci

WORKER_COLUMNS = ("param_server_default_workers_per_model", "param_model_min_workers")
THREAD_COLUMNS = ("param_env_OMP_NUM_THREADS", "param_env_MKL_NUM_THREADS")  # torch does not read TORCH_NUM_THREADS
FIGURE = "client_throughput_rps"


def _first_varying(df: pd.DataFrame, candidates: tuple[str, ...]) -> str | None:
    for c in candidates:
        if c in df and pd.to_numeric(df[c], errors="coerce").nunique() > 1:
            return c
    return None


def _describe(row: pd.Series, columns: list[str]) -> str:
    parts = []
    for c in columns:
        v = row[c]
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        parts.append(f"{c.split('_', 2)[-1]}={v}")
    return ", ".join(parts)


def _spearman(x: pd.Series, y: pd.Series) -> float:
    ok = x.notna() & y.notna()
    if ok.sum() < 3:
        return math.nan
    return float(x[ok].rank().corr(y[ok].rank()))


def _eligible(df: pd.DataFrame, min_success_rate: float = MIN_SUCCESS_RATE) -> pd.DataFrame:
    """The rows a finding may use: ok repeats of trials none of whose repeats failed, that
    served at least `min_success_rate` of their requests (the run's settings.min_success_rate,
    the floor of every ranking), and that the client did not bound (its figure is the
    client's)."""
    ok = df[df["status"] == "ok"] if "status" in df else df
    bad = pd.Series(False, index=ok.index)
    if "client_success_rate" in ok:
        bad |= pd.to_numeric(ok["client_success_rate"], errors="coerce").fillna(0.0) < min_success_rate
    if "client_bound" in ok:
        bad |= ok["client_bound"].map(lambda v: v is True or str(v).lower() == "true")
    if "trial_id" in df:
        failed = set(df.loc[df.get("status", "ok") != "ok", "trial_id"]) | set(ok.loc[bad, "trial_id"])
        bad |= ok["trial_id"].isin(failed)
    return ok[~bad]


def _load_label(load: dict) -> str:
    """closed, 16 in flight | open, 2000 req/s (as the report writes a load)."""

    def number(v) -> str:
        return f"{float(v):g}" if isinstance(v, (int, float)) and not pd.isna(v) else str(v)

    mode = load.get("load_mode")
    if mode == "closed" and not pd.isna(load.get("load_concurrency")):
        return f"closed, {number(load['load_concurrency'])} in flight"
    if mode == "open" and not pd.isna(load.get("load_rate_rps")):
        return f"open, {number(load['load_rate_rps'])} req/s"
    return ", ".join(f"{k[len('load_'):]}={number(v)}" for k, v in load.items() if not pd.isna(v))


def thread_findings(df: pd.DataFrame, cores: int, min_success_rate: float = MIN_SUCCESS_RATE) -> list[str]:
    """Sentences for a run whose workers or torch threads vary; [] otherwise.

    Only eligible trials count (see _eligible), and each load level (load_* columns) is
    its own comparison: a configuration's figures at different loads or modes are never
    averaged together. With several load levels each sentence names its load."""
    ok = _eligible(df, min_success_rate)
    if ok.empty or FIGURE not in ok:
        return []
    loads = [c for c in ok.columns if c.startswith("load_") and ok[c].nunique(dropna=False) > 1]
    if not loads:
        return _findings(ok, cores)
    out = []
    for _, group in ok.groupby(loads, dropna=False, sort=False):
        label = _load_label({c: group[c].iloc[0] for c in group.columns if c.startswith("load_")})
        out += [f"At {label}: {s}" for s in _findings(group, cores)]
    return out


def ctx_column(df: pd.DataFrame) -> str:
    """Switches per request of every thread (proc_ctx_all_per_req) where the run has them;
    older runs have the main threads' only (proc_ctx_per_req)."""
    all_threads = "proc_ctx_all_per_req"
    if all_threads in df and pd.to_numeric(df[all_threads], errors="coerce").notna().any():
        return all_threads
    return "proc_ctx_per_req"


def _findings(ok: pd.DataFrame, cores: int) -> list[str]:
    ctx = ctx_column(ok)
    workers = _first_varying(ok, WORKER_COLUMNS)
    threads = _first_varying(ok, THREAD_COLUMNS)
    if workers is None and threads is None:
        return []
    params = [c for c in ok.columns if c.startswith("param_") and ok[c].astype(str).nunique() > 1]
    figures = [FIGURE] + ([ctx] if ctx in ok else [])  # a run may have no process samples
    agg = ok.groupby(params, dropna=False)[figures].mean().reset_index() if params else ok
    out = []
    groups = _groups(ok, params, len(agg))
    agg = agg.reset_index(drop=True)
    i_best, i_worst = int(agg[FIGURE].idxmax()), int(agg[FIGURE].idxmin())
    best, worst = agg.loc[i_best], agg.loc[i_worst]
    ratio = best[FIGURE] / worst[FIGURE] if worst[FIGURE] > 0 else math.inf
    r_iv = ci.statistic_interval(groups, ci.ratio(i_best, i_worst)) if groups else None
    out.append(
        f"Best: {_describe(best, params)} at {best[FIGURE]:.0f} req/s; worst: {_describe(worst, params)} "
        f"at {worst[FIGURE]:.0f} req/s ({ratio:.1f}x apart{_ci_text(r_iv, 1.0, '{:.1f}x')})."
    )
    if workers is not None and threads is not None:
        product = pd.to_numeric(agg[workers], errors="coerce") * pd.to_numeric(agg[threads], errors="coerce")
        within = agg[product <= cores][FIGURE]
        above = agg[product > cores][FIGURE]
        if len(within) and len(above):
            change = 100.0 * (above.mean() / within.mean() - 1.0)
            verb = "cut" if change < 0 else "raised"
            c_iv = ci.statistic_interval(groups, ci.mean_change(list(above.index), list(within.index))) if groups else None
            out.append(
                f"Workers x torch threads above the {cores} cores {verb} mean throughput by {abs(change):.0f}% "
                f"({above.mean():.0f} vs {within.mean():.0f} req/s over {len(above)} and {len(within)} configurations"
                f"{_ci_text(c_iv, 0.0, '{:+.0%}')})."
            )
    if ctx in agg and agg[ctx].notna().sum() >= 3:
        rho = _spearman(agg[ctx], agg[FIGURE])
        if not math.isnan(rho):
            if rho <= -0.7:
                verdict = "strongly track the throughput loss (more switches, fewer requests served)"
            elif rho <= -0.4:
                verdict = "partly track the throughput loss"
            else:
                verdict = "do not explain the throughput differences"
            s_iv = ci.statistic_interval(groups, ci.spearman_with(agg[ctx].to_numpy(float))) if groups else None
            out.append(
                f"Context switches per request {verdict}: Spearman rank correlation {rho:+.2f} across "
                f"{int(agg[ctx].notna().sum())} configurations "
                f"({agg[ctx].min():.1f} to {agg[ctx].max():.1f} switches per request"
                + (", all threads" if ctx == "proc_ctx_all_per_req" else ", main threads only")
                + f"{_ci_text(s_iv, 0.0, '{:+.2f}')})."
            )
    return out


def _groups(ok: pd.DataFrame, params: list[str], n: int) -> list:
    """Per configuration (in the order of the groupby above), the throughput samples of
    its repeats and windows; [] when they cannot be lined up with the configurations."""
    if not params:
        return []
    groups = [
        ci.repeat_samples(rows.to_dict("records"), FIGURE, "rps")
        for _, rows in ok.groupby(params, dropna=False)
    ]
    return groups if len(groups) == n else []


def _ci_text(interval: "ci.Interval | None", null: float, form: str) -> str:
    """'; 95% CI a to b' and, when the interval holds `null` (no effect) or none is known,
    the warning that says so."""
    if interval is None:
        return ""
    if not interval.known:
        return "; one measurement per configuration, no spread known: this may be noise, add repeats"
    text = f"; 95% CI {form.format(interval.lo)} to {form.format(interval.hi)}"
    verdict = ci.effect_verdict(interval, null)
    return f"{text}: {verdict}" if verdict else text
