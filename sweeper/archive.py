"""Model archives (.mar) of the models in ``handlers.models``, built only when needed.

An archive ``<model_store>/<name>.mar`` holds:
  sweeper_handler.py   handlers/handler.py (the manifest's handler)
  sweeper_models.py    handlers/models.py, under a name no installed package can shadow
  <name>.pt            the seeded weights (a state_dict)
  sweeper_model.json   {"model", "weights", "source_sha256"}: what the handler serves

``source_sha256`` hashes the model name, the handler sources, this file and the torch
and archiver versions; an archive whose recorded hash matches is not rebuilt. Keeping the
hash inside the archive (rather than in a sidecar file) means it can never describe a
different archive than the one beside it.

Usage from the Makefile: ``python -m sweeper.archive [--force] [--model-store DIR] [NAMES...]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import handlers
from sweeper.errors import EnvironmentProblem, SpecError, SweeperError

HANDLER_FILE = "sweeper_handler.py"
MODELS_FILE = "sweeper_models.py"
CONFIG_FILE = "sweeper_model.json"  # must match handlers.handler.MODEL_CONFIG_FILE
ARCHIVE_VERSION = "1.0"

_HANDLERS_DIR = Path(handlers.__file__).resolve().parent


def model_names() -> list[str]:
    from handlers.models import MODELS

    return sorted(MODELS)


def _check_name(name: str) -> None:
    if name not in model_names():
        raise SpecError("model archive", "name", f"unknown model {name!r}, expected one of: {', '.join(model_names())}")


def source_digest(name: str) -> str:
    """The hash an up-to-date archive of ``name`` records."""
    import model_archiver.version
    import torch

    digest = hashlib.sha256()
    sources = sorted(_HANDLERS_DIR.glob("*.py")) + [Path(__file__).resolve()]
    for part in (name, torch.__version__, model_archiver.version.__version__):
        digest.update(part.encode() + b"\0")
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def archived_digest(mar: Path) -> str | None:
    """The source hash recorded in an archive, or None when absent or unreadable."""
    try:
        with zipfile.ZipFile(mar) as archive:
            return json.loads(archive.read(CONFIG_FILE))["source_sha256"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def build_archive(name: str, model_store: Path, force: bool = False) -> Path:
    """Build ``model_store/<name>.mar`` unless an up-to-date one is there; return its path."""
    return _build(name, model_store, force)[0]


def _build(name: str, model_store: Path, force: bool) -> tuple[Path, bool]:
    _check_name(name)
    model_store = Path(model_store)
    mar = model_store / f"{name}.mar"
    digest = source_digest(name)
    if not force and archived_digest(mar) == digest:
        return mar, False
    try:
        model_store.mkdir(parents=True, exist_ok=True)
        # The archive is written next to its final place and renamed over it, so a
        # server loading the old archive never reads a half-written one.
        export_dir = Path(tempfile.mkdtemp(prefix=f".{name}-building-", dir=model_store))
    except OSError as err:
        raise EnvironmentProblem(f"model store {model_store}: cannot write: {err.strerror}") from None
    try:
        with tempfile.TemporaryDirectory(prefix=f"sweeper-archive-{name}-") as tmp:
            staging = _stage_files(name, digest, Path(tmp) / "files")
            _run_archiver(name, staging, export_dir, Path(tmp))
        os.replace(export_dir / f"{name}.mar", mar)
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)
    return mar, True


def ensure_archives(model_store: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Build (when needed) the archives of ``names`` (default: all models)."""
    names = model_names() if names is None else list(names)
    for name in names:
        _check_name(name)  # all names before any build: fail fast on a typo
    return {name: build_archive(name, model_store) for name in names}


def _stage_files(name: str, digest: str, staging: Path) -> Path:
    import torch

    from handlers.models import MODELS

    staging.mkdir(parents=True)
    shutil.copyfile(_HANDLERS_DIR / "handler.py", staging / HANDLER_FILE)
    shutil.copyfile(_HANDLERS_DIR / "models.py", staging / MODELS_FILE)
    torch.save(MODELS[name].build().state_dict(), staging / f"{name}.pt")
    config = {"model": name, "weights": f"{name}.pt", "source_sha256": digest}
    (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return staging


def _run_archiver(name: str, staging: Path, export_dir: Path, tmp: Path) -> None:
    # The archiver stages files in $TMPDIR/<model name> and deletes that directory first:
    # a private TMPDIR keeps two builds of the same name (two processes) apart.
    work = tmp / "archiver-tmp"
    work.mkdir()
    command = [
        sys.executable, "-m", "model_archiver.model_packaging",
        "--model-name", name,
        "--version", ARCHIVE_VERSION,
        "--handler", str(staging / HANDLER_FILE),
        "--serialized-file", str(staging / f"{name}.pt"),
        "--extra-files", f"{staging / MODELS_FILE},{staging / CONFIG_FILE}",
        "--export-path", str(export_dir),
        "--force",
    ]
    env = {**os.environ, "TMPDIR": str(work)}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EnvironmentProblem(f"torch-model-archiver for {name}: {err}") from None
    if done.returncode != 0 or not (export_dir / f"{name}.mar").is_file():
        lines = (done.stderr or done.stdout).strip().splitlines()
        last = lines[-1] if lines else f"exit status {done.returncode}, no output"
        raise EnvironmentProblem(f"torch-model-archiver for {name} failed: {last}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeper.archive", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="models to archive (default: all)")
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    try:
        names = args.names or model_names()
        for name in names:
            _check_name(name)
        for name in names:
            mar, built = _build(name, args.model_store, args.force)
            print(f"{mar}: {'built' if built else 'up to date'}")
    except SweeperError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
