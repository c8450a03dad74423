"""Reading a user's model archive (.mar): its manifest and what it carries. No I/O but the file.

A .mar built by torch-model-archiver (default format) is a zip file holding
`MAR-INF/MANIFEST.json`: {"model": {"modelName", "handler", "serializedFile", ...}, ...}.
The served model's name comes from there. An archive may also carry a `model-config.yaml`
(`--config-file`); its batchSize/maxBatchDelay/minWorkers/maxWorkers/responseTimeout are
overridden by the sweep, because the sweeper registers the model through the management
API with every per-model setting of the trial given explicitly (see the README,
"Sweep your own model").

Every problem is a ValueError with one short sentence; the caller (sweeper.preflight /
cli) turns it into `sweeps/x.yaml: model.archive: <sentence>` and exit 2.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "MAR-INF/MANIFEST.json"
# TorchServe model names are used in URLs (/predictions/NAME) and its management API.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_MANIFEST_BYTES = 1_000_000


@dataclass(frozen=True)
class ArchiveInfo:
    path: Path  # absolute
    model_name: str
    handler: str
    config_file: str | None  # the archive's model-config.yaml entry, when it carries one


def read_archive(path: Path) -> ArchiveInfo:
    """The manifest of the model archive at `path`. Raises ValueError (one sentence)."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise ValueError(f"file not found: {path}")
    if not path.is_file():
        raise ValueError(f"must be a .mar file, got a directory or special file: {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        with zipfile.ZipFile(path) as archive:
            try:
                info = archive.getinfo(MANIFEST)
            except KeyError:
                raise ValueError(f"not a model archive: {path} has no {MANIFEST} (build it with torch-model-archiver)") from None
            if info.file_size > MAX_MANIFEST_BYTES:
                raise ValueError(f"{path}: {MANIFEST} is {info.file_size} bytes, not a manifest")
            raw = archive.read(info)
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise ValueError(f"not a model archive: {path} is not a zip file (torch-model-archiver's default format)") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{path}: {MANIFEST} is not valid JSON") from None
    model = manifest.get("model") if isinstance(manifest, dict) else None
    name = model.get("modelName") if isinstance(model, dict) else None
    if not isinstance(name, str) or not name:
        raise ValueError(f"{path}: {MANIFEST} names no model (model.modelName)")
    if not MODEL_NAME.match(name):
        raise ValueError(
            f"{path}: the manifest's model name {name!r} must be letters, digits, _ . - (at most 100)"
        )
    handler = model.get("handler") or ""
    config = model.get("configFile")
    if not isinstance(config, str) or config not in names:
        config = "model-config.yaml" if "model-config.yaml" in names else None
    return ArchiveInfo(path=path, model_name=name, handler=str(handler), config_file=config)
