"""A sweep of the user's own model: `model.archive` and the `request` group, resolved before
anything starts.

`resolve(spec, source)` reads the archive's manifest (sweeper.mar) and every payload file
(sweeper.payload) once, and returns the spec with the archive and the files made absolute
and the served model's name taken from the manifest, so that a run's sweep.yaml still
works from the run directory (`sweeper run --resume`). Every problem is one SpecError
naming the file, the key and the rule (exit 2, nothing started).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import SpecError
from .mar import read_archive
from .payload import RequestSet, load_request_sets, resolve_files


@dataclass(frozen=True)
class UserModel:
    spec: object  # SweepSpec, resolved
    model_store: Path | None  # the archive's directory (model.archive), else None
    archive_file: str | None  # the archive's file name: the registration url
    request_sets: dict[str, RequestSet]


def resolve(spec, source: str) -> UserModel:
    store = archive_file = None
    if spec.model.archive is not None:
        if spec.settings.model_store is not None:
            raise SpecError(source, "settings.model_store", "not with model.archive (the archive's own directory is the model store)")
        path = Path(spec.model.archive).expanduser()
        if not path.is_absolute():
            path = Path(source).parent / path
        try:
            info = read_archive(path)
        except ValueError as exc:
            raise SpecError(source, "model.archive", str(exc)) from None
        if "name" in spec.model.model_fields_set and spec.model.name != info.model_name:
            raise SpecError(
                source, "model.name",
                f"the archive's manifest names the model {info.model_name!r}, got {spec.model.name!r} "
                "(leave model.name out: it comes from the archive)",
            )
        model = spec.model.model_copy(update={"archive": str(info.path), "name": info.model_name})
        spec = spec.model_copy(update={"model": model})
        store, archive_file = info.path.parent, info.path.name
    spec = resolve_files(spec, source)
    return UserModel(spec, store, archive_file, load_request_sets(spec, source))
