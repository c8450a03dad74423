"""A trial's TorchServe and its model's registration: the one way every caller (the local
executor, and through it the Ray nodes; `sweeper verify`) starts a server for a trial and
registers the trial's model on it, so that a setting such as settings.base_port applies to
all of them.
"""

from __future__ import annotations

from pathlib import Path

from .inputs import trial_config, trial_env
from .plan import ModelParams, Trial
from .spec import Settings
from .torchserve import management
from .torchserve.process import TorchServe

# A synchronous registration returns once every initial worker has imported torch and
# loaded the model; with several workers on a busy machine that takes longer than a
# server's start (settings.ready_timeout_s, 60 s by default), so it gets at least this.
REGISTER_TIMEOUT_FLOOR_S = 120.0


def new_server(trial: Trial, settings: Settings, model_store: Path, workdir: Path) -> TorchServe:
    """The server of the trial's group (config.properties, environment, address, ports,
    token authorization, CPUs), not started yet: the caller keeps it before `start()` so
    that its stop reaps a half-started server too."""
    return TorchServe(
        workdir=workdir,
        render=lambda ports: trial_config(trial, ports, model_store, settings),
        env=trial_env(trial),
        model_store=model_store,
        host=settings.host,
        token_auth=settings.token_auth,
        ready_timeout_s=settings.ready_timeout_s,
        cpu_affinity=tuple(settings.server_cpus) if settings.server_cpus else None,
        base_port=settings.base_port,
    )


def scale(server: TorchServe, name: str, model: ModelParams, settings: Settings) -> None:
    """Give the registration `name` the workers of `model` (min_workers, max_workers) in
    place: TorchServe starts or stops workers and keeps the model registered."""
    management.scale_workers(server, name, model.min_workers, model.max_workers,
                             timeout_s=max(REGISTER_TIMEOUT_FLOOR_S, settings.ready_timeout_s))


def register(server: TorchServe, name: str, model: ModelParams, settings: Settings, url: str | None) -> None:
    """Register the model under `name` with the trial's per-model settings; `url` is the
    archive's file name in the model store (None: `<name>.mar`)."""
    management.register_model(
        server,
        name,
        batch_size=model.batch_size,
        max_batch_delay_ms=model.max_batch_delay_ms,
        response_timeout_s=model.response_timeout_s,
        min_workers=model.min_workers,
        max_workers=model.max_workers,
        timeout_s=max(REGISTER_TIMEOUT_FLOOR_S, settings.ready_timeout_s),
        url=url,
    )
