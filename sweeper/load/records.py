"""Per-request records on disk: requests.csv.gz (gzip CSV, one row per request, RECORD_DTYPE).

The format is plain CSV so that a person can open it with any tool; the header names the
columns and their units. Times are seconds since the run's t0 with microsecond resolution.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np

from .types import RECORD_DTYPE, LoadRun

_FORMATS = {"f8": "%.6f", "i2": "%d", "f4": "%.3f"}
_FMT = ",".join(_FORMATS[RECORD_DTYPE[name].str[1:]] for name in RECORD_DTYPE.names)
HEADER = ",".join(RECORD_DTYPE.names)


def encode_records(run: LoadRun) -> bytes:
    """The records of `run` as the bytes of a requests.csv.gz file (gzip CSV)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as gz:
        with io.TextIOWrapper(gz, encoding="ascii", newline="\n") as out:
            out.write(HEADER + "\n")
            if len(run.records):
                np.savetxt(out, run.records, fmt=_FMT, delimiter=",")
    return buf.getvalue()


def write_records(run: LoadRun, path: str | os.PathLike) -> None:
    """Write the records of `run` to `path` (gzip CSV; the name should end in .csv.gz)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode_records(run))
    os.replace(tmp, path)  # a reader never sees half a file


def read_records(path: str | os.PathLike) -> np.ndarray:
    """Read a file written by write_records back into a RECORD_DTYPE array."""
    with gzip.open(path, "rt", encoding="ascii") as src:
        header = src.readline().strip()
        if header != HEADER:
            raise ValueError(f"{path}: not a records file: header {header!r}, expected {HEADER!r}")
        body = src.read()
    if not body.strip():
        return np.zeros(0, RECORD_DTYPE)
    return np.loadtxt(io.StringIO(body), dtype=RECORD_DTYPE, delimiter=",", ndmin=1)
