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

Every error becomes one SpecError naming the file, the key path, the rule and the value:
`sweeps/x.yaml: model.batch_size[2]: must be >= 1, got 0`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union
from urllib.parse import urlsplit

from pydantic import (
    StrictBool,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from .defaults import MAX_DUEL_BLOCKS_S, MIN_SUCCESS_RATE
from .gpu import GPU_ENV, gpu_list_problem
from .machine import IPV4, is_loopback, machine_cores
from .spec_axes import check_distinct, prepare_axis
from .spec_errors import key_text, show
from .spec_rules import CONTENT_TYPE, ENV_NAME, MODEL_NAME, PATTERN_RULES, REQUEST_NAME, SAFE_TEXT, SERVED_NAME, STORE_PATH, SWEEP_NAME, TARGET_URL

SafeText = Annotated[str, StringConstraints(pattern=SAFE_TEXT, max_length=200)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME, max_length=200)]

# Variables the sweeper sets itself for every server (sweeper.torchserve.process); TS_CONFIG_FILE
# would make TorchServe ignore the rendered config.properties.
RESERVED_ENV = frozenset({"TS_CONFIG_FILE", "TMPDIR", "TEMP", "LOG_LOCATION", "METRICS_LOCATION"})

JAVA_INT_MAX = 2**31 - 1  # TorchServe parses these counts as Java ints

PosInt = Annotated[int, Field(ge=1, le=JAVA_INT_MAX, strict=True)]
NonNegInt = Annotated[int, Field(ge=0, le=JAVA_INT_MAX, strict=True)]
PosFloat = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]

# cores, 2*cores, cores*2, cores/2, 3*cores/2 (small numbers: no 5000-digit ints)
class _Strict(BaseModel):
    """Unknown keys forbidden; list-valued fields in `_lists` are checked as axes.

    `_lists`: fields where a list is allowed (non-empty, no duplicate values);
    `_relative`: fields that accept machine-relative counts (`2*cores`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    _lists: ClassVar[tuple[str, ...]] = ()
    _relative: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _prepare_lists(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        cores = machine_cores() if cls._relative else 0
        for key in cls._lists:
            if key in data:
                out[key] = prepare_axis(key, data[key], cores, relative=key in cls._relative, text_ok=False)
        return out

    @model_validator(mode="after")
    def _distinct_lists(self) -> Any:
        for key in self._lists:  # a safety net: _prepare_axis reports with the file's indices
            value = getattr(self, key)
            if isinstance(value, list):
                check_distinct(key, value)
        return self


class ModelAxes(_Strict):
    """Per-model settings, applied through the management API (no restart)."""

    _lists = ("batch_size", "max_batch_delay_ms", "min_workers", "max_workers", "response_timeout_s")
    _relative = ("min_workers", "max_workers")

    archive: Union[Annotated[str, StringConstraints(pattern=STORE_PATH, max_length=4096)], None] = Field(
        None,
        description=(
            "Your own model archive (.mar, built by torch-model-archiver), relative to the sweep file or "
            "absolute. The served model's name then comes from its MAR-INF/MANIFEST.json, the archive's "
            "directory is the model store, and a `request` group is required."
        ),
    )
    name: Annotated[str, StringConstraints(max_length=100)] = Field(
        "mlp",
        description=(
            "The model to serve: one of the sweeper's own (mlp, cnn, transformer: handlers/models.py) or "
            "NAME.mar in settings.model_store. With archive it comes from the manifest: leave it out, or give "
            "the same name."
        ),
    )
    registered: Union[Annotated[str, StringConstraints(pattern=SERVED_NAME, max_length=100)], None] = Field(
        None,
        description=(
            "With a target: a model already registered there under this name, swept instead of an archive "
            "(model.name is then this name). Its own settings fill the per-model keys the sweep leaves out; "
            "trials with its batch size, delay and timeout run on it, its workers scaled in place and restored "
            "afterwards; other trials run on a copy registered from its archive as NAME_sweeper_<n>."
        ),
    )
    batch_size: Union[PosInt, list[PosInt]] = Field(
        1,
        description=(
            "Max batch size: the most requests TorchServe hands the handler at once (the registration's "
            "batch_size)."
        ),
    )
    max_batch_delay_ms: Union[NonNegInt, list[NonNegInt]] = Field(
        100,
        description=(
            "How long TorchServe waits to fill a batch before it sends a smaller one, in ms (the "
            "registration's max_batch_delay)."
        ),
    )
    min_workers: Union[PosInt, list[PosInt], None] = Field(
        None,
        description=(
            "Backend worker processes the model is registered with, each loading its own copy of the model "
            "(initial_workers, then min_worker). Not set: server.default_workers_per_model decides."
        ),
    )
    max_workers: Union[PosInt, list[PosInt], None] = Field(
        None,
        description=(
            "The most backend workers TorchServe may scale the model to (max_worker); applied together with "
            "min_workers only. Not set: min_workers."
        ),
    )
    response_timeout_s: Union[PosInt, list[PosInt]] = Field(
        120,
        description=(
            "A request the handler takes longer than this to answer fails, in seconds (the registration's "
            "response_timeout); an archive's own responseTimeout wins."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _registered_names_the_model(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("registered") is None:
            return data
        if data.get("archive") is not None:
            raise ValueError("registered: not with archive (a registered model is served from its own archive)")
        if "name" in data and data["name"] != data["registered"]:
            raise ValueError(f"name: the model is the registered one, {show(data['registered'])}: leave name out, got {show(data['name'])}")
        return {**data, "name": data["registered"]}

    @model_validator(mode="after")
    def _name_rule(self) -> "ModelAxes":
        # A built-in model or an archive in a model store is named as its file: lowercase.
        # With an archive the manifest's name is served, which TorchServe allows wider; so
        # is a model someone registered on a target.
        wide = self.archive is not None or self.registered is not None
        pattern, rule = (SERVED_NAME, "must be letters, digits, _ . - (the archive's model name)") if wide else (MODEL_NAME, PATTERN_RULES[MODEL_NAME])
        if not re.fullmatch(pattern, self.name):
            raise ValueError(f"name: {rule}, got {show(self.name)}")
        return self

    @model_validator(mode="after")
    def _workers_ordered(self) -> "ModelAxes":
        if self.min_workers is not None and self.max_workers is not None:
            lo = max(_as_list(self.min_workers))
            hi = min(_as_list(self.max_workers))
            if hi < lo:
                raise ValueError(f"max_workers: must be >= min_workers ({lo}) in every trial, got {hi}")
        return self


class ServerAxes(_Strict):
    """config.properties keys that need a TorchServe restart. None = TorchServe's default."""

    _lists = (
        "number_of_netty_threads",
        "netty_client_threads",
        "default_workers_per_model",
        "job_queue_size",
        "max_request_size",
        "max_response_size",
        "use_native_io",
        "vmargs",
        "number_of_gpu",
    )
    _relative = ("number_of_netty_threads", "netty_client_threads", "default_workers_per_model")

    number_of_netty_threads: Union[PosInt, list[PosInt], None] = Field(
        None,
        description=(
            "Frontend threads that handle the requests of accepted connections (TorchServe's default: one per "
            "CPU)."
        ),
    )
    netty_client_threads: Union[PosInt, list[PosInt], None] = Field(
        None,
        description=(
            "Backend threads that carry the workers' responses to the frontend (TorchServe's default: one per "
            "CPU)."
        ),
    )
    default_workers_per_model: Union[PosInt, list[PosInt], None] = Field(
        None,
        description=(
            "Workers a model gets when registered without model.min_workers (TorchServe's default: one per "
            "CPU, or per GPU)."
        ),
    )
    job_queue_size: Union[PosInt, list[PosInt], None] = Field(
        None,
        description=(
            "Inference requests the frontend queues per model before it refuses more with 503 (TorchServe's "
            "default: 100)."
        ),
    )
    max_request_size: Union[PosInt, list[PosInt], None] = Field(
        None,
        description=(
            "Largest request body TorchServe accepts, in bytes (TorchServe's default: 6,553,500); a payload "
            "above it is refused before anything starts."
        ),
    )
    max_response_size: Union[PosInt, list[PosInt], None] = Field(
        None,
        description="Largest response body TorchServe sends, in bytes (TorchServe's default: 6,553,500).",
    )
    use_native_io: Union[bool, list[bool], None] = Field(
        None,
        description=(
            "Netty's native transport (epoll on Linux) instead of Java NIO: true or false (TorchServe's "
            "default: true)."
        ),
    )
    vmargs: Union[SafeText, list[SafeText], None] = Field(
        None,
        description=(
            "Options of the frontend's JVM, e.g. `-Xmx4g -XX:+UseG1GC`; a log4j configuration named here "
            "replaces the sweeper's."
        ),
    )
    # TorchServe caps it silently at the GPUs it sees; sweeper.preflight refuses a value
    # above what this machine has instead (docs/gpu.md)
    number_of_gpu: Union[NonNegInt, list[NonNegInt], None] = Field(
        None,
        description=(
            "GPUs TorchServe gives the workers, round-robin (gpu_id 0..n-1 of the visible ones); 0 keeps every "
            "worker on the CPU (TorchServe's default: every GPU it sees)."
        ),
    )

    @field_validator("use_native_io", mode="before")
    @classmethod
    def _strict_bool(cls, v: Any) -> Any:
        # pydantic would take "yes", 1, "on" for a bool; a sweep file says true or false
        for i, item in enumerate(_as_list(v)):
            if item is not None and not isinstance(item, bool):
                where = f"[{i}]: " if isinstance(v, list) else ""
                raise ValueError(f"{where}must be true or false, got {show(item)}")
        return v


class LoadAxes(_Strict):
    """One load profile; list-valued concurrency / rate_rps are axes."""

    _lists = ("concurrency", "rate_rps")

    mode: Literal["closed", "open"] = Field(
        ...,
        description=(
            "closed: `concurrency` requests in flight, the next sent as one is answered; open: `rate_rps` "
            "requests per second on a fixed schedule, latency counted from each request's scheduled time."
        ),
    )
    concurrency: Union[PosInt, list[PosInt], None] = Field(
        None,
        description="Closed loop (required there): requests in flight, split over the engine processes.",
    )
    rate_rps: Union[PosFloat, list[PosFloat], None] = Field(
        None,
        description="Open loop (required there): requests per second, sent on a fixed schedule.",
    )
    duration_s: Union[PosFloat, None] = Field(
        None,
        description=(
            "How long the load is sent, in seconds: the measured window. Open loop: required; closed loop: "
            "this or `requests`. Not used under settings.stability."
        ),
    )
    requests: Union[PosInt, None] = Field(
        None,
        description="Closed loop: send this many requests instead of sending for duration_s.",
    )
    processes: PosInt = Field(
        1,
        description="Load engine processes the load is split over (one event loop each, at most one core each).",
    )
    timeout_s: PosFloat = Field(
        30.0,
        description="A request unanswered after this many seconds is a timeout (status -1 in client_status_counts).",
    )

    @model_validator(mode="after")
    def _mode_fields(self) -> "LoadAxes":
        if self.mode == "closed":
            if self.concurrency is None:
                raise ValueError("concurrency: required for mode closed")
            if self.rate_rps is not None:
                raise ValueError("rate_rps: only for mode open (closed loop keeps concurrency requests in flight)")
            if (self.duration_s is None) == (self.requests is None):
                both = "both were given" if self.duration_s is not None else "neither was given"
                raise ValueError(f"duration_s: give exactly one of duration_s or requests for mode closed, {both}")
        else:
            if self.rate_rps is None:
                raise ValueError("rate_rps: required for mode open")
            if self.concurrency is not None:
                raise ValueError("concurrency: only for mode closed (open loop sends at rate_rps)")
            if self.requests is not None:
                raise ValueError("requests: only for mode closed (open loop runs for duration_s)")
            if self.duration_s is None:
                raise ValueError("duration_s: required for mode open")
        return self

    def profiles(self) -> list[tuple]:
        """The profile tuples this entry expands to (for duplicate detection)."""
        return [
            (self.mode, c, r, self.duration_s, self.requests, self.processes, self.timeout_s)
            for c in _as_list(self.concurrency)
            for r in _as_list(self.rate_rps)
        ]


class StabilitySettings(_Strict):
    """settings.stability: measure in windows until the last `windows` windows agree (the
    coefficient of variation of their throughputs and of their `latency` figures, the mean
    by default or the p99, both <= max_cv), or until max_duration_s, when the trial is
    marked unstable (sweeper.load.windows). The load's duration_s is then not used. Why
    the defaults: the comments below and the README ("Stable numbers")."""

    # 3 windows of 2 s: 6 s at least, one second more than a fixed 5 s window; a 2 s
    # window holds 300 requests at the batching sweep's lowest rate (150 req/s), enough
    # for a p99 that is not just the slowest request. 10%: Perf Analyzer's stability
    # threshold. 12 s cap: twice the minimum, so a sweep where half the trials never
    # settle still takes about 1.5x the fixed-duration time.
    window_s: PosFloat = Field(2.0, description="Length of one window, in seconds.")
    windows: Annotated[int, Field(ge=2, le=1000, strict=True)] = Field(
        3,
        description="How many of the last complete windows must agree; the trial's figures come from them.",
    )
    max_cv: Annotated[float, Field(gt=0, le=1, strict=True, allow_inf_nan=False)] = Field(
        0.10,
        description=(
            "How much the windows' throughputs and latencies may vary: their coefficient of variation "
            "(standard deviation / mean), 0.10 = 10%."
        ),
    )
    max_duration_s: PosFloat = Field(
        12.0,
        description=(
            "Longest measurement, in seconds; a trial whose windows never agreed by then is marked unstable "
            "(client_unstable)."
        ),
    )
    # why the mean by default: sweeper.load.windows, docs/measurements.md#code-stability-mean-latency
    latency: Literal["mean", "p99"] = Field(
        "mean",
        description=(
            "Which latency figure of the windows must agree: their mean (Perf Analyzer's default) or their "
            "p99, which in a 2 s window rests on a few requests."
        ),
    )

    @model_validator(mode="after")
    def _room_for_the_windows(self) -> "StabilitySettings":
        if self.max_duration_s < self.window_s * self.windows:
            raise ValueError(
                f"max_duration_s: must be >= windows x window_s ({self.windows} x {self.window_s:g} s), "
                f"got {self.max_duration_s:g}"
            )
        return self


class DuelSettings(_Strict):
    """settings.duel: after the sweep, the recommendation's winner and runner-up measured
    head to head (sweeper.duel): kept alive at once, the load alternating between them in
    blocks (ABBA or BAAB per quad), the verdict from the paired blocks
    (sweeper.analysis.paired). Why the defaults: docs/duel.md."""

    # 56 one-second blocks: about a minute, in which a 3% difference with 2% block noise is
    # separated under a 20 s on / 20 s off drift in most duels (docs/duel.md); the whole
    # duel cost the batching sweep 97 s (docs/measurements.md#code-duel-cost)
    blocks: Annotated[int, Field(ge=12, le=100_000, multiple_of=4, strict=True)] = Field(
        56,
        description=(
            "Measured blocks, half for each of the two (a multiple of 4, at least 12); one more quad of "
            "blocks runs first, unmeasured."
        ),
    )
    block_s: Annotated[float, Field(ge=0.2, le=600, strict=True, allow_inf_nan=False)] = Field(
        1.0,
        description=(
            "Length of one block, in seconds; longer when the two's p99 needs it (each block's first part, "
            "at least 0.2 s and twice the larger p99, is not measured)."
        ),
    )

    @model_validator(mode="after")
    def _within_a_key(self) -> "DuelSettings":
        # the blocks and their lead-in quad within what a TorchServe key allows
        if (self.blocks + 4) * self.block_s > MAX_DUEL_BLOCKS_S:
            raise ValueError(
                f"blocks: {self.blocks} blocks of {self.block_s:g} s (and 4 lead-in blocks) last more than 45 "
                "minutes, longer than a TorchServe key allows"
            )
        return self


class Settings(_Strict):
    """settings: how each trial runs, what counts as a failed one, where the servers listen."""

    _lists = ("client_cpus", "server_cpus")

    repeats: PosInt = Field(
        1,
        description="Runs of each trial; 2 or more show the run-to-run spread (and run interleaved by default).",
    )
    warmup_s: NonNegFloat = Field(
        2.0,
        description=(
            "Load sent before each trial's measured window and not measured, in seconds (closed loop, as wide "
            "as the trial's load)."
        ),
    )
    # Extra warm-up before the first trial on a freshly started TorchServe: its JVM
    # compiles the request path while serving (JIT), so a cold frontend serves markedly
    # less for its first seconds of load (docs/measurements.md#code-server-warmup). At least
    # server_warmup_s, then until the JIT compiler threads are quiet
    # (sweeper.torchserve.jit), at most server_warmup_max_s (default: 3x server_warmup_s,
    # 45 s). 0: no server warm-up.
    server_warmup_s: NonNegFloat = Field(
        15.0,
        description=(
            "Extra warm-up before the first trial on a freshly started TorchServe, in seconds: at least this, "
            "then on while the JVM's JIT compiler threads are busy, up to server_warmup_max_s. 0 (and no "
            "server_warmup_max_s): none."
        ),
    )
    server_warmup_max_s: Union[NonNegFloat, None] = Field(
        None,
        description="Longest server warm-up, in seconds. Not set: 3 x server_warmup_s.",
    )
    # The extra warm-up of the first trial on a model registration made for it (the sweep
    # moved on to per-model settings not yet registered on this server), before the
    # trial's own warmup_s; the first trial on a fresh server gets the server warm-up
    # instead. At least registration_warmup_s, then on while the JVM's JIT compiler threads
    # are busy (sweeper.warmup.warm_registration), at most registration_warmup_max_s
    # (default 3x registration_warmup_s). New workers and the frontend's new path serve
    # slower at first while the JIT compiles again, and without this warm-up the first
    # window of a trial on a new registration reads low where a kept one does not: a bias
    # against every repeat 0 (docs/measurements.md#code-registration-jit). 0: none.
    registration_warmup_s: NonNegFloat = Field(
        3.0,
        description=(
            "Extra warm-up of the first trial on a model registration made for it (other than a fresh "
            "server's first trial), before its warmup_s, in seconds: at least this, then on while the JIT "
            "compiler threads are busy, up to registration_warmup_max_s. 0 (and no "
            "registration_warmup_max_s): none."
        ),
    )
    registration_warmup_max_s: Union[NonNegFloat, None] = Field(
        None,
        description="Longest registration warm-up, in seconds. Not set: 3 x registration_warmup_s.",
    )
    ready_timeout_s: PosFloat = Field(
        60.0,
        description="How long a started TorchServe may take to answer, in seconds; a slower start fails the trial.",
    )
    max_consecutive_failures: PosInt = Field(
        3,
        description="The sweep stops after this many failed trials in a row (trials already running still finish).",
    )
    slo_p99_ms: Union[PosFloat, None] = Field(
        None,
        description=(
            "Latency objective, in ms: the recommendation and the searches keep to trials whose p99 is at "
            "most this; required with search.objective capacity. Not set: no latency objective."
        ),
    )
    min_success_rate: Annotated[float, Field(ge=0, le=1, strict=False, allow_inf_nan=False)] = Field(
        MIN_SUCCESS_RATE,
        description="A trial whose share of answers with request.expect_status is below this failed (0 to 1).",
    )
    max_trials: PosInt = Field(
        200,
        description="The most trials (configurations; with a search, budget_trials) a sweep may have without --yes.",
    )
    probe_interval_s: PosFloat = Field(
        0.25,
        description=(
            "How often the server's processes and the machine's CPU speed are sampled during the window, in "
            "seconds."
        ),
    )
    # TorchServe's address pattern has no room for an IPv6 literal
    host: str = Field(
        "127.0.0.1",
        description=(
            "The address every server listens on: localhost or an IPv4 address of this machine (0.0.0.0: all "
            "of them); beyond loopback only with token_auth."
        ),
    )
    token_auth: StrictBool = Field(
        True,
        description=(
            "TorchServe's token authorization: keys read from the server's key file and sent as bearer "
            "tokens; false is allowed on loopback only."
        ),
    )
    model_store: Union[Annotated[str, StringConstraints(pattern=STORE_PATH, max_length=4096)], None] = Field(
        None,
        description=(
            "Directory of NAME.mar archives, relative to the sweep file or absolute; not with model.archive. "
            "Not set: the project's model_store/."
        ),
    )
    client_cpus: Union[list[NonNegInt], None] = Field(
        None,
        description="CPU numbers the load engine processes may run on. Not set: any.",
    )
    server_cpus: Union[list[NonNegInt], None] = Field(
        None,
        description="CPU numbers TorchServe and its workers may run on. Not set: any.",
    )
    base_port: Union[Annotated[int, Field(ge=1024, le=65530, strict=True)], None] = Field(
        None,
        description=(
            "Fixed ports base_port to base_port+4 (inference, management, metrics, two gRPC), for firewalls, "
            "checked free before anything starts. Not set: free ports chosen per server."
        ),
    )
    baseline: StrictBool = Field(
        False,
        description=(
            "After the trials, measure the in-process ceiling of the same model and handler (baseline.csv and "
            "the efficiency column); skipped under --ray."
        ),
    )
    stability: Union[StabilitySettings, None] = Field(
        None,
        description=(
            "Measure in windows until they agree instead of for a fixed load.duration_s (`stability: {}`: the "
            "defaults). Not set: one fixed window."
        ),
    )
    order: Union[Literal["grouped", "interleaved", "random"], None] = Field(
        None,
        description=(
            "Run order: grouped (plan order: each server-level group and each model setting once), "
            "interleaved (repeat 0 of every trial, then repeat 1, ...) or random (each pass in a seeded "
            "random order). Not set: interleaved when repeats > 1, else grouped."
        ),
    )
    seed: NonNegInt = Field(
        0,
        description="Seed of the random order, and of search.strategy random and optuna when search.seed is not set.",
    )
    # interleaved and random orders return to each setting once per pass; kept idle workers
    # use memory only (sweeper.executors.local caps it)
    keep_registered: StrictBool = Field(
        True,
        description=(
            "Keep a model's registration and its idle workers when the sweep moves on to other per-model "
            "settings, and run later trials with the same settings on it instead of registering anew; false: "
            "one registration at a time."
        ),
    )
    scale_workers: StrictBool = Field(
        True,
        description=(
            "When the next trial's model settings differ from the last one's in min_workers/max_workers alone, "
            "scale the registration in place (PUT /models/NAME) instead of registering anew: no new "
            "registration, so no registration warm-up; false: every change of settings registers."
        ),
    )
    placement: Literal["spread", "every_node"] = Field(
        "spread",
        description=(
            "With `sweeper run --ray`: spread runs each trial once, on any free node; every_node runs each "
            "trial on every node (one machine type per node)."
        ),
    )
    duel: Union[DuelSettings, None] = Field(
        None,
        description=(
            "After the sweep, measure the recommendation's winner and runner-up head to head, alternating "
            "in short blocks on one host, and let the paired verdict decide between them (`duel: {}`: the "
            "defaults; about 1.5-2 minutes). Not set: no duel (`sweeper duel RUN_DIR` runs one later)."
        ),
    )

    @field_validator("host", mode="before")
    @classmethod
    def _host_is_ours(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v  # the type check reports it
        if v != "localhost" and not IPV4.fullmatch(v):
            raise ValueError(f"must be an IPv4 address or localhost (TorchServe cannot parse IPv6), got {show(v)}")
        return v  # whether this machine has the address is preflight's question (sweeper.preflight)

    @model_validator(mode="after")
    def _remote_needs_token(self) -> "Settings":
        if not self.token_auth and not is_loopback(self.host):
            raise ValueError(
                f"host: listening on {self.host}, beyond loopback, needs token_auth: true "
                f"(token_auth: false is allowed on 127.0.0.1 or localhost only)"
            )
        return self

    @property
    def server_warmup_cap_s(self) -> float:
        """The longest server warm-up: server_warmup_max_s, or 3x server_warmup_s."""
        if self.server_warmup_max_s is not None:
            return self.server_warmup_max_s
        return 3.0 * self.server_warmup_s

    @property
    def registration_warmup_cap_s(self) -> float:
        """The longest registration warm-up: registration_warmup_max_s, or 3x registration_warmup_s."""
        if self.registration_warmup_max_s is not None:
            return self.registration_warmup_max_s
        return 3.0 * self.registration_warmup_s

    @model_validator(mode="after")
    def _warmup_cap(self) -> "Settings":
        for key in ("server_warmup", "registration_warmup"):
            low, high = getattr(self, f"{key}_s"), getattr(self, f"{key}_max_s")
            if high is not None and high < low:
                raise ValueError(f"{key}_max_s: must be >= {key}_s ({low:g}), got {high:g}")
        return self


class RequestAxes(_Strict):
    """What each request carries (sweeper.payload reads the files before any server starts).

    Exactly one of files (sent round-robin, one per request, byte for byte), text or json.
    A list of request sets is an axis; each then needs a name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    name: Union[Annotated[str, StringConstraints(pattern=REQUEST_NAME, max_length=60)], None] = Field(
        None,
        description="The request set's name, in the results' param_request_name; required when request is a list.",
    )
    files: Union[list[Annotated[str, StringConstraints(pattern=STORE_PATH, max_length=4096)]], None] = Field(
        None,
        description=(
            "Payload files, relative to the sweep file or absolute, sent round-robin, one per request, byte "
            "for byte (16 MiB each, 64 MiB in all at most)."
        ),
    )
    text: Union[str, None] = Field(
        None,
        description="A text payload, sent UTF-8 encoded (text/plain unless content_type says otherwise).",
    )
    # `json: null` sends null: told apart from an absent json by model_fields_set
    json_: Any = Field(
        default=None, alias="json",
        description="Any YAML value, sent as JSON (application/json unless content_type says otherwise).",
    )
    content_type: Union[Annotated[str, StringConstraints(pattern=CONTENT_TYPE, max_length=200)], None] = Field(
        None,
        description=(
            "The requests' Content-Type. Not set: from each file's extension (else application/octet-stream), "
            "text/plain for text, application/json for json."
        ),
    )
    method: Literal["POST", "PUT"] = Field("POST", description="The HTTP method of every request.")
    expect_status: Annotated[int, Field(ge=200, le=299, strict=True)] = Field(
        200,
        description="The status that counts as served; an answer with any other status is a failed request.",
    )

    @model_validator(mode="after")
    def _one_body(self) -> "RequestAxes":
        given = [k for k in ("files", "text", "json_") if k in self.model_fields_set]
        if len(given) != 1:
            what = "none was given" if not given else "got " + " and ".join(k.rstrip("_") for k in given)
            raise ValueError(f"give exactly one of files, text or json, {what}")
        if self.files is not None and not self.files:
            raise ValueError("files: must not be empty (give at least one file)")
        return self

    @property
    def has_json(self) -> bool:
        return "json_" in self.model_fields_set

    @property
    def label(self) -> str:
        """The request set's name in results (param_request_name)."""
        if self.name:
            return self.name
        if self.files is not None:
            return Path(self.files[0]).name if len(self.files) == 1 else f"{len(self.files)} files"
        return "text" if self.text is not None else "json"

    def identity(self) -> dict:
        """What makes two request sets different (part of a trial's id)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=False)


EnvValue = Union[SafeText, StrictInt]


class CapacitySettings(_Strict):
    """search.capacity: the open-loop rate search of `objective: capacity` (sweeper.capacity).

    The rate grows x`growth` from start_rps until a step fails (p99 > settings.slo_p99_ms,
    success < settings.min_success_rate, or the engine could not keep the rate), then a
    binary search narrows it until (fail - pass) / pass <= precision; never more than
    max_steps steps of step_s each (the first warmup_s of a step is sent, not judged)."""

    # 50 -> 6400 req/s in 8 steps; 5%: about 4 halvings after the first failure. 16 steps of
    # 3 s: about a minute per trial at most (a step costs step_s + ~1 s engine start).
    start_rps: PosFloat = Field(50.0, description="The first step's rate, in requests per second.")
    max_rps: PosFloat = Field(
        20000.0,
        description=(
            "The highest rate tried, in requests per second; when it passes, the capacity is at least this "
            "(capacity_limited_by max_rps)."
        ),
    )
    growth: Annotated[float, Field(gt=1, le=16, strict=False, allow_inf_nan=False)] = Field(
        2.0,
        description="Factor the rate grows by from one passing step to the next, until a step fails.",
    )
    precision: Annotated[float, Field(gt=0, le=1, strict=False, allow_inf_nan=False)] = Field(
        0.05,
        description=(
            "After the first failure a binary search narrows the rate until (fail - pass) / pass is at most "
            "this."
        ),
    )
    step_s: Annotated[float, Field(ge=0.5, le=600, strict=False, allow_inf_nan=False)] = Field(
        3.0,
        description="Length of one step, in seconds, its warmup_s included.",
    )
    warmup_s: NonNegFloat = Field(0.5, description="The start of each step that is sent but not judged, in seconds.")
    max_steps: Annotated[int, Field(ge=2, le=100, strict=True)] = Field(
        16,
        description="The most steps one search may take (capacity_limited_by gets +steps when they ran out).",
    )
    processes: PosInt = Field(1, description="Load engine processes of every step.")
    timeout_s: PosFloat = Field(
        30.0,
        description="A request unanswered after this many seconds is a timeout (status -1).",
    )

    @model_validator(mode="after")
    def _ranges(self) -> "CapacitySettings":
        if self.max_rps < self.start_rps:
            raise ValueError(f"max_rps: must be >= start_rps ({self.start_rps:g}), got {self.max_rps:g}")
        if self.warmup_s >= self.step_s:
            raise ValueError(f"warmup_s: must be < step_s ({self.step_s:g}: the rest of the step is judged), got {self.warmup_s:g}")
        return self


DEFAULT_CONFIRM = 3  # search.confirm of random and optuna


class SearchSettings(_Strict):
    """How the trials are chosen (sweeper.search): the whole grid, a sample of it, or a
    search (optuna) for the best configuration; and what ranks them (`objective`,
    sweeper.analysis.objective)."""

    strategy: Literal["grid", "random", "optuna"] = Field(
        "grid",
        description=(
            "grid: every configuration; random: budget_trials configurations drawn uniformly without "
            "replacement; optuna: budget_trials configurations chosen by Optuna from the results so far."
        ),
    )
    budget_trials: Union[PosInt, None] = Field(
        None,
        description=(
            "Configurations to measure, each settings.repeats times; required with random and optuna (a grid "
            "measures every configuration)."
        ),
    )
    seed: Union[NonNegInt, None] = Field(
        None,
        description="Seed of the random draw or of Optuna's sampler. Not set: settings.seed.",
    )
    objective: Literal["throughput", "latency", "capacity"] = Field(
        "throughput",
        description=(
            "What ranks configurations: throughput (the highest client throughput), latency (the lowest p99) "
            "or capacity (capacity_rps_at_slo, measured by a rate search); always subject to "
            "settings.slo_p99_ms and settings.min_success_rate."
        ),
    )
    capacity: Union[CapacitySettings, None] = Field(
        None,
        description="The rate search of objective capacity (only with it). Not set: its defaults.",
    )
    # grid's default 0: every configuration is measured alike (sweeper.search.confirm)
    confirm: Union[NonNegInt, None] = Field(
        None,
        description=(
            "After the search, the best this many feasible configurations get settings.repeats more repeats "
            "each before the recommendation ranks them. Not set: 3 for random and optuna, 0 for grid."
        ),
    )

    @property
    def confirm_top(self) -> int:
        if self.confirm is not None:
            return self.confirm
        return 0 if self.strategy == "grid" else DEFAULT_CONFIRM

    @model_validator(mode="after")
    def _capacity_only_for_capacity(self) -> "SearchSettings":
        if self.capacity is not None and self.objective != "capacity":
            raise ValueError(f"capacity: only with objective capacity (the rate search), got objective {self.objective!r}")
        return self

    @property
    def rate_search(self) -> CapacitySettings | None:
        """The rate search's settings when the objective is capacity, defaults filled in."""
        if self.objective != "capacity":
            return None
        return self.capacity or CapacitySettings()

    @model_validator(mode="after")
    def _budget_needed(self) -> "SearchSettings":
        if self.strategy != "grid" and self.budget_trials is None:
            raise ValueError(f"budget_trials: required with strategy {self.strategy!r} (how many configurations to measure)")
        return self


TargetUrl = Annotated[str, StringConstraints(pattern=TARGET_URL, max_length=300)]
# TorchServe's default management and metrics ports: a target's addresses when not given
DEFAULT_MANAGEMENT_PORT = 8081
DEFAULT_METRICS_PORT = 8082


class TargetSettings(_Strict):
    """target: a TorchServe someone else started, measured instead of servers of the
    sweeper's own (sweeper.attach). Only what needs no restart can be swept there:
    per-model settings, request sets and load."""

    inference: Union[TargetUrl, None] = Field(
        None,
        description=(
            "The target's inference address, e.g. http://127.0.0.1:8080 (required; `sweeper run --target URL` "
            "sets it). With a target the sweeper starts no TorchServe."
        ),
    )
    management: Union[TargetUrl, None] = Field(
        None,
        description=(
            "Its management address (registrations, workers). Not set: the inference address's host on "
            "TorchServe's default management port, 8081."
        ),
    )
    metrics: Union[TargetUrl, None] = Field(
        None,
        description=(
            "Its metrics address (/metrics; the server_* columns need metrics_mode=prometheus there). Not "
            "set: the inference address's host on TorchServe's default metrics port, 8082."
        ),
    )
    key_file: Union[Annotated[str, StringConstraints(pattern=STORE_PATH, max_length=4096)], None] = Field(
        None,
        description=(
            "The target's key_file.json (written where it was started) when its token authorization is on, "
            "relative to the sweep file or absolute: its inference and management keys are sent as bearer "
            "tokens, re-read before each trial and never regenerated. Not set: no key is sent."
        ),
    )
    allow_remote: StrictBool = Field(
        False,
        description=(
            "Allow a target beyond loopback (127.0.0.0/8, localhost): load and API calls then leave this "
            "machine (`sweeper run --allow-remote` sets it)."
        ),
    )

    @model_validator(mode="after")
    def _where(self) -> "TargetSettings":
        if self.inference is None:
            raise ValueError("inference: required (the target's inference address, e.g. http://127.0.0.1:8080, or sweeper run --target URL)")
        if not self.allow_remote:
            for key in ("inference", "management", "metrics"):
                url = getattr(self, key)
                host = urlsplit(url).hostname if url else None
                if host is not None and not is_loopback(host):
                    raise ValueError(
                        f"{key}: {url} is beyond loopback: set target.allow_remote: true (or pass --allow-remote) "
                        "to send load and API calls to another machine"
                    )
        return self

    def _default(self, port: int) -> str:
        parts = urlsplit(self.inference)
        return f"http://{parts.hostname}:{port}"

    @property
    def management_url(self) -> str:
        return (self.management or self._default(DEFAULT_MANAGEMENT_PORT)).rstrip("/")

    @property
    def metrics_url(self) -> str:
        return (self.metrics or self._default(DEFAULT_METRICS_PORT)).rstrip("/")


class SweepSpec(_Strict):
    """A sweep file: the model, the parameter axes, the load, how the trials are chosen and run."""

    _lists = ("load",)

    name: Annotated[str, StringConstraints(pattern=SWEEP_NAME, max_length=80)] = Field(
        ...,
        description="The sweep's name: its runs go to `runs/<name>-<date>-<time>/`, and the results' sweep column.",
    )
    description: str = Field(
        "",
        description="What the sweep asks, in a sentence; kept with the run (sweep.yaml), not used otherwise.",
    )
    model: ModelAxes = Field(
        ModelAxes(),
        description="Per-model settings, applied through the management API (no restart).",
    )
    server: ServerAxes = Field(
        ServerAxes(),
        description="config.properties keys: each combination of their values needs its own TorchServe start.",
    )
    env: dict[EnvName, Union[EnvValue, list[EnvValue]]] = Field(
        {},
        description=(
            "Environment variables of the server and its workers, e.g. OMP_NUM_THREADS (a restart per value); "
            "`A+B: value` sets A and B to the same value, as one axis; a value may be machine-relative "
            "(cores, 2*cores, cores/2)."
        ),
    )
    load: Union[LoadAxes, list[LoadAxes], None] = Field(
        None,
        description=(
            "The load fired at the server in each trial: one profile or a list of them (an axis); required, "
            "except with search.objective capacity, whose rate search replaces it."
        ),
    )
    request: Union[RequestAxes, list[RequestAxes], None] = Field(
        None,
        description=(
            "What every request carries: exactly one of files, text or json; a list of named request sets is "
            "an axis. Not set: the example input of the sweeper's own model (required for any other model)."
        ),
    )
    search: SearchSettings = Field(
        SearchSettings(),
        description="How the trials are chosen (the whole grid, a sample of it, or a search) and what ranks them.",
    )
    settings: Settings = Field(Settings(), description="How each trial runs and what counts as a failed one.")
    target: Union[TargetSettings, None] = Field(
        None,
        description=(
            "A TorchServe someone else started, swept instead of servers of the sweeper's own: per-model "
            "settings, request sets and load only (server and env need a restart); the target is restored "
            "afterwards. Not set: the sweeper starts its own servers."
        ),
    )

    @field_validator("env", mode="before")
    @classmethod
    def _env_relative(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        cores = machine_cores()
        return {key: prepare_axis(key_text(key), value, cores, relative=True, text_ok=True, as_text=True) for key, value in v.items()}

    @field_validator("env", mode="after")
    @classmethod
    def _env_names(cls, v: dict) -> dict:
        owner: dict[str, str] = {}
        for key, value in v.items():
            for name in key.split("+"):
                if name in RESERVED_ENV:
                    raise ValueError(f"{key}: {name} is set by the sweeper itself and cannot be swept")
                if name in owner:
                    where = "twice" if owner[name] == key else f"which env.{owner[name]} sets too"
                    raise ValueError(f"{key}: sets {name} {where} (each variable may appear in one key)")
                owner[name] = key
            if isinstance(value, list):
                # 1 and "1" are the same environment value
                check_distinct(key, value, as_text=True)
        return v

    @field_validator("env", mode="after")
    @classmethod
    def _gpu_indices(cls, v: dict) -> dict:
        # TorchServe's frontend counts GPUs by parsing this variable as comma-separated ints
        # (a UUID or a space stops it); empty hides every GPU from the workers' CUDA.
        for key, value in v.items():
            if GPU_ENV not in key.split("+"):
                continue
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                problem = gpu_list_problem(str(item))
                if problem:
                    where = f"{key}[{i}]" if isinstance(value, list) else key
                    raise ValueError(f"{where}: {problem}, got {show(item)}")
        return v

    @model_validator(mode="after")
    def _distinct_loads(self) -> "SweepSpec":
        seen: dict[tuple, int] = {}
        for i, axes in enumerate(self.loads):
            for p in axes.profiles():
                if p in seen:
                    where = f"load[{i}]" if isinstance(self.load, list) else "load"
                    raise ValueError(f"{where}: repeats a load profile of load[{seen[p]}], got {_profile_text(p)}")
                seen[p] = i
        return self

    @model_validator(mode="after")
    def _load_or_capacity(self) -> "SweepSpec":
        if self.search.objective != "capacity":
            if self.load is None:
                raise ValueError("load: required (give at least one load profile)")
            return self
        if self.load is not None:
            raise ValueError(
                "load: not used with search.objective capacity: the rate is searched per configuration "
                "(set search.capacity: start_rps, max_rps, step_s, processes, timeout_s), remove load"
            )
        if self.settings.slo_p99_ms is None:
            raise ValueError("settings.slo_p99_ms: required with search.objective capacity (the p99 the capacity is measured under)")
        if self.settings.stability is not None:
            raise ValueError(
                "settings.stability: not used with search.objective capacity (each rate is one "
                "search.capacity.step_s window), remove it"
            )
        return self

    @model_validator(mode="after")
    def _target_sweeps_no_restart(self) -> "SweepSpec":
        if self.target is None:
            if self.model.registered is not None:
                raise ValueError("model.registered: only with a target (target.inference, or sweeper run --target URL)")
            return self
        restart = "needs a TorchServe restart, which the sweeper does not do to a target it did not start"
        for key, value in self.server.model_dump().items():
            if value is not None:
                raise ValueError(f"server.{key}: {restart}; remove it, or sweep it on servers of the sweeper's own (no target)")
        for key in self.env:
            raise ValueError(f"env.{key}: {restart} (a worker inherits the server's environment); remove it, or sweep it without a target")
        theirs = (
            ("server_cpus", "the target's CPUs are its owner's to pin"),
            ("base_port", "the target's addresses are given in target"),
            ("model_store", "the target's own model store holds the archive"),
        )
        for key, why in theirs:
            if getattr(self.settings, key) is not None:
                raise ValueError(f"settings.{key}: not with a target ({why})")
        if self.settings.baseline:
            raise ValueError("settings.baseline: not with a target (the in-process ceiling would measure this machine, not the target's)")
        if self.settings.duel is not None:
            raise ValueError("settings.duel: not with a target (the duel starts servers of its own on this machine)")
        return self

    @model_validator(mode="after")
    def _named_request_sets(self) -> "SweepSpec":
        if isinstance(self.request, list):
            if not self.request:
                raise ValueError("request: must not be empty (give at least one request set)")
            first: dict[str, int] = {}
            for i, r in enumerate(self.request):
                if r.name is None:
                    raise ValueError(f"request[{i}]: name: required when request is a list (a list is an axis)")
                if r.name in first:
                    raise ValueError(f"request[{i}]: name: duplicate of request[{first[r.name]}], got {show(r.name)}")
                first[r.name] = i
        if self.model.archive is not None and self.request is None:
            raise ValueError("request: required with model.archive (give files, text or json that the model's handler accepts)")
        return self

    @property
    def requests(self) -> list[RequestAxes]:
        if self.request is None:
            return []
        return self.request if isinstance(self.request, list) else [self.request]

    @property
    def loads(self) -> list[LoadAxes]:
        if self.load is None:
            return []
        return self.load if isinstance(self.load, list) else [self.load]


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _profile_text(p: tuple) -> str:
    mode, concurrency, rate, duration, requests, _, _ = p
    what = f"concurrency {concurrency}" if mode == "closed" else f"rate_rps {rate:g}"
    length = f"duration_s {duration:g}" if duration is not None else f"requests {requests}"
    return f"mode {mode}, {what}, {length}"
