"""A trial's slices of its server's logs: where each log ended before the trial, and what
the trial wrote to it since, kept with the trial's files."""

from __future__ import annotations

from .torchserve.process import LOG_FILES, TorchServe, redact


def log_offsets(server: TorchServe) -> dict[str, int]:
    """Where each server log ends now: a trial's slice starts there."""
    out = {}
    for name in LOG_FILES:
        path = server.log_dir / name
        out[name] = path.stat().st_size if path.exists() else 0
    return out


# an ok trial's slice of each server log keeps its first and last lines up to these sizes;
# the server's whole log stays in servers/<dir>/logs. At TorchServe's default levels a
# closed-loop trial of the batching sweep writes 1-2 KB of logs per request, so whole
# slices would add up to about a gigabyte per run (docs/measurements.md#code-log-slices).
LOG_SLICE_HEAD = 256 * 1024
LOG_SLICE_TAIL = 768 * 1024


def log_slices(server: TorchServe, offsets: dict[str, int], whole: bool = False) -> dict[str, bytes]:
    """The slice of each server log written since `offsets`, keys redacted, as
    logs/<name> files of the trial. Unless `whole` (a failed trial keeps everything), a
    slice larger than LOG_SLICE_HEAD + LOG_SLICE_TAIL keeps its first and last whole lines
    within those sizes, with a line saying how much was left out and where the rest is.
    A log that rolled over during the trial (smaller than its offset) is taken from its
    start."""
    out = {}
    for name in LOG_FILES:
        path = server.log_dir / name
        if not path.exists():
            continue
        with open(path, "rb") as f:
            end = f.seek(0, 2)
            start = offsets.get(name, 0)
            start = start if start <= end else 0
            f.seek(start)
            if whole or end - start <= LOG_SLICE_HEAD + LOG_SLICE_TAIL:
                data = f.read(end - start)
            else:
                head = f.read(LOG_SLICE_HEAD)
                head = head[: head.rfind(b"\n") + 1]
                f.seek(end - LOG_SLICE_TAIL)
                tail = f.read(LOG_SLICE_TAIL)
                tail = tail[tail.find(b"\n") + 1 :]
                left_out = end - start - len(head) - len(tail)
                note = (f"[sweeper: {left_out:,} bytes of this trial's log left out here; the server's whole log is "
                        f"{server.workdir.name}/logs/{name} under the run's servers/]\n").encode()
                data = head + note + tail
        out[f"logs/{name}"] = redact(data.decode(errors="replace"), server.keys).encode()
    return out
