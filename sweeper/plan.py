"""`expand(spec) -> list[Trial]`: the product of the axes, repeats, stable ids. Pure.

Trials are ordered so that each server-level group (config.properties keys and
environment, which need a JVM restart) is contiguous: the runner starts one TorchServe
per group. Within a group, trials sharing per-model settings are adjacent so the model is
re-registered only when those change; repeats of a trial run back to back.

`order(trials, how, seed)` then arranges the runs for fairness (settings.order):
grouped (as expanded), interleaved (repeat 0 of every trial, then repeat 1, ...) or
random (each repeat's pass in a seeded random order of blocks). `costs(trials)` counts
the server starts and model registrations an order costs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import asdict, dataclass

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
        return row


def _digest(obj: object) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _axes(mapping: dict[str, object]) -> list[list[tuple[str, object]]]:
    """{'a': [1, 2], 'b': 3, 'c': None} -> [[('a',1),('a',2)], [('b',3)]] (None: unset)."""
    out = []
    for key, value in mapping.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        out.append([(key, v) for v in values])
    return out


def _product(mapping: dict[str, object]) -> list[dict[str, object]]:
    return [dict(combo) for combo in itertools.product(*_axes(mapping))]


def _load_profiles(spec: SweepSpec) -> list[LoadProfile]:
    profiles = []
    for axes in spec.loads:
        fields = axes.model_dump()
        for combo in _product({"concurrency": fields.pop("concurrency"), "rate_rps": fields.pop("rate_rps")}):
            profiles.append(
                LoadProfile(
                    mode=axes.mode,
                    concurrency=combo.get("concurrency"),
                    rate_rps=float(combo["rate_rps"]) if "rate_rps" in combo else None,
                    duration_s=axes.duration_s,
                    requests=axes.requests,
                    processes=axes.processes,
                    timeout_s=axes.timeout_s,
                    cpu_affinity=tuple(spec.settings.client_cpus) if spec.settings.client_cpus else None,
                )
            )
    return profiles


def count_trials(spec: SweepSpec) -> int:
    """Distinct trials (without repeats) that `expand` would produce, without building them:
    lets a caller refuse a huge grid before spending memory on it."""
    n = len(_load_profiles(spec))
    model_fields = spec.model.model_dump()
    model_fields.pop("name")
    model_fields.pop("archive")
    n *= max(1, len(spec.requests))
    for mapping in (spec.server.model_dump(), dict(spec.env), model_fields):
        for axis in _axes(mapping):
            n *= len(axis)
    return n


def expand(spec: SweepSpec) -> list[Trial]:
    server_combos = _product(spec.server.model_dump())
    env_combos = _product(dict(spec.env))
    model_fields = spec.model.model_dump()
    name = model_fields.pop("name")
    model_fields.pop("archive")
    model_combos = _product(model_fields)
    loads = _load_profiles(spec)
    # The request axis: part of a trial's identity only when the sweep has a request group
    # (ids of sweeps without one stay what they were).
    requests = [(r.label, {"request": r.identity()}) for r in spec.requests] or [(None, {})]

    trials: list[Trial] = []
    seen: set[str] = set()
    for server, env in itertools.product(server_combos, env_combos):
        server_t = tuple(sorted(server.items()))
        # a joined key "A+B" sets A and B to the same value (one axis, not two)
        env_t = tuple(sorted((name, str(v)) for k, v in env.items() for name in k.split("+")))
        group_id = _digest({"server": server_t, "env": env_t})
        for m in model_combos:
            model = ModelParams(
                name=name,
                batch_size=m["batch_size"],
                max_batch_delay_ms=m["max_batch_delay_ms"],
                min_workers=m.get("min_workers"),
                max_workers=m.get("max_workers", m.get("min_workers")),
                response_timeout_s=m["response_timeout_s"],
            )
            for (label, request), load in itertools.product(requests, loads):
                trial_id = _digest({"sweep": spec.name, "server": server_t, "env": env_t, "model": asdict(model), "load": asdict(load), **request})
                if trial_id in seen:
                    # sweeper.spec rejects duplicate axis values and load profiles
                    raise ValueError(f"two trials share the parameters of trial {trial_id}")
                seen.add(trial_id)
                for r in range(spec.settings.repeats):
                    trials.append(Trial(spec.name, server_t, env_t, model, load, r, trial_id, group_id, label))
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


def costs(trials: list[Trial]) -> tuple[int, int]:
    """(server starts, model registrations) of running `trials` in this order with one
    server kept while the group stays the same and the model re-registered when its
    settings change (what the local executor does)."""
    starts = registrations = 0
    group = model = None
    for t in trials:
        if t.group_id != group:
            starts += 1
            group, model = t.group_id, None
        if t.model != model:
            registrations += 1
            model = t.model
    return starts, registrations
