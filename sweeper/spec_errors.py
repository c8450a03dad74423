"""How the sweep schema's errors read: pydantic's errors become one line naming the key
path and the rule (`model.batch_size[2]: must be >= 1, got 0`), and values are shown as
the user wrote them. sweeper.spec owns the schema and hands its root model to `describe`;
this module owns the wording.
"""

from __future__ import annotations

import difflib
import itertools
import re
import typing
from typing import Any

from pydantic import BaseModel

from .spec_rules import ENV_NAME, PATTERN_RULES


# --- value display -------------------------------------------------------------------------


def show(value: Any, limit: int = 60) -> str:
    """A short, single-line rendering of a value as the user wrote it (YAML spelling)."""
    text = _show(value, 3)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any, depth: int) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() < 200 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value[:80])
    if isinstance(value, (list, dict)):
        if depth <= 0:
            return "[...]" if isinstance(value, list) else "{...}"
        items = list(itertools.islice(value.items() if isinstance(value, dict) else value, 4))
        if isinstance(value, dict):
            inner = ", ".join(f"{_show(k, 0)}: {_show(v, depth - 1)}" for k, v in items)
            more = ", ..." if len(value) > 4 else ""
            return "{" + inner + more + "}"
        inner = ", ".join(_show(v, depth - 1) for v in items)
        return "[" + inner + (", ..." if len(value) > 4 else "") + "]"
    return f"a {type(value).__name__}"


def kind(value: Any) -> str:
    """'a list', 'a string', ... for messages about the top level."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    return {int: "an integer", float: "a number", str: "a string", list: "a list"}.get(type(value), f"a {type(value).__name__}")


# --- error translation ------------------------------------------------------------------

_MISSING = object()
_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_+-]{1,80}$")
# "key: rule" or "key[2]: rule" at the start of our validators' messages
_PREFIX = re.compile(r"^((?:[A-Za-z_][A-Za-z0-9_+]*(?:\.[A-Za-z_][A-Za-z0-9_+]*)*)?(?:\[\d+\])*): (.*)$", re.DOTALL)

_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "null",
}


def key_text(part: Any) -> str:
    if isinstance(part, str) and _SIMPLE_KEY.match(part):
        return part
    return show(part, 40)


def _join(parts: list[tuple[str, Any]]) -> str:
    out = ""
    for kind, part in parts:
        if kind == "index":
            out += f"[{part}]"
        else:
            out += ("." if out else "") + key_text(part)
    return out


def _walk(data: Any, loc: tuple, missing: bool) -> list[tuple[str, Any]]:
    """The user's key path of a pydantic location: follows `loc` through the input and
    drops pydantic's own markers ('list[constrained-int]', 'function-after[...]', ...)."""
    parts: list[tuple[str, Any]] = []
    current = data
    for i, part in enumerate(loc):
        if isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            parts.append(("index", part))
            current = current[part]
        elif isinstance(current, dict) and part in current:
            parts.append(("key", part))
            current = current[part]
        elif isinstance(current, dict) and missing and i == len(loc) - 1:
            parts.append(("key", part))
            current = _MISSING
        # else: a union member's marker; the input does not move
    return parts


def _model_at(parts: list[tuple[str, Any]], schema: type[BaseModel]) -> type[BaseModel] | None:
    """The schema class that owns the keys at `parts` (for 'did you mean')."""
    current: Any = schema
    for kind, part in parts:
        if kind == "index":
            continue
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        current = _find_model(field.annotation)
        if current is None:
            return None
    return current


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _find_model(arg)
        if found is not None:
            return found
    return None


def _unknown_key(parts: list[tuple[str, Any]], schema: type[BaseModel]) -> str:
    name = parts[-1][1] if parts else "?"
    model = _model_at(parts[:-1], schema)
    valid = [f.alias or n for n, f in model.model_fields.items()] if model is not None else []
    near = difflib.get_close_matches(str(name).lower(), valid, n=1) if isinstance(name, str) else []
    if near:
        return f"unknown key (did you mean '{near[0]}'?)"
    return f"unknown key (expected one of: {', '.join(valid)})" if valid else "unknown key"


def _rule(err: dict) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"must be >= {_num(ctx.get('ge'))}"
    if kind == "greater_than":
        return f"must be > {_num(ctx.get('gt'))}"
    if kind == "less_than_equal":
        return f"must be <= {_num(ctx.get('le'))}"
    if kind == "less_than":
        return f"must be < {_num(ctx.get('lt'))}"
    if kind == "finite_number":
        return "must be a finite number"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        return PATTERN_RULES.get(ctx.get("pattern"), "has characters that are not allowed")
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "missing":
        return "required"
    if kind == "invalid_key":
        return "keys must be strings"
    if kind == "list_type":
        return "must be a list"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}"
    msg = str(err.get("msg", "invalid"))
    return msg[:1].lower() + msg[1:]


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _is_type_error(err: dict) -> bool:
    return err.get("type") in _TYPE_WORDS or err.get("type") == "list_type"


def describe(errors: list[dict], data: Any, schema: type[BaseModel]) -> tuple[str, str]:
    """The one (key, rule) that reads best among pydantic's errors."""
    walked = [(e, _walk(data, tuple(e.get("loc", ())), e.get("type") == "missing")) for e in errors]
    extra = [(e, p) for e, p in walked if e.get("type") == "extra_forbidden"]
    if extra:
        return _join(extra[0][1]), _unknown_key(extra[0][1], schema)
    # A union reports one error per member: the deepest path is where the input went
    # wrong; at equal depth a broken rule beats "wrong type" from the other member.
    depth = max(len(p) for _, p in walked)
    deepest = [(e, p) for e, p in walked if len(p) == depth]
    ruled = [(e, p) for e, p in deepest if not _is_type_error(e)]
    err, parts = (ruled or deepest)[0]
    key = _join(parts)
    kind = err.get("type")

    if kind == "value_error":
        error = (err.get("ctx") or {}).get("error")
        msg = str(error) if error is not None else str(err.get("msg", ""))
        m = _PREFIX.match(msg)
        if m and m.group(1):  # our validators name the sub-key: "concurrency: required ..."
            sub = m.group(1)
            key = f"{key}{'' if sub.startswith('[') else '.'}{sub}" if key else sub
            msg = m.group(2)
        return key, msg
    if kind == "invalid_key":
        return key, f"keys must be strings, got {show(err.get('input'))}"
    if kind == "extra_forbidden":
        return key, _unknown_key(parts, schema)
    if not ruled:
        # only type errors: say every shape the field accepts
        words: list[str] = []
        has_list = False
        for e, p in deepest:
            if p != parts:
                continue  # another key's error
            if e.get("type") == "list_type":
                has_list = True
            else:
                w = _TYPE_WORDS[e["type"]]
                if w not in words:
                    words.append(w)
        if words and has_list:
            rule = f"must be {_or(words)} or a list of them"
        elif words:
            rule = f"must be {_or(words)}"
        else:
            rule = "must be a list"
    else:
        rule = _rule(err)
        if kind == "string_pattern_mismatch" and (err.get("ctx") or {}).get("pattern") == ENV_NAME:
            rule += _env_hint(err.get("input"))
    if kind == "missing":
        return key, rule
    return key, f"{rule}, got {show(err.get('input'))}"


def _or(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _env_hint(name: Any) -> str:
    if not isinstance(name, str):
        return ""
    guess = re.sub(r"[^A-Za-z0-9_+]", "_", name.strip()).upper()
    return f" (did you mean '{guess}'?)" if re.match(ENV_NAME, guess) and guess != name else ""


def one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")
