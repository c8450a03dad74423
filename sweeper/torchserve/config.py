"""config.properties and the server environment, from templates/ (pure).

Takes primitives: the config.properties keys and values a sweep sets, the ports, the model
store, the host; sweeper.inputs turns a trial into these. Values arrive validated by
sweeper.spec; this module checks once more that the rendered file has exactly the keys it
should, so no value can add a line or a key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import jinja2

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
_LINE = re.compile(r"^([a-z_]+)=(.*)$")
_KEY = re.compile(r"^[a-z_]+$")
# The characters sweeper.spec allows in a value that reaches config.properties. ':' and
# '=' are safe inside a value (a properties line splits on its first separator); a line
# break adds a line, a trailing '\\' joins the next line into this one, '#'/'!' start
# comments.
_VALUE = re.compile(r"^[A-Za-z0-9_.,/+@%:= -]*$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # sweep name, group id, host
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FIXED_KEYS = {
    "inference_address",
    "management_address",
    "metrics_address",
    "model_store",
    "enable_model_api",
    "metrics_mode",
    "disable_token_authorization",
    "grpc_inference_address",
    "grpc_inference_port",
    "grpc_management_address",
    "grpc_management_port",
}


@dataclass(frozen=True)
class Ports:
    inference: int
    management: int
    metrics: int
    # gRPC is not used, but TorchServe always starts it: without ports of their own,
    # two instances collide on 7070/7071
    grpc_inference: int
    grpc_management: int


PLACEHOLDER_PORTS = Ports(0, 0, 0, 0, 0)  # `sweeper plan` renders before ports are chosen


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


def properties_path(path: Path | str) -> str:
    """A path as a Java properties value: '\\' and non-ASCII escaped (Java reads the file
    as ISO-8859-1), so the JVM sees the same path."""
    text = str(path)
    if _CONTROL.search(text):
        raise ValueError(f"model_store: a line break or control character in {text!r} would change config.properties")
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ord(ch) > 0x7E:
            out.extend(f"\\u{unit:04x}" for unit in _utf16(ch))
        else:
            out.append(ch)
    escaped = "".join(out)
    return "\\" + escaped if escaped.startswith(" ") else escaped  # leading blanks are skipped


def _utf16(ch: str) -> list[int]:
    data = ch.encode("utf-16-be")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def render_config(
    server: Iterable[tuple[str, object]],
    ports: Ports,
    model_store: Path,
    *,
    sweep: str,
    group_id: str,
    host: str = "127.0.0.1",
    disable_token_auth: bool = False,
    templates_dir: Path = TEMPLATES_DIR,
) -> str:
    """config.properties: the fixed keys (addresses, ports, model store, metrics mode, token
    authorization) plus the `server` keys a sweep sets; `sweep` and `group_id` name the file
    in its header comment.

    Raises ValueError when a value could add or change a line: sweeper.spec refuses such
    values, so reaching it here means a value was built around the schema.
    """
    server = [(k, _format(v)) for k, v in server]
    for key, value in server:
        if not isinstance(key, str) or not _KEY.match(key) or key in _FIXED_KEYS:
            raise ValueError(f"server.{key!r}: not a key the sweep may set in config.properties")
        if not _VALUE.match(value):
            raise ValueError(f"server.{key}: value {value!r} would change config.properties structure")
    for what, value in (("sweep", sweep), ("group_id", group_id), ("host", host)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise ValueError(f"{what}: {value!r} is not allowed in config.properties")
    for what, port in vars(ports).items():
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"ports.{what}: {port!r} is not a port number")
    text = _environment(templates_dir).get_template("config.properties.j2").render(
        sweep=sweep,
        group_id=group_id,
        host=host,
        ports=ports,
        model_store=properties_path(model_store),
        disable_token_auth=disable_token_auth,
        server=server,
    )
    _check(text, {k for k, _ in server} | _FIXED_KEYS)
    return text


def _check(text: str, expected_keys: set[str]) -> None:
    """Every line is blank, a comment or `key=value`; the keys are exactly the expected ones."""
    seen = []
    # Java's line terminators only (str.splitlines also splits on \f, \x1c, \u2028, ...)
    for line in re.split(r"\r\n|\r|\n", text):
        if _CONTROL.search(line) or any(ord(c) > 0x7E for c in line):
            raise ValueError(f"rendered config.properties has a control or non-ASCII character: {line!r}")
        if not line.strip():
            continue
        if line.lstrip().startswith(("#", "!")):
            continue
        m = _LINE.match(line)
        if not m:
            raise ValueError(f"rendered config.properties has a malformed line: {line!r}")
        if (len(m.group(2)) - len(m.group(2).rstrip("\\"))) % 2:
            raise ValueError(f"rendered config.properties has a continued line: {line!r}")
        seen.append(m.group(1))
    if len(seen) != len(set(seen)) or set(seen) != expected_keys:
        raise ValueError(f"rendered config.properties keys {sorted(seen)} != expected {sorted(expected_keys)}")


def render_env(variables: Iterable[tuple[str, object]]) -> dict[str, str]:
    """Environment overrides for the server (workers inherit the JVM's environment)."""
    env: dict[str, str] = {}
    for name, value in variables:
        text = str(value)
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ValueError(f"env: {name!r} is not an environment variable name")
        if _CONTROL.search(text):
            raise ValueError(f"env.{name}: value {text!r} has a line break or control character")
        if name in env and env[name] != text:
            raise ValueError(f"env.{name}: set twice ({env[name]!r} and {text!r})")
        env[name] = text
    return env
