"""A trial's server inputs: its config.properties and environment.

The one place where a Trial meets sweeper.torchserve.config, which takes primitives: the
preflight check renders every trial with placeholder ports, the executor renders the
trial it starts a server for, and the trial's directory keeps the placeholder rendering
(`trial_files`).
"""

from __future__ import annotations

import json
from pathlib import Path

from .plan import Trial
from .spec import Settings
from .torchserve.config import PLACEHOLDER_PORTS, Ports, render_config, render_env


def trial_config(trial: Trial, ports: Ports, model_store: Path, settings: Settings) -> str:
    """config.properties of the trial's server group."""
    return render_config(
        trial.server,
        ports,
        model_store,
        sweep=trial.sweep,
        group_id=trial.group_id,
        host=settings.host,
        disable_token_auth=not settings.token_auth,
    )


def trial_env(trial: Trial) -> dict[str, str]:
    """Environment variables of the trial's server group."""
    return render_env(trial.env)


def trial_files(trial: Trial, model_store: Path, settings: Settings) -> dict[str, bytes]:
    """config.properties (ports are chosen at start, so placeholders) and env.json."""
    return {
        "config.properties": trial_config(trial, PLACEHOLDER_PORTS, model_store, settings).encode(),
        "env.json": json.dumps(trial_env(trial), indent=2).encode(),
    }
