"""Checks before anything starts: load the sweep file, refuse a grid above
settings.max_trials, expand and render every trial, resolve the model store, check Java
and fixed ports; and the time estimate the CLI prints. Raises SpecError /
EnvironmentProblem (exit code 2); starts nothing.
"""

from __future__ import annotations

from pathlib import Path

from .errors import EnvironmentProblem, SpecError
from .gpu import check_trials as check_gpus
from .inputs import trial_config
from .plan import costs, count_trials, default_order, expand, order
from .sweepfile import load_sweep, resolve_sweep_path
from .torchserve.config import PLACEHOLDER_PORTS
from .usermodel import resolve as resolve_user_model

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SWEEPS_DIR = PROJECT_ROOT / "sweeps"
DEFAULT_MODEL_STORE = PROJECT_ROOT / "model_store"
# Calibrated on measured sweeps (docs/measurements.md#code-plan-estimate): a trial costs
# ~0.4 s beyond warm-up and window, a server start ~3.5 s, a registration ~3 s. Figures of
# one machine: a slower one takes longer than `sweeper plan` estimates.
SECONDS_PER_TRIAL_OVERHEAD = 0.4
SECONDS_PER_SERVER_START = 3.5
SECONDS_PER_REGISTRATION = 3.0
# scaling a registration's workers in place: the new workers start as at a registration,
# without the registration's own round trips
SECONDS_PER_SCALING = 2.0
# a capacity search (search.objective capacity): growth to the first failure and about 4
# halvings to 5%; a step costs its engine's start and its backlog beyond step_s
CAPACITY_TYPICAL_STEPS = 10
# the server warm-up goes on past settings.server_warmup_s while the JIT compiles: with the
# default 15 s, 26.5-31.6 s (mean 28.7 s) over the 12 starts of a thread-contention run
# (docs/measurements.md#m60-thread-contention-in-12-server-starts); batching's starts
# have run longer (docs/measurements.md#code-server-warmup-length)
SERVER_WARMUP_TYPICAL_EXTRA_S = 14.0
SECONDS_PER_CAPACITY_STEP = 1.5
# settings.baseline: one set of measuring processes per (model, torch threads) of the run,
# importing torch and building the model at once (SECONDS_PER_BASELINE_SET), then each
# (workers, batch size) in turn: 0.5 s of warm-up and 2 s timed (BASELINE_SECONDS_PER_STEP);
# thread_contention's 3 sets and 9 steps took 41 s and 35 s (estimate 38 s:
# docs/measurements.md#m66-thread-contention-with-the-ceilings-processes-reused-stopping-a-server,
# docs/measurements.md#m69-thread-contention-with-the-server-killed-at-its-stop)
SECONDS_PER_BASELINE_SET = 5.0
BASELINE_SECONDS_PER_STEP = 2.6


def _sweep_path(arg: str) -> Path:
    p = resolve_sweep_path(arg, Path("sweeps"))
    if not p.exists():
        p2 = resolve_sweep_path(arg, SWEEPS_DIR)
        if p2.exists():
            return p2
        names = sorted(x.stem for x in SWEEPS_DIR.glob("*.yaml"))
        raise SpecError(str(p), "", f"file not found (shipped sweeps: {', '.join(names)})")
    return p


def model_store_for(spec, source: str) -> Path:
    """settings.model_store (relative: to the sweep file `source`), or the project's."""
    if spec.settings.model_store is None:
        return DEFAULT_MODEL_STORE
    store = Path(spec.settings.model_store).expanduser()
    if not store.is_absolute():
        store = (Path(source).parent / store).resolve()
    if not store.is_dir():
        raise SpecError(source, "settings.model_store", f"must be an existing directory, got {str(store)!r}")
    return store


def check_machine(spec, source: str) -> None:
    """What the sweep asks of this machine and the schema cannot know: the address to
    listen on, and the CPUs to pin to. Here, not in the schema, so that a finished run's
    sweep.yaml loads on any machine."""
    from .machine import bind_problem, cpu_ranges, machine_cpus

    settings = spec.settings
    problem = bind_problem(settings.host)
    if problem:
        raise SpecError(source, "settings.host", f"must be an address of this machine (0.0.0.0 for all of them), got {settings.host!r}: {problem}")
    available = machine_cpus()
    for key in ("client_cpus", "server_cpus"):
        for i, cpu in enumerate(getattr(settings, key) or []):
            if cpu not in available:
                raise SpecError(source, f"settings.{key}[{i}]", f"must be a CPU this process may use ({cpu_ranges(available)}), got {cpu}")


def prepare(sweep_arg: str, yes: bool, check_environment: bool = True, target: dict | None = None):
    """Load, expand and render every trial; check prerequisites; read a user's archive
    manifest and payload files (sweeper.usermodel). Starts nothing.

    `target`: keys of the sweep's `target` group from the command line (--target,
    --allow-remote). A sweep with a target is prepared by sweeper.attach instead, which
    with `check_environment` also checks the target (it answers, takes the keys, has the
    model); it sends no load.

    Returns (path, spec, trials, model store, UserModel); with a target the model store is
    None (the target's own holds the archive)."""
    path = _sweep_path(sweep_arg)
    source = str(path)
    loaded = load_sweep(path, target)
    if loaded.target is not None:
        from .attach import prepare_target

        return prepare_target(path, loaded, yes, contact=check_environment)
    user = resolve_user_model(loaded, source)  # archive manifest and payload files, read once
    spec = user.spec
    check_machine(spec, source)
    distinct = count_trials(spec)  # before expand: refuse a huge grid without building it
    if spec.search.budget_trials is not None:  # a search measures its budget, not the grid
        distinct = min(distinct, spec.search.budget_trials)
    if distinct > spec.settings.max_trials and not yes:
        raise SpecError(
            source,
            "settings.max_trials",
            f"the grid has {distinct} trials, more than the limit {spec.settings.max_trials}; pass --yes to run it anyway",
        )
    how = spec.settings.order or default_order(spec.settings.repeats)
    trials = order(expand(spec), how, spec.settings.seed)
    store = user.model_store or model_store_for(spec, source)
    from handlers.models import MODELS

    if spec.model.archive is None and spec.settings.model_store is None and spec.model.name not in MODELS:
        raise SpecError(source, "model.name", f"unknown model {spec.model.name!r}, expected one of: {', '.join(sorted(MODELS))}")
    if spec.settings.model_store is not None and not (store / f"{spec.model.name}.mar").exists():
        raise SpecError(source, "model.name", f"no archive {spec.model.name}.mar in {store}")
    if spec.model.name not in MODELS and not spec.requests:
        # a model the sweeper did not build has no example request it could send
        raise SpecError(source, "request", f"required for model {spec.model.name!r} (not one of the sweeper's): give files, text or json that its handler accepts")
    for t in trials:
        trial_config(t, PLACEHOLDER_PORTS, store, spec.settings)
    # the GPUs the trials ask for (number_of_gpu, CUDA_VISIBLE_DEVICES) must exist here: a
    # machine's fact, so checked here and not in the schema; `sweeper plan` too
    check_gpus(trials, source)
    if check_environment:
        from .torchserve.process import check_java, check_ports

        check_java()
        if spec.settings.base_port:
            try:
                check_ports(spec.settings.host, spec.settings.base_port)
            except EnvironmentProblem as exc:
                raise SpecError(source, "settings.base_port", str(exc)) from None
    return path, spec, trials, store, user


def estimate_s(spec, trials) -> float:
    """Expected wall time of the trials in this order, from the calibration above."""
    starts, regs, scalings = costs(trials, spec.settings.keep_registered, spec.settings.scale_workers)
    stability = spec.settings.stability

    def measure(t) -> float:
        if t.capacity is not None:  # typically ~10 steps, each the step and an engine start
            return min(t.capacity.max_steps, CAPACITY_TYPICAL_STEPS) * (t.capacity.step_s + SECONDS_PER_CAPACITY_STEP)
        if stability is not None:  # at least the windows; often more (up to max_duration_s)
            return stability.windows * stability.window_s
        return t.load.duration_s or 10.0

    load = sum(measure(t) + spec.settings.warmup_s + SECONDS_PER_TRIAL_OVERHEAD for t in trials)
    settings = spec.settings
    warmup = server_warmup_typical_s(settings)
    # a registration that is not a server's first warms up for registration_warmup_s or longer
    registration_warmup = settings.registration_warmup_s * max(0, regs - starts)
    return (load + starts * (SECONDS_PER_SERVER_START + warmup) + regs * SECONDS_PER_REGISTRATION + registration_warmup
            + scalings * SECONDS_PER_SCALING + (baseline_s(trials) if settings.baseline else 0.0)
            + (duel_s(spec, trials) if settings.duel is not None else 0.0))


# choosing the two, the engine's start and the servers' stop (docs/duel.md)
SECONDS_PER_DUEL_OVERHEAD = 3.0


def duel_s(spec, trials) -> float:
    """settings.duel after the trials (sweeper.duel): its servers (one when the sweep has
    one server group; two otherwise, the upper bound), each started and warmed up, two
    registrations, B's registration warm-up beside A's on one server, and the blocks with
    their lead-in quad."""
    from .analysis.paired import LEAD_IN_QUADS, QUAD

    settings, own = spec.settings, spec.settings.duel
    servers = 1 if len({t.group_id for t in trials}) <= 1 else 2
    warmup = server_warmup_typical_s(settings)
    registration_warmup = settings.registration_warmup_s if servers == 1 else 0.0
    blocks = (own.blocks + LEAD_IN_QUADS * QUAD) * own.block_s
    return (servers * (SECONDS_PER_SERVER_START + warmup) + 2 * SECONDS_PER_REGISTRATION + registration_warmup
            + blocks + SECONDS_PER_DUEL_OVERHEAD)


def server_warmup_typical_s(settings) -> float:
    """How long a server warm-up typically lasts: the minimum and the JIT's usual extra,
    within the cap."""
    if settings.server_warmup_s <= 0:
        return 0.0
    return min(settings.server_warmup_cap_s, settings.server_warmup_s + SERVER_WARMUP_TYPICAL_EXTRA_S)


def baseline_s(trials) -> float:
    """The in-process ceiling after the trials (settings.baseline, sweeper.ceiling): one set
    of processes per model and thread count, measuring each (workers, batch size)."""
    from .analysis.efficiency import trial_key
    from .machine import machine_cores

    cores = machine_cores()
    keys = {trial_key(t.params(), cores) for t in trials}
    process_sets = {(m, t) for m, _, t, _ in keys}
    return len(process_sets) * SECONDS_PER_BASELINE_SET + len(keys) * BASELINE_SECONDS_PER_STEP
