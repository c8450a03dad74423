"""A fingerprint of the machine and software a run measured (machine.json)."""

from __future__ import annotations

import platform
import socket
import subprocess
from importlib import metadata

import psutil


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
    from .spec import machine_cores

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
    }
