"""This machine as a sweep sees it: the cores and CPUs this process may use, whether an
address is loopback or can be bound here, and the fingerprint of the machine and software
a run measured (machine.json)."""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
from importlib import metadata

import psutil

from . import gpu


def machine_cores() -> int:
    """Cores this process may use (affinity-aware), the unit of `cores` in sweep files."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_cpus() -> set[int]:
    """CPU numbers this process may use: what settings.client_cpus/server_cpus may name."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8 or localhost: reachable from this machine only."""
    return host == "localhost" or (bool(IPV4.fullmatch(host)) and host.startswith("127."))


def bind_problem(host: str) -> str | None:
    """Why a server could not listen on `host` (None when it can): an address of another
    machine fails here, at load time, rather than as a server that never starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, 0))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _java() -> str:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        return (out.stderr or out.stdout).splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "not found"


def fingerprint() -> dict[str, object]:
    return {
        "hostname": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_usable": machine_cores(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "torchserve": _version("torchserve"),
        "torch_model_archiver": _version("torch-model-archiver"),
        "java": _java(),
        "sweeper": _version("torchserve-sweeper"),
        **gpu.machine_info(),  # GPUs, driver, CUDA versions; nothing on a machine without GPUs
    }


def cpu_ranges(cpus: set[int]) -> str:
    """CPU numbers as a reader writes them: {0, 1, 2, 5} -> "0-2,5"."""
    out, items = [], sorted(cpus)
    start = prev = items[0] if items else 0
    for c in items[1:] + [None]:
        if c is not None and c == prev + 1:
            prev = c
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if c is not None:
            start = prev = c
    return ",".join(out) if items else "none"
