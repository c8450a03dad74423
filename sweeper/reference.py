"""The reference pages, written from the code so that they cannot drift from it:
docs/reference/sweep-file.md from the sweep file's schema (sweeper.spec: every key's type,
default, bounds and description) and docs/reference/columns.md from the column table
(sweeper.columns). `python -m sweeper.reference` writes both; `--check` only says whether
the committed pages are current. `describe_key` gives `sweeper init` the same words.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import typing
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel, StringConstraints
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from . import columns
from .spec import SweepSpec
from .spec_axes import RELATIVE_FORMS
from .spec_rules import PATTERN_RULES, STORE_PATH

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = ROOT / "docs" / "reference"
SWEEP_FILE_PAGE = REFERENCE_DIR / "sweep-file.md"
COLUMNS_PAGE = REFERENCE_DIR / "columns.md"
EXAMPLE = ROOT / "sweeps" / "batching.yaml"
COMMAND = "python -m sweeper.reference"


# --- the schema as sections of keys --------------------------------------------------


@dataclass(frozen=True)
class Section:
    path: str  # "" for the top level, else the dotted key: "settings.stability"
    model: type[BaseModel]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def sections(model: type[BaseModel] = SweepSpec, path: str = "") -> list[Section]:
    """Every group of keys of the sweep file, in the schema's order, nested groups after
    the group that holds them."""
    out = [Section(path, model)]
    for name, info in model.model_fields.items():
        for sub in dict.fromkeys(_models_in(info.annotation)):
            key = info.alias or name
            out += sections(sub, f"{path}.{key}" if path else key)
    return out


def field_at(path: str) -> FieldInfo:
    """The schema's field at a dotted key path (`model.batch_size`, `request.json`)."""
    model: type[BaseModel] | None = SweepSpec
    info: FieldInfo | None = None
    for part in path.split("."):
        if model is None:
            raise KeyError(f"{path}: {part!r} is not inside a group of keys")
        by_key = {(f.alias or n): f for n, f in model.model_fields.items()}
        if part not in by_key:
            raise KeyError(f"{path}: no key {part!r} (keys: {', '.join(by_key)})")
        info = by_key[part]
        found = _models_in(info.annotation)
        model = found[0] if found else None
    if info is None:
        raise KeyError(f"{path!r} names no key")
    return info


# "e.g. X" and "i.e. X" do not end a sentence
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)\.\s+(?=[A-Z0-9`(])")


def describe_key(path: str, first_sentence: bool = True) -> str:
    """The schema's description of a sweep-file key, on one line: its first sentence (no
    final period), or all of it."""
    text = " ".join((field_at(path).description or "").split())
    if first_sentence:
        text = _SENTENCE_END.split(text, maxsplit=1)[0]
    return text.rstrip(".")


# --- types, bounds and defaults in words ------------------------------------------------


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


_BOUNDS = ((annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"), (annotated_types.Le, "le", "≤"), (annotated_types.Lt, "lt", "<"))
# the error messages' rules without their "must be"; STORE_PATH's rule is worded for a
# directory, and the same pattern holds the file paths too
_PATTERN_WORDS = {**{p: r.removeprefix("must be ") for p, r in PATTERN_RULES.items()}, STORE_PATH: "a path on one line"}


def _constraints(metadata: list[Any]) -> list[str]:
    out: list[str] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            out += _constraints(item.metadata)
            continue
        for kind, attr, sign in _BOUNDS:
            if isinstance(item, kind):
                out.append(f"{sign} {_number(getattr(item, attr))}")
        if isinstance(item, StringConstraints) and item.pattern:
            out.append(_PATTERN_WORDS.get(item.pattern, f"matching `{item.pattern}`"))
        max_length = getattr(item, "max_length", None)
        if isinstance(item, (StringConstraints, annotated_types.MaxLen)) and max_length is not None:
            out.append(f"at most {max_length} characters")
    return out


def _anchor_link(path: str) -> str:
    return f"[`{path}`](#{slug(path)})"


_NAMES = {int: "integer", float: "number", str: "text", bool: "true or false"}


def _members(annotation: Any) -> list[Any]:
    """A union's members, nested unions flattened, None left out."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [] if annotation is type(None) else [annotation]


def type_text(annotation: Any, metadata: list[Any] | tuple = (), where: str = "") -> str:
    """A type as a reader of the sweep file needs it: `integer ≥ 1, or a list of them (an
    axis)`, `closed or open`, `mapping: see settings.stability`."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return type_text(base, [*metadata, *extra], where)
    if origin in (Union, types.UnionType):
        members = _members(annotation)
        *scalars, last = members
        if scalars and typing.get_origin(last) is list and _members(typing.get_args(last)[0]) == scalars:
            # X or list[X]: the schema's way of saying that a list is an axis
            return f"{' or '.join(type_text(m, metadata, where) for m in scalars)}, or a list of them (an axis)"
        return " or ".join(type_text(m, (), where) for m in members)
    if origin is list:
        return f"list of: {type_text(typing.get_args(annotation)[0], (), where)}"
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"mapping of names ({type_text(key)}) to values: {type_text(value)}"
    if origin is Literal:
        return " or ".join(f"`{v}`" for v in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"mapping: see {_anchor_link(where)}" if where else "mapping"
    if annotation is Any:
        return "any YAML value"
    name = _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    rules = _constraints(list(metadata))
    if not rules:
        return name
    if annotation is str:
        return f"{name} ({'; '.join(rules)})"
    return f"{name} {', '.join(rules)}"


def default_text(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "not set"
    if isinstance(value, BaseModel):
        return "its defaults"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, (dict, list)) and not value:
        return f"`{'{}' if isinstance(value, dict) else '[]'}`"
    return f"`{_number(value)}`"


# --- markdown --------------------------------------------------------------------------


def slug(heading: str) -> str:
    """The anchor MkDocs' table of contents gives a heading (Python-Markdown's slugify)."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def md(text: str) -> str:
    """Text for a table cell: <, >, * and | escaped outside `code`, which stays as it is."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(part.replace("|", "\\|"))
        else:
            out.append(part.replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*").replace("|", "\\|"))
    return "".join(out)


def _generated_note(source: str) -> str:
    return f"<!-- Generated by `{COMMAND}` from {source}: edit that, then run it; do not edit this page. -->"


def _key_rows(section: Section) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    relative = set(getattr(section.model, "_relative", ()))
    for name, info in section.model.model_fields.items():
        key = info.alias or name
        path = f"{section.path}.{key}" if section.path else key
        kind = type_text(info.annotation, info.metadata, where=path)
        if name in relative:
            kind += f"; machine-relative: {RELATIVE_FORMS}"
        rows.append(f"| `{key}` | {md(kind)} | {default_text(info)} | {md(info.description or '')} |")
    return rows


def sweep_file_page() -> str:
    lines = [
        "# The sweep file",
        "",
        _generated_note("the schema's field descriptions in sweeper/spec.py"),
        "",
        "A sweep file is YAML, usually `sweeps/NAME.yaml`: the model, the parameter axes, the load, "
        "how the trials are chosen and how each one runs. `sweeper plan FILE` checks it and lists its "
        "trials without starting anything.",
        "",
        "- **A list is an axis.** Where a key's type says *or a list of them (an axis)*, a list "
        "gives one value per trial, and the trials are the product of every axis in the file. "
        "`server` keys and `env` values need a TorchServe restart per value; the sweeper orders the "
        "trials so that each server-level combination starts TorchServe once.",
        f"- **Machine-relative counts.** Keys marked machine-relative, and `env` values, may be "
        f"written as {md(RELATIVE_FORMS)}, resolved on the machine that loads the file.",
        "- **Strict.** An unknown key is refused with the nearest valid one, and every error is one "
        "line naming the file, the key and the rule, e.g. "
        "`sweeps/x.yaml: model.batch_size[2]: must be >= 1, got 0`.",
        "",
    ]
    for section in sections():
        title = section.path or "Top level"
        lines += [f"## {title}", ""]
        if section.path:
            lines += [md(describe_key(section.path, first_sentence=False) + "."), ""]
        lines += _key_rows(section) + [""]
    example = EXAMPLE.read_text(encoding="utf-8")
    lines += [
        "## Example",
        "",
        f"`sweeps/{EXAMPLE.name}`, as shipped:",
        "",
        "```yaml",
        example.rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(lines)


def columns_page() -> str:
    lines = [
        "# Results columns",
        "",
        _generated_note("the column table in sweeper/columns.py"),
        "",
        "`results.csv` in a run directory has one row per trial and repeat, rebuilt from the "
        "`result.json` file of each. Columns are flat and prefixed, with units in their names; a "
        "cell is empty (or NaN) where a column does not apply to the trial. A name such as "
        "`param_server_<key>` stands for one column per key the sweep sets.",
        "",
    ]
    for group in columns.GROUPS:
        entries = [c for c in columns.COLUMNS if c.group == group.key]
        lines += [f"## {group.title}", "", md(group.about), "", "| column | unit | meaning |", "|---|---|---|"]
        lines += [f"| `{c.name}` | {md(c.unit)} | {md(c.description)} |" for c in entries]
        lines.append("")
    return "\n".join(lines)


def generate() -> dict[Path, str]:
    """Every generated page and its text."""
    return {SWEEP_FILE_PAGE: sweep_file_page(), COLUMNS_PAGE: columns_page()}


def stale() -> list[Path]:
    """The pages whose committed text differs from what generate() writes now."""
    return [path for path, text in generate().items() if not path.exists() or path.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page is stale")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        for path in out_of_date:
            print(f"stale: {path.relative_to(ROOT)} (run `{COMMAND}`)", file=sys.stderr)
        return 1 if out_of_date else 0
    for path, text in generate().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
