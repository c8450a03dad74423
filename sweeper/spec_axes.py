"""How the schema reads a key that may be an axis: one value or a list of distinct values,
and machine-relative counts (`cores`, `2*cores`, `cores/2`) resolved against this
machine's cores before validation. The schema (sweeper.spec) calls these from its models'
validators; error text names the key and the index of the value in the file.
"""

from __future__ import annotations

import re
from typing import Any

from .spec_errors import show

_RELATIVE = re.compile(r"^\s*(?:(\d{1,6})\s*\*\s*)?cores(?:\s*\*\s*(\d{1,6}))?(?:\s*/\s*(\d{1,6}))?\s*$")
_LOOKS_RELATIVE = re.compile(r"\*|\bcores\b", re.IGNORECASE)
RELATIVE_FORMS = "cores, 2*cores or cores/2"


def resolve_count(value: Any, cores: int) -> Any:
    """`2*cores` -> 2*cores, `cores/2` -> max(1, cores//2); anything else unchanged.

    Raises ValueError for a zero multiplier or divisor.
    """
    if isinstance(value, str):
        m = _RELATIVE.match(value)
        if m:
            mul = int(m.group(1) or 1) * int(m.group(2) or 1)
            div = int(m.group(3) or 1)
            if mul == 0 or div == 0:
                raise ValueError(f"a machine-relative count needs factors >= 1, got {value!r}")
            return max(1, (mul * cores) // div)
    return value


# --- schema ----------------------------------------------------------------------------


def _resolve_one(key: str, value: Any, cores: int, text_ok: bool) -> tuple[Any, bool]:
    """(resolved value, whether it was machine-relative)."""
    if not isinstance(value, str):
        return value, False
    if _RELATIVE.match(value):
        try:
            return resolve_count(value, cores), True
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    if not text_ok or _LOOKS_RELATIVE.search(value):
        what = "an integer or a machine-relative count" if not text_ok else "a machine-relative count"
        raise ValueError(f"{key}: must be {what} ({RELATIVE_FORMS}), got {show(value)}")
    return value, False


def _marker(value: Any, as_text: bool) -> Any:
    """What makes two written values the same: 100 and 100.0 are; true and 1 are not;
    for environment values 1 and "1" are."""
    if isinstance(value, bool):
        return ("bool", value)
    if as_text and isinstance(value, (int, str)):
        return ("text", str(value))
    if isinstance(value, (int, float)):
        if value != value:  # nan: "must be a finite number" says more than "duplicate"
            return None
        return ("number", float(value)) if abs(value) < 2**53 else ("number", value)
    if isinstance(value, str):
        return ("text", value)
    return None  # lists, mappings: the type check reports them


def prepare_axis(key: str, value: Any, cores: int, relative: bool, text_ok: bool = False, as_text: bool = False) -> Any:
    """Check a list-valued field (not empty, no value twice: reported with the file's
    indices) and resolve `cores` forms where allowed. Values that only coincide because of
    this machine's core count (`[1, cores]` on one core) collapse into one."""
    if not isinstance(value, list):
        return _resolve_one(key, value, cores, text_ok)[0] if relative else value
    if not value:
        raise ValueError(f"{key}: must not be empty (give at least one value)")
    first: dict[Any, int] = {}
    for i, item in enumerate(value):
        marker = _marker(item, as_text)
        if marker is None:
            continue
        if marker in first:
            raise ValueError(f"{key}[{i}]: duplicate of {key}[{first[marker]}], got {show(item)}")
        first[marker] = i
    if not relative:
        return value
    out: list = []
    seen: set = set()
    for i, item in enumerate(value):
        resolved, _ = _resolve_one(f"{key}[{i}]", item, cores, text_ok)
        marker = _marker(resolved, as_text)
        if marker is not None and marker in seen:
            continue  # literal duplicates were refused above: this one came from `cores`
        if marker is not None:
            seen.add(marker)
        out.append(resolved)
    return out


def check_distinct(key: str, values: list, as_text: bool = False) -> None:
    seen: dict[Any, int] = {}
    for i, v in enumerate(values):
        marker = _marker(v, as_text)
        if marker is None:
            continue  # mappings (load profiles) are compared by SweepSpec._distinct_loads
        if marker in seen:
            raise ValueError(f"{key}[{i}]: duplicate of {key}[{seen[marker]}], got {show(v)}")
        seen[marker] = i
