"""A sweep file as text: finding it by name, reading and validating it (every problem one
SpecError naming the file, the key and the rule), and writing a run's sweep.yaml with
every default filled in."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

from .errors import SpecError
from .spec import SweepSpec
from .spec_errors import describe, kind, one_line


def parse_sweep(data: Any, source: str, target: Mapping[str, Any] | None = None) -> SweepSpec:
    """Validate a loaded document; every problem becomes one SpecError. `target`: keys of
    the `target` group given on the command line (`sweeper run --target URL`), which win
    over the file's."""
    if data is None:
        raise SpecError(source, "", "the file is empty (a sweep needs at least name and load)")
    if not isinstance(data, dict):
        raise SpecError(source, "", f"the top level must be a mapping of keys (name, model, load, ...), got {kind(data)}")
    if target:
        given = data.get("target")
        data = {**data, "target": {**(given if isinstance(given, dict) else {}), **target}}
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        key, rule = describe(exc.errors(include_url=False), data, SweepSpec)
        raise SpecError(source, one_line(key), one_line(rule)) from None


def resolve_sweep_path(name_or_path: str, sweeps_dir: Path) -> Path:
    """`batching` -> sweeps/batching.yaml; a path is used as given."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return p
    return sweeps_dir / f"{name_or_path}.yaml"


def load_sweep(path: Path | str, target: Mapping[str, Any] | None = None) -> SweepSpec:
    """The sweep file at `path`, validated (`target`: as parse_sweep's)."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(source, "", "file not found") from None
    except UnicodeDecodeError as exc:
        raise SpecError(source, "", f"cannot read: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise SpecError(source, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
        raise SpecError(source, "", one_line(f"malformed YAML: {where}{problem}")) from None
    except RecursionError:
        raise SpecError(source, "", "malformed YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # PyYAML's constructors raise these for e.g. `2020-13-45` (not a date) or a
        # 5000-digit integer
        raise SpecError(source, "", one_line(f"malformed YAML: {str(exc)[:100]}")) from None
    return parse_sweep(data, source, target)


def dump_resolved(spec: SweepSpec, model_store: Path | None = None) -> str:
    """The sweep with every default filled in and machine-relative values resolved.

    `model_store`: the directory the run really uses, so that a relative
    settings.model_store still points there when the dump is read from another place
    (`sweeper run --resume` reads RUN_DIR/sweep.yaml).
    """
    data = spec.model_dump(mode="json", by_alias=True)
    if data.get("request") is None:
        data.pop("request", None)  # keeps sweep.yaml of runs without one as it was
    else:
        sets = data["request"] if isinstance(data["request"], list) else [data["request"]]
        for given, dumped in zip(spec.requests, sets):
            if not given.has_json:
                dumped.pop("json", None)
            for key in ("files", "text"):
                if dumped.get(key) is None:
                    dumped.pop(key, None)
    if data.get("load") is None:
        data.pop("load", None)  # objective capacity: the rate search replaces it
    if spec.search.rate_search is not None:  # objective capacity: its defaults spelled out
        data["search"]["capacity"] = spec.search.rate_search.model_dump(mode="json")
    elif data["search"].get("capacity") is None:
        data["search"].pop("capacity", None)
    for key in ("archive", "registered"):
        if data["model"].get(key) is None:
            data["model"].pop(key, None)
    if data.get("target") is None:
        data.pop("target", None)  # keeps sweep.yaml of runs on the sweeper's own servers as it was
    if model_store is not None and data["settings"].get("model_store") is not None:
        data["settings"]["model_store"] = str(model_store)
    return yaml.safe_dump(data, sort_keys=False)
