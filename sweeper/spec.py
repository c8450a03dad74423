"""The sweep file's schema and `load_sweep(path)`: the only place that reads raw YAML.

A sweep file has five groups. In `model`, `server`, `env` and `load`, a list is an axis;
the trials are the product of all axes (see sweeper.plan). Thread-like counts may be
written relative to the machine: `cores`, `2*cores`, `cores/2` (resolved when loaded).

    name: batching
    model:   {name: mlp, batch_size: [1, 8, 32], max_batch_delay_ms: [5, 100], ...}
    server:  {number_of_netty_threads: 4, job_queue_size: 1000, ...}   # needs a restart
    env:     {OMP_NUM_THREADS: [1, cores]}                            # needs a restart
    load:    [{mode: closed, concurrency: 16, duration_s: 10},
              {mode: open, rate_rps: [100, 400], duration_s: 10}]
    settings: {repeats: 2, warmup_s: 2, ready_timeout_s: 60, slo_p99_ms: 100}

Every error becomes a SpecError naming the file, the key path and the rule.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import SpecError

# Values that end up in config.properties or an environment: no line breaks, no '=',
# no ':' or '\\' (Java properties separators/escapes), no '#'/'!' comments.
SAFE_TEXT = r"^[A-Za-z0-9_.,/+@%\- ]*$"
SafeText = Annotated[str, StringConstraints(pattern=SAFE_TEXT, max_length=200)]
# "OMP_NUM_THREADS+MKL_NUM_THREADS" is one axis that sets both variables to each value.
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]*(\+[A-Z_][A-Z0-9_]*)*$", max_length=200)]

_RELATIVE = re.compile(r"^\s*(?:(\d+)\s*\*\s*)?cores\s*(?:/\s*(\d+))?\s*$")

PosInt = Annotated[int, Field(ge=1, strict=True)]
NonNegInt = Annotated[int, Field(ge=0, strict=True)]
PosFloat = Annotated[float, Field(gt=0, strict=True)]


def machine_cores() -> int:
    """Cores this process may use (affinity-aware), the unit of `cores` in sweep files."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_count(value: Any, cores: int) -> Any:
    """`2*cores` -> 2*cores, `cores/2` -> max(1, cores//2); anything else unchanged."""
    if isinstance(value, str):
        m = _RELATIVE.match(value)
        if m:
            mul = int(m.group(1) or 1)
            div = int(m.group(2) or 1)
            if div == 0:
                raise ValueError("division by zero in a machine-relative value")
            return max(1, (mul * cores) // div)
    return value


def _axis(value: Any) -> list:
    return value if isinstance(value, list) else [value]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_empty_axes(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, list) and not value:
                    raise ValueError(f"{key}: an axis must have at least one value")
        return data


def _unique(values: list, key: str) -> list:
    seen = []
    for v in values:
        if v in seen:
            raise ValueError(f"{key}: duplicate value {v!r} in axis")
        seen.append(v)
    return values


class ModelAxes(_Strict):
    """Per-model settings, applied through the management API (no restart)."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)] = "mlp"
    batch_size: Union[PosInt, list[PosInt]] = 1
    max_batch_delay_ms: Union[NonNegInt, list[NonNegInt]] = 100
    # None: TorchServe's default_workers_per_model decides the initial worker count.
    min_workers: Union[PosInt, list[PosInt], None] = None
    max_workers: Union[PosInt, list[PosInt], None] = None
    response_timeout_s: Union[PosInt, list[PosInt]] = 120

    @field_validator("batch_size", "max_batch_delay_ms", "min_workers", "max_workers", "response_timeout_s")
    @classmethod
    def _axes_unique(cls, v: Any, info: Any) -> Any:
        if isinstance(v, list):
            _unique(v, info.field_name)
        return v


class ServerAxes(_Strict):
    """config.properties keys that need a TorchServe restart. None = TorchServe's default."""

    number_of_netty_threads: Union[PosInt, list[PosInt], None] = None
    netty_client_threads: Union[PosInt, list[PosInt], None] = None
    default_workers_per_model: Union[PosInt, list[PosInt], None] = None
    job_queue_size: Union[PosInt, list[PosInt], None] = None
    max_request_size: Union[PosInt, list[PosInt], None] = None
    max_response_size: Union[PosInt, list[PosInt], None] = None
    use_native_io: Union[bool, list[bool], None] = None
    vmargs: Union[SafeText, list[SafeText], None] = None

    @model_validator(mode="before")
    @classmethod
    def _relative(cls, data: Any) -> Any:
        if isinstance(data, dict):
            cores = machine_cores()
            for key in ("number_of_netty_threads", "netty_client_threads", "default_workers_per_model"):
                if key in data:
                    v = data[key]
                    data = {**data, key: [resolve_count(x, cores) for x in v] if isinstance(v, list) else resolve_count(v, cores)}
        return data


class LoadAxes(_Strict):
    """One load profile; list-valued concurrency / rate_rps are axes."""

    mode: Literal["closed", "open"]
    concurrency: Union[PosInt, list[PosInt], None] = None
    rate_rps: Union[PosFloat, list[PosFloat], None] = None
    duration_s: Union[PosFloat, None] = None
    requests: Union[PosInt, None] = None
    processes: PosInt = 1
    timeout_s: PosFloat = 30.0

    @model_validator(mode="after")
    def _mode_fields(self) -> "LoadAxes":
        if self.mode == "closed":
            if self.concurrency is None:
                raise ValueError("concurrency: required for mode closed")
            if self.rate_rps is not None:
                raise ValueError("rate_rps: only for mode open")
            if (self.duration_s is None) == (self.requests is None):
                raise ValueError("duration_s: give exactly one of duration_s or requests for mode closed")
        else:
            if self.rate_rps is None:
                raise ValueError("rate_rps: required for mode open")
            if self.concurrency is not None:
                raise ValueError("concurrency: only for mode closed")
            if self.requests is not None:
                raise ValueError("requests: only for mode closed (open loop runs for duration_s)")
            if self.duration_s is None:
                raise ValueError("duration_s: required for mode open")
        return self


class Settings(_Strict):
    repeats: PosInt = 1
    warmup_s: Annotated[float, Field(ge=0, strict=True)] = 2.0
    ready_timeout_s: PosFloat = 60.0
    max_consecutive_failures: PosInt = 3
    slo_p99_ms: Union[PosFloat, None] = None
    max_trials: PosInt = 200  # a larger grid needs --yes
    probe_interval_s: PosFloat = 0.25
    host: Literal["127.0.0.1", "localhost", "::1"] = "127.0.0.1"
    model_store: Union[str, None] = None  # directory of .mar files; default: the project's
    client_cpus: Union[list[NonNegInt], None] = None
    server_cpus: Union[list[NonNegInt], None] = None


class SweepSpec(_Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)]
    description: str = ""
    model: ModelAxes = ModelAxes()
    server: ServerAxes = ServerAxes()
    env: dict[EnvName, Union[SafeText, int, list[Union[SafeText, int]]]] = {}
    load: Union[LoadAxes, list[LoadAxes]]
    settings: Settings = Settings()

    @field_validator("env", mode="before")
    @classmethod
    def _env_relative(cls, v: Any) -> Any:
        if isinstance(v, dict):
            cores = machine_cores()
            out = {}
            for key, value in v.items():
                if isinstance(value, list):
                    if not value:
                        raise ValueError(f"{key}: an axis must have at least one value")
                    out[key] = [resolve_count(x, cores) for x in value]
                else:
                    out[key] = resolve_count(value, cores)
            return out
        return v

    @property
    def loads(self) -> list[LoadAxes]:
        return self.load if isinstance(self.load, list) else [self.load]


# --- loading and error translation -------------------------------------------------------


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("list[...]",) or "[" in str(part) or str(part) in ("int", "float", "str", "bool", "none"):
            continue  # pydantic's union-member markers
        else:
            out += ("." if out else "") + str(part)
    return out


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Valid keys at the parent of `loc` (for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        for c in candidates:
            for cc in [c, *getattr(c, "__args__", ())]:
                if isinstance(cc, type) and issubclass(cc, BaseModel):
                    current = cc
                    break
            else:
                continue
            break
    return list(getattr(current, "model_fields", {}).keys())


def _describe(err: dict) -> tuple[str, str]:
    loc = tuple(err.get("loc", ()))
    key = _loc(loc)
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        near = difflib.get_close_matches(name, _fields_at(SweepSpec, loc), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        return key, f"unknown key{hint}"
    msg = err.get("msg", "invalid")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        # our validators prefix the sub-key: "concurrency: required ..."
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*): (.*)$", msg)
        if m:
            key = f"{key}.{m.group(1)}" if key else m.group(1)
            msg = m.group(2)
    got = err.get("input")
    if kind not in ("missing",) and not isinstance(got, (dict, list)):
        msg = f"{msg}, got {got!r}"
    return key, msg


def parse_sweep(data: Any, source: str) -> SweepSpec:
    if not isinstance(data, dict):
        raise SpecError(source, "", f"the top level must be a mapping, got {type(data).__name__}")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A union reports one error per member; the most specific (longest loc) reads best.
        errors.sort(key=lambda e: -len(e.get("loc", ())))
        extra = [e for e in errors if e.get("type") == "extra_forbidden"]
        key, rule = _describe((extra or errors)[0])
        raise SpecError(source, key, rule) from None


def resolve_sweep_path(name_or_path: str, sweeps_dir: Path) -> Path:
    """`batching` -> sweeps/batching.yaml; a path is used as given."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return p
    return sweeps_dir / f"{name_or_path}.yaml"


def load_sweep(path: Path | str) -> SweepSpec:
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(source, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(source, "", f"cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(source, "", f"malformed YAML: {where}{problem}") from None
    return parse_sweep(data, source)


def dump_resolved(spec: SweepSpec) -> str:
    """The sweep with every default filled in and machine-relative values resolved."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
