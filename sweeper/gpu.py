"""GPUs as the sweeper sees them: the gpu_* columns of a measured window (NVML sampled
every settings.probe_interval_s), the GPUs in machine.json, and whether this machine has
the GPUs a sweep asks for (the preflight check).

NVML sits behind `Nvml`, a small protocol with two implementations: `PynvmlSource`, the
NVIDIA library through nvidia-ml-py (the optional extra `gpu`, imported only when first
needed), and `RecordedNvml`, which plays back recorded samples (the tests' GPUs). Without
nvidia-ml-py, without the NVIDIA driver or without a GPU there is no source: no gpu_*
columns, no GPU keys in machine.json, nothing about GPUs in the report.

The GPUs of a trial (`used_gpus`): those its server can see (the trial's
CUDA_VISIBLE_DEVICES, else the sweeper's own, else every GPU), the first number_of_gpu of
them (TorchServe hands workers gpu_id 0..number_of_gpu-1 round-robin; unset: every GPU it
sees). NVML numbers GPUs by PCI bus, CUDA fastest first by default: the same order on a
machine of one GPU model, and everywhere under CUDA_DEVICE_ORDER=PCI_BUS_ID.

Columns (means and peaks over the window's samples and over the trial's GPUs; NaN where
NVML gave nothing):

    gpu_count                the GPUs the trial's workers could use (0: number_of_gpu 0)
    gpu_name                 their model names, distinct, "; "-separated
    gpu_util_pct_mean/_max   share of time a kernel ran (NVML's utilization, per GPU)
    gpu_util_pct_by_gpu      mean utilization of each GPU, "0:85 1:12" (round-robin balance)
    gpu_mem_used_mb_mean/_max  memory used on a GPU, all processes (NVML's view)
    gpu_power_w_mean/_max    board power draw of a GPU
    gpu_sm_clock_mhz_mean/_min  SM clock (a low minimum: clocks were held down)
    gpu_temp_c_max           hottest GPU temperature
    gpu_throttle_reasons     why clocks were held down, NVML's names with the share of
                             samples, "SwPowerCap 40%, GpuIdle 5%"; "none"
    gpu_samples_n            samples taken (all GPUs)
    gpu_note                 one line, only when something was not measured: a GPU in MIG
                             mode (NVML reports no utilization for it: not sampled) or an
                             NVML call that failed (that figure left empty; never a failed
                             trial)
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Iterable, Mapping, Protocol, Sequence

from .errors import EnvironmentProblem

GPU_ENV = "CUDA_VISIBLE_DEVICES"
_GPU_LIST = re.compile(r"^(?:\d{1,4}(?:,\d{1,4})*)?$")

# NVML's clock event ("throttle") reason bits, by NVML's own names
THROTTLE_REASONS = {
    0x1: "GpuIdle",
    0x2: "ApplicationsClocksSetting",
    0x4: "SwPowerCap",
    0x8: "HwSlowdown",
    0x10: "SyncBoost",
    0x20: "SwThermalSlowdown",
    0x40: "HwThermalSlowdown",
    0x80: "HwPowerBrakeSlowdown",
    0x100: "DisplayClockSetting",
}
_NAN = math.nan


def gpu_list_problem(text: str) -> str | None:
    """Why `text` is not a CUDA_VISIBLE_DEVICES value the sweeper takes (GPU indices
    separated by commas, such as 0 or 0,1, each once; or empty: no GPU), None when it is one.
    TorchServe's frontend reads the variable as comma-separated ints: a UUID or a space
    stops it."""
    if not _GPU_LIST.match(text):
        return "must be GPU indices separated by commas, such as 0 or 0,1 (no spaces), or empty for no GPU"
    indices = text.split(",") if text else []
    if len({int(i) for i in indices}) != len(indices):
        return "names a GPU twice"
    return None


def parse_gpu_list(text: str) -> list[int] | None:
    """The indices of a CUDA_VISIBLE_DEVICES value, None when it is not a plain index list."""
    if gpu_list_problem(text):
        return None
    return [int(i) for i in text.split(",")] if text else []


# --- NVML -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    index: int  # NVML's
    name: str
    memory_total_mb: float
    mig: bool = False  # MIG mode on: NVML reports no utilization for the whole GPU


@dataclass(frozen=True)
class GpuSample:
    t_s: float  # time.monotonic()
    index: int
    util_pct: float
    mem_used_mb: float
    power_w: float
    sm_clock_mhz: float
    temp_c: float
    throttle_reasons: int  # NVML bitmask (THROTTLE_REASONS); -1 unknown
    errors: tuple[str, ...] = ()  # "power: Not Supported": the figures NVML did not give


class NvmlError(Exception):
    """An NVML call failed (str: NVML's message)."""


class Nvml(Protocol):
    """What the sweeper asks NVML."""

    def devices(self) -> list[GpuInfo]: ...

    def driver_version(self) -> str: ...

    def cuda_driver_version(self) -> str: ...

    def sample(self, index: int) -> GpuSample:
        """One sample of GPU `index`. A figure NVML cannot give is NaN and named in
        `errors`; NvmlError when the GPU cannot be read at all."""
        ...


class PynvmlSource:
    """NVML through nvidia-ml-py. Raises NvmlError (or ImportError) when it cannot start."""

    def __init__(self) -> None:
        import pynvml  # the optional extra `gpu` (nvidia-ml-py)

        self._nv = pynvml
        self._error = pynvml.NVMLError
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._devices = [self._info(i, h) for i, h in enumerate(self._handles)]
        except pynvml.NVMLError as exc:
            raise NvmlError(str(exc)) from None

    def _info(self, index: int, handle) -> GpuInfo:
        nv = self._nv
        try:
            current, _ = nv.nvmlDeviceGetMigMode(handle)
            mig = current == nv.NVML_DEVICE_MIG_ENABLE
        except nv.NVMLError:  # not a MIG-capable GPU
            mig = False
        return GpuInfo(index, str(nv.nvmlDeviceGetName(handle)), nv.nvmlDeviceGetMemoryInfo(handle).total / 2**20, mig)

    def devices(self) -> list[GpuInfo]:
        return list(self._devices)

    def driver_version(self) -> str:
        try:
            return str(self._nv.nvmlSystemGetDriverVersion())
        except self._error as exc:
            raise NvmlError(str(exc)) from None

    def cuda_driver_version(self) -> str:
        try:
            v = int(self._nv.nvmlSystemGetCudaDriverVersion())
        except self._error as exc:
            raise NvmlError(str(exc)) from None
        return f"{v // 1000}.{v % 1000 // 10}"

    def sample(self, index: int) -> GpuSample:
        nv, handle = self._nv, self._handles[index]
        errors: list[str] = []

        def read(what: str, call, scale: float = 1.0) -> float:
            try:
                return float(call()) * scale
            except self._error as exc:
                errors.append(f"{what}: {exc}")
                return _NAN

        reasons = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or nv.nvmlDeviceGetCurrentClocksThrottleReasons
        throttle = read("throttle reasons", lambda: reasons(handle))
        return GpuSample(
            time.monotonic(),
            index,
            util_pct=read("utilization", lambda: nv.nvmlDeviceGetUtilizationRates(handle).gpu),
            mem_used_mb=read("memory", lambda: nv.nvmlDeviceGetMemoryInfo(handle).used, 1 / 2**20),
            power_w=read("power", lambda: nv.nvmlDeviceGetPowerUsage(handle), 1e-3),
            sm_clock_mhz=read("SM clock", lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM)),
            temp_c=read("temperature", lambda: nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU)),
            throttle_reasons=-1 if math.isnan(throttle) else int(throttle),
            errors=tuple(errors),
        )


class RecordedNvml:
    """Plays back recorded samples: `samples[index]` lists what successive calls of
    sample(index) return (a GpuSample, whose time is replaced by the call's, or an
    NvmlError to raise); the last entry repeats."""

    def __init__(
        self,
        devices: Sequence[GpuInfo],
        samples: Mapping[int, Sequence[GpuSample | NvmlError]],
        driver: str = "550.54.15",
        cuda: str = "12.4",
    ):
        self._devices = list(devices)
        self._samples = {i: list(s) for i, s in samples.items()}
        self._next = {i: 0 for i in self._samples}
        self._driver, self._cuda = driver, cuda
        self.calls = 0

    def devices(self) -> list[GpuInfo]:
        return list(self._devices)

    def driver_version(self) -> str:
        return self._driver

    def cuda_driver_version(self) -> str:
        return self._cuda

    def sample(self, index: int) -> GpuSample:
        self.calls += 1
        recorded = self._samples.get(index)
        if not recorded:
            raise NvmlError(f"no recorded samples for GPU {index}")
        k = self._next[index]
        self._next[index] = min(k + 1, len(recorded) - 1)
        got = recorded[k]
        if isinstance(got, NvmlError):
            raise got
        return GpuSample(time.monotonic(), index, got.util_pct, got.mem_used_mb, got.power_w, got.sm_clock_mhz,
                         got.temp_c, got.throttle_reasons, got.errors)


_UNSET = object()
_source: object = _UNSET
_source_lock = threading.Lock()


def default_source() -> Nvml | None:
    """This process's NVML, opened once; None without nvidia-ml-py, the NVIDIA driver or a GPU."""
    global _source
    with _source_lock:
        if _source is _UNSET:
            try:
                found: Nvml | None = PynvmlSource()
            except (ImportError, OSError, NvmlError):
                found = None
            _source = found if found is not None and found.devices() else None
        return _source  # type: ignore[return-value]


# --- a measured window ------------------------------------------------------------------


def used_gpus(number_of_gpu: object, visible: str | None, devices: Sequence[GpuInfo]) -> tuple[list[GpuInfo], str]:
    """The GPUs a server with this number_of_gpu (None: unset) and CUDA_VISIBLE_DEVICES
    (None: unset) hands to its workers, and a note when the variable cannot be read (then
    every GPU)."""
    by_index = {d.index: d for d in devices}
    note = ""
    indices = parse_gpu_list(visible) if visible is not None else [d.index for d in devices]
    if indices is None:
        note = f"{GPU_ENV}={visible!r} is not a list of GPU indices: every GPU was sampled"
        indices = [d.index for d in devices]
    gpus = [by_index[i] for i in indices if i in by_index]
    if isinstance(number_of_gpu, int) and not isinstance(number_of_gpu, bool):
        gpus = gpus[:number_of_gpu]
    return gpus, note


@dataclass
class GpuWindow:
    """What a GpuProbe saw: the trial's GPUs, their samples, and notes (one line each)."""

    gpus: tuple[GpuInfo, ...]
    samples: list[GpuSample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class GpuProbe:
    """Samples the given GPUs at start(), every interval_s, and at stop(), on a background
    thread (as sweeper.torchserve.probe samples the processes). GPUs in MIG mode are left
    out with a note; a failed NVML call becomes a note, never an exception."""

    def __init__(self, source: Nvml, gpus: Sequence[GpuInfo], interval_s: float = 0.25, notes: Iterable[str] = ()):
        self.source = source
        self.interval_s = interval_s
        self.window = GpuWindow(tuple(gpus))
        self._notes = dict.fromkeys(n for n in notes if n)
        for g in gpus:
            if g.mig:
                self._notes[f"GPU {g.index} ({g.name}) is in MIG mode: NVML reports no utilization for it, not sampled"] = None
        self._sampled = [g.index for g in gpus if not g.mig]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gpu-probe", daemon=True)

    def start(self) -> "GpuProbe":
        self._sample()
        if self._sampled:
            self._thread.start()
        return self

    def stop(self) -> GpuWindow:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sample()
        self.window.notes = list(self._notes)
        return self.window

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        for index in self._sampled:
            try:
                s = self.source.sample(index)
            except NvmlError as exc:
                self._notes[f"GPU {index}: NVML error: {exc}"] = None
                continue
            self.window.samples.append(s)
            for error in s.errors:
                self._notes[f"GPU {index}: {error}"] = None


def start_probe(
    server: Iterable[tuple[str, object]],
    env: Iterable[tuple[str, str]],
    interval_s: float,
    source: Nvml | None = None,
) -> GpuProbe | None:
    """A started probe of the GPUs a trial's server uses (its config.properties keys and
    environment, as the Trial holds them); None on a machine without GPUs (or NVML)."""
    source = source if source is not None else default_source()
    if source is None:
        return None
    visible = dict(env).get(GPU_ENV, os.environ.get(GPU_ENV))
    gpus, note = used_gpus(dict(server).get("number_of_gpu"), visible, source.devices())
    return GpuProbe(source, gpus, interval_s, [note]).start()


def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def _mean(values: Iterable[float]) -> float:
    v = _finite(values)
    return sum(v) / len(v) if v else _NAN


def _max(values: Iterable[float]) -> float:
    v = _finite(values)
    return float(max(v)) if v else _NAN


def _min(values: Iterable[float]) -> float:
    v = _finite(values)
    return float(min(v)) if v else _NAN


def throttle_text(samples: Sequence[GpuSample]) -> str | None:
    """The throttle reasons seen, with the share of samples, largest first ("none": the
    clocks were never held down); None when NVML never said."""
    known = [s.throttle_reasons for s in samples if s.throttle_reasons >= 0]
    if not known:
        return None
    shares = []
    for bit, name in THROTTLE_REASONS.items():
        n = sum(1 for r in known if r & bit)
        if n:
            shares.append((n / len(known), name))
    unnamed = sum(1 for r in known if r & ~sum(THROTTLE_REASONS))
    if unnamed:
        shares.append((unnamed / len(known), "other"))
    shares.sort(key=lambda item: -item[0])
    return ", ".join(f"{name} {100 * share:.0f}%" for share, name in shares) or "none"


def columns(window: GpuWindow | None) -> dict[str, object]:
    """The gpu_* columns (module docstring); {} without a window (no GPU on the machine)."""
    if window is None:
        return {}
    out: dict[str, object] = {"gpu_count": len(window.gpus)}
    if window.gpus:
        s = window.samples
        by_gpu = {g.index: _mean(x.util_pct for x in s if x.index == g.index) for g in window.gpus if not g.mig}
        throttle = throttle_text(s)
        out.update(
            gpu_name="; ".join(dict.fromkeys(g.name for g in window.gpus)),
            gpu_util_pct_mean=_mean(x.util_pct for x in s),
            gpu_util_pct_max=_max(x.util_pct for x in s),
            gpu_util_pct_by_gpu=" ".join(f"{i}:{u:.0f}" for i, u in by_gpu.items() if not math.isnan(u)),
            gpu_mem_used_mb_mean=_mean(x.mem_used_mb for x in s),
            gpu_mem_used_mb_max=_max(x.mem_used_mb for x in s),
            gpu_power_w_mean=_mean(x.power_w for x in s),
            gpu_power_w_max=_max(x.power_w for x in s),
            gpu_sm_clock_mhz_mean=_mean(x.sm_clock_mhz for x in s),
            gpu_sm_clock_mhz_min=_min(x.sm_clock_mhz for x in s),
            gpu_temp_c_max=_max(x.temp_c for x in s),
            gpu_throttle_reasons=throttle if throttle is not None else _NAN,
            gpu_samples_n=len(s),
        )
    if window.notes:
        out["gpu_note"] = "; ".join(window.notes)
    return out


# --- machine.json -----------------------------------------------------------------------


def torch_cuda_build() -> str | None:
    """The CUDA version the installed torch was built for (None: a CPU-only build, or no
    torch), read from torch/version.py without importing torch."""
    try:
        spec = importlib.util.find_spec("torch")
        text = (Path(spec.origin).parent / "version.py").read_text() if spec and spec.origin else ""
    except (ImportError, ValueError, OSError):
        return None
    m = re.search(r"^cuda\s*(?::[^=\n]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return m.group(1) if m else None


def machine_info(source: Nvml | None = None) -> dict[str, object]:
    """The GPU keys of machine.json: each GPU's name, memory and MIG mode, the driver, the
    CUDA version the driver supports and the one torch was built for; {} without GPUs."""
    source = source if source is not None else default_source()
    if source is None or not source.devices():
        return {}

    def ask(call) -> str:
        try:
            return call()
        except NvmlError as exc:
            return f"unknown ({exc})"

    return {
        "gpus": [
            {"index": g.index, "name": g.name, "memory_mb": round(g.memory_total_mb), "mig": g.mig}
            for g in source.devices()
        ],
        "gpu_driver": ask(source.driver_version),
        "gpu_cuda_driver": ask(source.cuda_driver_version),
        "torch_cuda": torch_cuda_build() or "none (CPU-only build)",
    }


# --- preflight --------------------------------------------------------------------------


@dataclass(frozen=True)
class CudaView:
    """What torch on this machine sees, CUDA_VISIBLE_DEVICES unset."""

    torch_version: str
    cuda_version: str | None  # the CUDA torch was built for; None: a CPU-only build
    device_count: int
    error: str = ""  # why torch could not be asked


# run in a child: the sweeper itself never initializes CUDA
_CUDA_PROBE = (
    "import json, torch; ok = torch.cuda.is_available(); "
    "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
    "'count': torch.cuda.device_count() if ok else 0}))"
)


def cuda_view(python: str = sys.executable, timeout_s: float = 180.0) -> CudaView:
    """Ask torch (in a child process with the workers' Python) which GPUs it can use. A
    CPU-only build is known from its files, without starting anything."""
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return CudaView("not installed", None, 0, "torch is not installed")
    if torch_cuda_build() is None:
        return CudaView(version, None, 0)
    build = torch_cuda_build()
    env = {k: v for k, v in os.environ.items() if k != GPU_ENV}
    try:
        proc = subprocess.run([python, "-c", _CUDA_PROBE], env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return CudaView(version, build, 0, f"no answer from torch in {timeout_s:.0f} s")
    except OSError as exc:
        return CudaView(version, build, 0, f"cannot start {python}: {exc.strerror or exc}")
    try:
        found = json.loads(proc.stdout.strip().splitlines()[-1])
        return CudaView(str(found["torch"]), found["cuda"], int(found["count"]))
    except (ValueError, IndexError, KeyError, TypeError):
        lines = proc.stderr.strip().splitlines()
        return CudaView(version, build, 0, (lines[-1] if lines else f"exit status {proc.returncode}")[:200])


def gpu_requests(trials: Iterable, inherited: Mapping[str, str] = os.environ) -> list[tuple[int | None, str | None]]:
    """The distinct (number_of_gpu, CUDA_VISIBLE_DEVICES the server will have) of the trials
    that ask for GPUs: number_of_gpu >= 1, or a CUDA_VISIBLE_DEVICES naming GPUs."""
    out: dict[tuple[int | None, str | None], None] = {}
    for t in trials:
        n = dict(t.server).get("number_of_gpu")
        visible = dict(t.env).get(GPU_ENV)
        if (isinstance(n, int) and n >= 1) or visible not in (None, ""):
            out[(n, visible if visible is not None else inherited.get(GPU_ENV))] = None
    return list(out)


def request_problem(number_of_gpu: int | None, visible: str | None, view: CudaView) -> str | None:
    """Why this machine cannot give a server these GPUs (one line), None when it can."""
    what = f"server.number_of_gpu={number_of_gpu}" if number_of_gpu else f"env.{GPU_ENV}={visible}"
    torch_text = f"torch {view.torch_version}"
    if view.error:
        return f"{what} asks for a GPU, but torch could not say which are visible: {view.error}"
    if view.cuda_version is None:
        return (f"{what} asks for a GPU, but no GPU is visible here: {torch_text} is a CPU-only build "
                f"(to install a CUDA build of torch, see docs/gpu.md)")
    count = view.device_count
    if count == 0:
        return f"{what} asks for a GPU, but no GPU is visible here: {torch_text} (CUDA {view.cuda_version}) finds none"
    indices = parse_gpu_list(visible) if visible is not None else list(range(count))
    if indices is None:
        return f"{what} asks for a GPU, but {GPU_ENV}={visible!r} is not a list of GPU indices that TorchServe can read"
    missing = [i for i in indices if i >= count]
    if missing:
        return f"env.{GPU_ENV}={visible} names GPU {missing[0]}, but this machine has {count} (0-{count - 1})"
    if not indices:
        return f"{what} asks for a GPU, but {GPU_ENV} is empty: no GPU is visible to the workers"
    if number_of_gpu is not None and number_of_gpu > len(indices):
        k = len(indices)
        where = f" ({GPU_ENV}={visible})" if visible is not None else ""
        return (f"{what} asks for {number_of_gpu} GPUs, but {k} {'is' if k == 1 else 'are'} visible{where}: "
                f"TorchServe would use {k} without saying so")
    return None


def check_trials(trials: Iterable, source: str, view=cuda_view) -> None:
    """EnvironmentProblem naming the sweep file when a trial asks for GPUs this machine (or
    its torch) does not have. Asks torch only when some trial asks for a GPU."""
    wanted = gpu_requests(trials)
    if not wanted:
        return
    seen = view()
    for number_of_gpu, visible in wanted:
        problem = request_problem(number_of_gpu, visible, seen)
        if problem:
            raise EnvironmentProblem(f"{source}: {problem}")
