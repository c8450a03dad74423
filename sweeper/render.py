"""config.properties and the server environment for a trial, from templates/ (pure).

Values arrive typed and validated by sweeper.spec; this module checks once more that the
rendered file has exactly the keys it should, so no value can add a line or a key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from .plan import Trial

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
_LINE = re.compile(r"^([a-z_]+)=([^\n\r]*)$")
_FIXED_KEYS = {
    "inference_address",
    "management_address",
    "metrics_address",
    "model_store",
    "enable_model_api",
    "metrics_mode",
    "disable_token_authorization",
}


@dataclass(frozen=True)
class Ports:
    inference: int
    management: int
    metrics: int


PLACEHOLDER_PORTS = Ports(0, 0, 0)  # `sweeper plan` renders before ports are chosen


def _environment(templates_dir: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # a properties file, not HTML; values are validated instead
    )


def _format(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_config(
    trial: Trial,
    ports: Ports,
    model_store: Path,
    host: str = "127.0.0.1",
    disable_token_auth: bool = False,
    templates_dir: Path = TEMPLATES_DIR,
) -> str:
    server = [(k, _format(v)) for k, v in trial.server]
    for key, value in server:
        if "\n" in value or "\r" in value or key in _FIXED_KEYS:
            raise ValueError(f"server.{key}: value would change config.properties structure")
    text = _environment(templates_dir).get_template("config.properties.j2").render(
        sweep=trial.sweep,
        group_id=trial.group_id,
        host=host,
        ports=ports,
        model_store=model_store,
        disable_token_auth=disable_token_auth,
        server=server,
    )
    _check(text, {k for k, _ in server} | _FIXED_KEYS)
    return text


def _check(text: str, expected_keys: set[str]) -> None:
    seen = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise ValueError(f"rendered config.properties has a malformed line: {line!r}")
        seen.append(m.group(1))
    if len(seen) != len(set(seen)) or set(seen) != expected_keys:
        raise ValueError(f"rendered config.properties keys {sorted(seen)} != expected {sorted(expected_keys)}")


def render_env(trial: Trial) -> dict[str, str]:
    """Environment overrides for the server (workers inherit the JVM's environment)."""
    return {k: str(v) for k, v in trial.env}
