"""The search space and the trials in it. Pure.

`space(spec)` is the sweep as data: one `Axis(name, values, level)` per setting, axes of
one value included. A *point* maps every axis name to one of its values;
`make_trial(spec, point, repeat)` turns it into a `Trial` whose id is a hash of its
parameters (the same point gives the same id in every run, which is what resume relies
on). `expand(spec)` is the whole grid in plan order.

Axis names: "server.<config.properties key>", "env.<VAR>" ("env.A+B" sets A and B to the
same value: one axis, not two), "model.<per-model setting>", "request" (the sweep's request
sets, when it has a request group), "load" (the expanded load profiles, in declared order).

The plan order keeps each server-level group (config.properties keys and environment,
which need a JVM restart) contiguous, so an executor starts one TorchServe per group.
Within a group, trials sharing per-model settings are adjacent so the model is
re-registered only when those change; repeats of a trial run back to back. That is the
order of the axes in `space`: server, env, model, request, load, the last varying fastest.

`order(trials, how, seed)` then arranges the runs for fairness (settings.order):
grouped (the plan order), interleaved (repeat 0 of every trial, then repeat 1, ...) or
random (each repeat's pass in a seeded random order of blocks). `costs(trials)` counts
the server starts and model registrations an order costs (fewer registrations with
settings.keep_registered: sweeper.executors.local).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from dataclasses import asdict, dataclass, replace
from typing import Hashable, Iterable, Iterator, Mapping, NamedTuple

from .capacity import CapacityRule
from .load.types import LoadProfile
from .rundir import trial_key
from .spec import SweepSpec


@dataclass(frozen=True)
class ModelParams:
    name: str
    batch_size: int
    max_batch_delay_ms: int
    min_workers: int | None
    max_workers: int | None
    response_timeout_s: int


@dataclass(frozen=True)
class Trial:
    sweep: str
    server: tuple[tuple[str, object], ...]  # config.properties keys set by the sweep, sorted
    env: tuple[tuple[str, str], ...]  # environment variables, sorted
    model: ModelParams
    load: LoadProfile
    repeat: int  # 0-based
    trial_id: str  # hash of every parameter except the repeat
    group_id: str  # hash of server + env: trials that share one JVM
    request: str | None = None  # the request set's label (sweep's `request` group), if any
    # search.objective capacity: the rate search that replaces the load (then `load` is its
    # first step's open-loop profile: start_rps for step_s)
    capacity: CapacityRule | None = None

    @property
    def key(self) -> str:
        """Directory name and resume key: one per trial and repeat."""
        return trial_key(self.trial_id, self.repeat)

    def params(self) -> dict[str, object]:
        """The param_* and load_* columns."""
        row: dict[str, object] = {f"param_model_{k}": v for k, v in asdict(self.model).items()}
        row.update({f"param_server_{k}": v for k, v in self.server})
        row.update({f"param_env_{k}": v for k, v in self.env})
        row.update(
            load_mode=self.load.mode,
            load_concurrency=self.load.concurrency,
            load_rate_rps=self.load.rate_rps,
            load_duration_s=self.load.duration_s,
            load_requests=self.load.requests,
            load_processes=self.load.processes,
        )
        if self.request is not None:
            row["param_request_name"] = self.request
        if self.capacity is not None:
            # the load is searched: load_rate_rps is where the search started
            row.update(load_mode="capacity", load_duration_s=self.capacity.step_s)
        return row


def _digest(obj: object) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _load_profiles(spec: SweepSpec) -> list[LoadProfile]:
    """Every load entry's concurrency x rate combinations, in declared order. Under
    search.objective capacity: one open-loop profile, the rate search's first step."""
    profiles = []
    c = spec.search.rate_search
    if c is not None:
        cpus = tuple(spec.settings.client_cpus) if spec.settings.client_cpus else None
        return [LoadProfile(mode="open", rate_rps=c.start_rps, duration_s=c.step_s, processes=c.processes, timeout_s=c.timeout_s, cpu_affinity=cpus)]
    for axes in spec.loads:
        for concurrency, rate in itertools.product(_values(axes.concurrency), _values(axes.rate_rps)):
            profiles.append(
                LoadProfile(
                    mode=axes.mode,
                    concurrency=concurrency,
                    rate_rps=float(rate) if rate is not None else None,
                    duration_s=axes.duration_s,
                    requests=axes.requests,
                    processes=axes.processes,
                    timeout_s=axes.timeout_s,
                    cpu_affinity=tuple(spec.settings.client_cpus) if spec.settings.client_cpus else None,
                )
            )
    return profiles


# Where each level's settings are applied: a restart (server, env), the management API
# (model), the load client (load, request).
LEVELS = ("server", "env", "model", "load", "request")
_MODEL_FIELDS = ("batch_size", "max_batch_delay_ms", "min_workers", "max_workers", "response_timeout_s")


@dataclass(frozen=True)
class Axis:
    """One dimension of the search space: its values in declared order."""

    name: str  # "model.batch_size", "server.number_of_netty_threads", "env.A+B", "request", "load"
    values: tuple
    level: str  # one of LEVELS

    @property
    def column(self) -> str | None:
        """The results column that holds this axis's value (as Trial.params names it); None
        for the load axis, which spans the load_* columns."""
        level, _, key = self.name.partition(".")
        if level in ("model", "server"):
            return f"param_{level}_{key}"
        if level == "env":
            return f"param_env_{key.split('+')[0]}"  # "A+B" sets both to one value
        if self.name == "request":
            return "param_request_name"
        return None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"axis {self.name}: level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if not self.values:
            raise ValueError(f"axis {self.name}: no values")


def _values(value: object) -> tuple:
    return tuple(value) if isinstance(value, list) else (value,)


def space(spec: SweepSpec) -> list[Axis]:
    """The sweep's axes in plan order; a setting left unset (None: TorchServe's default)
    is no axis."""
    axes = [Axis(f"server.{k}", _values(v), "server") for k, v in spec.server.model_dump().items() if v is not None]
    axes += [Axis(f"env.{k}", _values(v), "env") for k, v in spec.env.items() if v is not None]
    model = spec.model.model_dump()
    axes += [Axis(f"model.{k}", _values(model[k]), "model") for k in _MODEL_FIELDS if model[k] is not None]
    if spec.requests:  # no request group: no axis, and trial ids stay what they were
        axes.append(Axis("request", tuple(spec.requests), "request"))
    axes.append(Axis("load", tuple(_load_profiles(spec)), "load"))
    return axes


def axis_number(value: object) -> float | None:
    """An axis value as a number (env values are text: "2"), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def value_label(value: object) -> str:
    """An axis value in words: a load profile as "closed c=32" / "open 50/s", a request set
    by its label, anything else as text."""
    if isinstance(value, LoadProfile):
        return f"closed c={value.concurrency}" if value.mode == "closed" else f"open {value.rate_rps:g}/s"
    label = getattr(value, "label", None)
    return str(label) if label is not None else str(value)


# TorchServe's defaults for the settings a sweep can put on an axis ("cpus": one per CPU,
# which is what TorchServe does for workers and netty threads; torch with no OMP/MKL
# setting runs one intra-op thread per core). A search starts from them (default_point).
CPUS = "cpus"
TORCHSERVE_DEFAULTS: dict[str, object] = {
    "model.batch_size": 1,
    "model.max_batch_delay_ms": 100,
    "model.min_workers": CPUS,
    "model.max_workers": CPUS,
    "model.response_timeout_s": 120,
    "server.default_workers_per_model": CPUS,
    "server.number_of_netty_threads": CPUS,
    "server.netty_client_threads": CPUS,
    "server.job_queue_size": 100,
    "env.OMP_NUM_THREADS": CPUS,
    "env.MKL_NUM_THREADS": CPUS,
    "env.TORCH_NUM_THREADS": CPUS,
}


def _torchserve_default(axis: Axis, cpus: int) -> object | None:
    if axis.level == "env":  # "env.A+B": the first variable with a known default
        known = (TORCHSERVE_DEFAULTS.get(f"env.{var}") for var in axis.name.partition(".")[2].split("+"))
        default = next((d for d in known if d is not None), None)
    else:
        default = TORCHSERVE_DEFAULTS.get(axis.name)
    return cpus if default == CPUS else default


def default_point(axes: list[Axis], cpus: int) -> tuple[dict[str, object], list[str]]:
    """The point nearest to what TorchServe does by default on a machine of `cpus` CPUs, and
    one note per axis where that default is not one of the axis' values: which value stands
    in for it (the nearest number; the first value of an axis without a default)."""
    point: dict[str, object] = {}
    notes: list[str] = []
    for axis in axes:
        default = _torchserve_default(axis, cpus)
        target = axis_number(default)
        numbers = [axis_number(v) for v in axis.values]
        exact = [v for v, n in zip(axis.values, numbers) if (n == target if target is not None else v == default)]
        if default is not None and exact:
            point[axis.name] = exact[0]
        elif target is not None and None not in numbers:
            nearest = min(range(len(numbers)), key=lambda i: abs(numbers[i] - target))  # type: ignore[operator]
            point[axis.name] = axis.values[nearest]
            notes.append(f"{axis.name}: TorchServe's default {default} is not on the axis; "
                         f"{value_label(axis.values[nearest])} is the nearest value")
        else:
            point[axis.name] = axis.values[0]
            if len(axis.values) > 1:
                why = "has no TorchServe default" if default is None else f"has TorchServe default {default}, not on the axis"
                notes.append(f"{axis.name} {why}; its first value, {value_label(axis.values[0])}, stands in for it")
    return point, notes


def points(axes: list[Axis]) -> Iterator[dict[str, object]]:
    """Every point of the grid, the last axis varying fastest (plan order for `space`)."""
    names = [a.name for a in axes]
    for combo in itertools.product(*(a.values for a in axes)):
        yield dict(zip(names, combo))


def make_trial(spec: SweepSpec, point: Mapping[str, object], repeat: int) -> Trial:
    """The trial at `point` (axis name -> value). Values are taken as given: whether they
    lie on the axes is the strategy's contract (tests/search), not checked here."""
    server, env, model = {}, {}, {}
    for name, value in point.items():
        level, _, key = name.partition(".")
        if level == "server" and key:
            server[key] = value
        elif level == "env" and key:
            env.update({var: str(value) for var in key.split("+")})
        elif level == "model" and key in _MODEL_FIELDS:
            model[key] = value
        elif name not in ("load", "request"):
            raise ValueError(f"{name!r} is not an axis of a sweep")
    if "load" not in point:
        raise ValueError("a point needs a value for the 'load' axis")
    defaults = spec.model.model_dump()
    params = ModelParams(
        name=spec.model.name,
        batch_size=model.get("batch_size", defaults["batch_size"]),
        max_batch_delay_ms=model.get("max_batch_delay_ms", defaults["max_batch_delay_ms"]),
        min_workers=model.get("min_workers"),
        max_workers=model.get("max_workers", model.get("min_workers")),
        response_timeout_s=model.get("response_timeout_s", defaults["response_timeout_s"]),
    )
    load = point["load"]
    request = point.get("request")  # a request set (spec.RequestAxes), when the sweep has some
    server_t = tuple(sorted(server.items()))
    env_t = tuple(sorted(env.items()))
    identity = {"sweep": spec.name, "server": server_t, "env": env_t, "model": asdict(params), "load": asdict(load)}
    if request is not None:
        identity["request"] = request.identity()
    rule = capacity_rule(spec)
    if rule is not None:
        identity["capacity"] = asdict(rule)
    group_id = _digest({"server": server_t, "env": env_t})
    label = request.label if request is not None else None
    return Trial(spec.name, server_t, env_t, params, load, repeat, _digest(identity), group_id, label, rule)


def capacity_rule(spec: SweepSpec) -> CapacityRule | None:
    """search.capacity with the SLO and success rate it is judged by (objective capacity)."""
    c = spec.search.rate_search
    if c is None or spec.settings.slo_p99_ms is None:
        return None
    return CapacityRule(
        slo_p99_ms=spec.settings.slo_p99_ms,
        min_success_rate=spec.settings.min_success_rate,
        start_rps=c.start_rps,
        max_rps=c.max_rps,
        growth=c.growth,
        precision=c.precision,
        step_s=c.step_s,
        warmup_s=c.warmup_s,
        max_steps=c.max_steps,
    )


def count_trials(spec: SweepSpec) -> int:
    """Distinct trials (without repeats) that `expand` would produce, without building them:
    lets a caller refuse a huge grid before spending memory on it."""
    return math.prod(len(axis.values) for axis in space(spec))


def expand(spec: SweepSpec) -> list[Trial]:
    """Every trial of the grid and each of its repeats, in plan order."""
    trials: list[Trial] = []
    seen: set[str] = set()
    for point in points(space(spec)):
        trial = make_trial(spec, point, 0)
        if trial.trial_id in seen:
            # sweeper.spec rejects duplicate axis values and load profiles
            raise ValueError(f"two trials share the parameters of trial {trial.trial_id}")
        seen.add(trial.trial_id)
        trials += [replace(trial, repeat=r) for r in range(spec.settings.repeats)]
    return trials


# --- run order ----------------------------------------------------------------------------

ORDERS = ("grouped", "interleaved", "random")


def default_order(repeats: int) -> str:
    """interleaved when there is more than one repeat: slow drift on a shared machine
    (another tenant, thermal state, a JIT) then spreads over every configuration instead
    of favouring whichever ran at a quiet moment."""
    return "interleaved" if repeats > 1 else "grouped"


def order(trials: list[Trial], how: str = "grouped", seed: int = 0) -> list[Trial]:
    """The runs of `trials` (as expand made them) in the order `how`. Pure.

    - grouped: as expanded; each server group once, repeats back to back. Fewest restarts.
    - interleaved: one pass per repeat, every trial once per pass, each pass in the grouped
      order but with the groups and their model settings reversed on every other pass, so
      a pass starts with the server and model the previous one ended with (one restart
      and one registration saved per pass); two repeats of a trial never run back to back.
    - random: one pass per repeat; in each, the server groups, the model settings within a
      group and the loads within those in a random order (random.Random(seed)), kept as
      blocks so a pass costs no more restarts or registrations than an interleaved one;
      a pass starts with the group the previous one ended with when it can.
    """
    if how not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {how!r}")
    if how == "grouped":
        return list(trials)
    rng = random.Random(seed)
    out: list[Trial] = []
    for i, r in enumerate(sorted({t.repeat for t in trials})):
        blocks = _blocks([t for t in trials if t.repeat == r])
        if how == "interleaved":
            if i % 2 == 1:
                blocks.reverse()
                for models in blocks:
                    models.reverse()
            _not_back_to_back(blocks, out)
        else:
            rng.shuffle(blocks)
            for models in blocks:
                rng.shuffle(models)
                for loads in models:
                    rng.shuffle(loads)
            if out:  # continue on the server the last pass ended with
                last = out[-1].group_id
                blocks.sort(key=lambda b: b[0][0].group_id != last)
        out.extend(t for models in blocks for loads in models for t in loads)
    return out


def _not_back_to_back(blocks: list[list[list[Trial]]], before: list[Trial]) -> None:
    """If the pass would start with the trial the last pass ended with, start it with
    another load of that model (or, with one load only, another model setting)."""
    if not before or before[-1].trial_id != blocks[0][0][0].trial_id:
        return
    first = blocks[0]
    if len(first[0]) > 1:
        first[0].append(first[0].pop(0))
    elif len(first) > 1:
        first.append(first.pop(0))
    elif len(blocks) > 1:
        blocks.append(blocks.pop(0))


def _blocks(trials: list[Trial]) -> list[list[list[Trial]]]:
    """[group][model settings][trial], each level in first-seen order."""
    groups: dict[str, dict[ModelParams, list[Trial]]] = {}
    for t in trials:
        groups.setdefault(t.group_id, {}).setdefault(t.model, []).append(t)
    return [list(models.values()) for models in groups.values()]


class Costs(NamedTuple):
    """What running trials in an order costs beyond their windows."""

    starts: int  # servers started
    registrations: int  # models registered
    scalings: int = 0  # registrations whose workers were scaled in place (settings.scale_workers)


def costs(trials: list[Trial], keep_registered: bool = False, scale_workers: bool = False) -> Costs:
    """What running `trials` in this order costs with one server kept while the group stays
    the same (what the local executor does). The model is registered when its settings
    change; with `keep_registered` (settings.keep_registered), only the first time each
    setting runs on a server, as long as the kept ones fit in memory; with `scale_workers`
    (settings.scale_workers), a change of workers alone scales the registration instead."""
    return run_costs(((t.group_id, t.model) for t in trials), keep_registered, scale_workers)


def run_costs(runs: Iterable[tuple[Hashable, Hashable]], keep_registered: bool = False,
              scale_workers: bool = False) -> Costs:
    """`costs` of runs given as (server group, model settings) in the order they ran: of a
    plan, and of a finished run's rows."""
    starts = registrations = scalings = 0
    group = model = None
    seen: set = set()
    for run_group, run_model in runs:
        if run_group != group:
            starts += 1
            group, model, seen = run_group, None, set()
        if run_model != model and not (keep_registered and run_model in seen):
            if scale_workers and model is not None and workers_only(model, run_model):
                scalings += 1
                seen.discard(model)  # the registration now has the new workers
            else:
                registrations += 1
        model = run_model
        seen.add(run_model)
    return Costs(starts, registrations, scalings)


def workers_only(before: object, after: object) -> bool:
    """Whether two model settings differ in their worker counts alone, both given: a
    registration TorchServe can scale in place (PUT /models/NAME) instead of registering
    anew."""
    if not isinstance(before, ModelParams) or not isinstance(after, ModelParams):
        return False
    if before.min_workers is None or after.min_workers is None:
        return False
    return replace(before, min_workers=after.min_workers, max_workers=after.max_workers) == after
