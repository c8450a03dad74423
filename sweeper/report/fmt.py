"""Formatting of values for people: numbers, parameter names, load labels, Markdown cells.

Shared by the tables, the recommendation and the plots so a value reads the same
everywhere.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

_PREFIXES = ("param_model_", "param_server_", "param_env_", "param_")


def is_missing(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, (float, np.floating)):
        return math.isnan(v)
    return isinstance(v, str) and v == ""


def value(v: Any) -> str:
    """A parameter value as it would be written in a config file: 4.0 -> 4, True -> true."""
    if is_missing(v):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


def num(v: Any, unit: str = "") -> str:
    """A measurement with precision that fits its size: 812, 34.5, 0.93."""
    if is_missing(v):
        return "–"
    x = float(v)
    if math.isinf(x):
        return "∞"
    a = abs(x)
    text = f"{x:,.0f}" if a >= 100 else f"{x:.1f}" if a >= 10 else f"{x:.2f}" if a >= 0.01 or a == 0 else f"{x:.2g}"
    return f"{text} {unit}".rstrip() if unit else text


def success(rate: Any) -> str:
    """A success rate as a percentage that never rounds up to 100%: 0.9997 -> 99.97%.
    Only a rate of exactly 1 reads "100%"."""
    if is_missing(rate):
        return "–"
    x = float(rate)
    if x >= 1.0:
        return "100%"
    for digits in range(1, 6):
        text = f"{x * 100:.{digits}f}"
        if float(text) < 100.0:
            return f"{text}%"
    return "<100%"


def span(lo: Any, hi: Any) -> str:
    if is_missing(lo) or is_missing(hi):
        return ""
    return f"{num(lo)}–{num(hi)}"


def short_name(column: str) -> str:
    """param_model_batch_size -> batch_size; param_env_OMP_NUM_THREADS -> OMP_NUM_THREADS."""
    for prefix in _PREFIXES:
        if column.startswith(prefix):
            return column[len(prefix):]
    return column


def load_label(row: Any) -> str:
    mode = str(_get(row, "load_mode") or "")
    if mode == "closed":
        c = _get(row, "load_concurrency")
        return f"closed, {value(c)} in flight" if not is_missing(c) else "closed"
    if mode == "open":
        r = _get(row, "load_rate_rps")
        return f"open, {value(r)} req/s" if not is_missing(r) else "open"
    if mode == "capacity":  # search.objective capacity: the rate was searched from load_rate_rps
        return "the capacity search"
    return mode


def md_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell: no row breaks, no raw HTML."""
    s = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<").replace(">", "\\>")
    return " ".join(s.split())


def _get(row: Any, name: str) -> Any:
    if isinstance(row, dict):
        return row.get(name)
    try:
        return row[name]
    except (KeyError, IndexError):
        return None
