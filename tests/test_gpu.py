"""GPU sweeps without a GPU: NVML played back from recorded samples (a MIG device and NVML
errors among them), the axes in config.properties and their validation, the handler's
device choice, the client's X-Device, the gpu_* columns and their absence, the report's
GPU section, and the preflight refusal on a machine without a GPU."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from handlers.handler import LocalContext, SweeperHandler, choose_device, device_for
from sweeper import gpu
from sweeper.ceiling import trial_devices
from sweeper.cli import main
from sweeper.errors import EnvironmentProblem, SpecError
from sweeper.gpu import CudaView, GpuInfo, GpuProbe, GpuSample, NvmlError, RecordedNvml
from sweeper.inputs import trial_files
from sweeper.load import LoadProfile, Target, run_load, summarize
from sweeper.load.http import ResponseParser
from sweeper.plan import expand
from sweeper.report import build_context, render_report
from sweeper.report.rundata import read_run
from sweeper.sweepfile import parse_sweep

from fakeserver import FakeServer

ROOT = Path(__file__).resolve().parents[1]
H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", 81559.0)
H100_B = GpuInfo(1, "NVIDIA H100 80GB HBM3", 81559.0)
A100_MIG = GpuInfo(2, "NVIDIA A100-SXM4-40GB", 40960.0, mig=True)


def sample(util, mem=1000.0, power=300.0, sm=1980.0, temp=60.0, throttle=0, errors=()) -> GpuSample:
    return GpuSample(0.0, 0, util, mem, power, sm, temp, throttle, tuple(errors))


def recorded(samples, devices=(H100, H100_B, A100_MIG)) -> RecordedNvml:
    return RecordedNvml(list(devices), samples)


def window_of(source, gpus, calls: int) -> gpu.GpuWindow:
    """A probe's window with exactly `calls` samples per GPU: start, calls - 2 ticks, stop
    (no thread: the interval is longer than the test)."""
    probe = GpuProbe(source, gpus, interval_s=3600.0).start()
    for _ in range(calls - 2):
        probe._sample()
    return probe.stop()


# --- NVML played back --------------------------------------------------------------------


def test_recorded_samples_become_means_and_peaks():
    source = recorded({0: [sample(40, mem=900, power=250, sm=1980, temp=55),
                           sample(80, mem=1500, power=350, sm=1755, temp=66, throttle=0x4),
                           sample(90, mem=1400, power=400, sm=1755, temp=70, throttle=0x4 | 0x1)]})
    got = gpu.columns(window_of(source, [H100], calls=3))
    assert got["gpu_count"] == 1 and got["gpu_samples_n"] == 3
    assert got["gpu_util_pct_mean"] == pytest.approx(70.0) and got["gpu_util_pct_max"] == 90.0
    assert got["gpu_mem_used_mb_max"] == 1500.0 and got["gpu_mem_used_mb_mean"] == pytest.approx(1266.67, abs=0.01)
    assert got["gpu_power_w_mean"] == pytest.approx(1000 / 3) and got["gpu_power_w_max"] == 400.0
    assert got["gpu_sm_clock_mhz_min"] == 1755.0 and got["gpu_temp_c_max"] == 70.0
    assert got["gpu_throttle_reasons"] == "SwPowerCap 67%, GpuIdle 33%"
    assert got["gpu_name"] == "NVIDIA H100 80GB HBM3" and got["gpu_util_pct_by_gpu"] == "0:70"
    assert "gpu_note" not in got
    assert all(isinstance(v, (int, float, str)) for v in got.values())


def test_two_gpus_show_how_round_robin_spread_the_work():
    source = recorded({0: [sample(90)], 1: [sample(10, mem=3000)]})
    got = gpu.columns(window_of(source, [H100, H100_B], calls=2))
    assert (got["gpu_count"], got["gpu_samples_n"]) == (2, 4)
    assert got["gpu_util_pct_mean"] == 50.0 and got["gpu_util_pct_by_gpu"] == "0:90 1:10"
    assert got["gpu_mem_used_mb_max"] == 3000.0


def test_a_mig_device_is_not_sampled_and_gets_a_one_line_note():
    source = recorded({2: [sample(99)]})
    got = gpu.columns(window_of(source, [A100_MIG], calls=3))
    assert source.calls == 0
    assert got["gpu_count"] == 1 and got["gpu_samples_n"] == 0
    assert math.isnan(got["gpu_util_pct_mean"]) and math.isnan(got["gpu_mem_used_mb_max"])
    assert "MIG mode" in got["gpu_note"] and "\n" not in got["gpu_note"]


def test_an_nvml_error_is_a_note_and_empty_figures_never_an_exception():
    source = recorded({0: [NvmlError("GPU is lost")]})
    got = gpu.columns(window_of(source, [H100], calls=4))
    assert got["gpu_samples_n"] == 0 and math.isnan(got["gpu_util_pct_max"])
    assert got["gpu_note"] == "GPU 0: NVML error: GPU is lost"  # once, not once per sample


def test_a_figure_nvml_cannot_give_is_empty_and_noted():
    nan = float("nan")
    source = recorded({0: [sample(50, power=nan, errors=["power: Not Supported"])]})
    got = gpu.columns(window_of(source, [H100], calls=2))
    assert got["gpu_util_pct_mean"] == 50.0 and math.isnan(got["gpu_power_w_mean"])
    assert got["gpu_note"] == "GPU 0: power: Not Supported"


def test_errors_mid_window_keep_the_samples_before_them():
    source = recorded({0: [sample(60), sample(80), NvmlError("Unknown Error")]})
    got = gpu.columns(window_of(source, [H100], calls=4))
    assert got["gpu_samples_n"] == 2 and got["gpu_util_pct_mean"] == 70.0
    assert got["gpu_note"] == "GPU 0: NVML error: Unknown Error"


def test_the_probe_samples_on_its_own_thread_until_stopped():
    source = recorded({0: [sample(50)]})
    probe = gpu.start_probe((("number_of_gpu", 1),), (), 0.01, source=source)
    time.sleep(0.1)
    window = probe.stop()
    assert len(window.samples) >= 4 and all(s.index == 0 for s in window.samples)
    assert window.samples == sorted(window.samples, key=lambda s: s.t_s)


def test_throttle_reasons_say_none_when_never_held_down_and_nothing_when_unknown():
    assert gpu.throttle_text([sample(1, throttle=0)]) == "none"
    assert gpu.throttle_text([sample(1, throttle=-1)]) is None
    assert gpu.throttle_text([sample(1, throttle=0x2000)]) == "other 100%"


# --- which GPUs a trial uses -------------------------------------------------------------


@pytest.mark.parametrize("number_of_gpu, visible, expected", [
    (None, None, [0, 1, 2]),  # TorchServe's default: every GPU it sees
    (1, None, [0]),
    (2, "1,0", [1, 0]),  # CUDA_VISIBLE_DEVICES reorders: gpu_id 0 is GPU 1
    (0, None, []),  # number_of_gpu 0: workers on the CPU
    (None, "", []),  # nothing visible
    (2, "1", [1]),  # fewer visible than asked: TorchServe caps it
    (None, "7", []),  # not on this machine
])
def test_used_gpus_follow_number_of_gpu_and_cuda_visible_devices(number_of_gpu, visible, expected):
    gpus, note = gpu.used_gpus(number_of_gpu, visible, [H100, H100_B, A100_MIG])
    assert ([g.index for g in gpus], note) == (expected, "")


def test_an_unreadable_cuda_visible_devices_samples_every_gpu_with_a_note():
    gpus, note = gpu.used_gpus(1, "GPU-8e3f", [H100, H100_B])
    assert [g.index for g in gpus] == [0] and "GPU-8e3f" in note


def test_a_trial_on_the_cpu_of_a_gpu_machine_gets_gpu_count_zero_only():
    probe = gpu.start_probe((("number_of_gpu", 0),), (), 0.01, source=recorded({0: [sample(5)]}))
    assert gpu.columns(probe.stop()) == {"gpu_count": 0}


def test_the_trial_env_picks_the_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # the sweeper's own: the trial's wins
    source = recorded({0: [sample(1)], 1: [sample(2)]})
    probe = gpu.start_probe((), (("CUDA_VISIBLE_DEVICES", "1"),), 3600.0, source=source)
    assert [g.index for g in probe.stop().gpus] == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")  # inherited when the trial sets none
    probe = gpu.start_probe((("number_of_gpu", 1),), (), 3600.0, source=source)
    assert [g.index for g in probe.stop().gpus] == [1]


# --- no GPU: nothing ----------------------------------------------------------------------


def test_this_machine_has_no_nvml_source_no_columns_and_no_machine_keys():
    assert gpu.default_source() is None  # no GPU here (nvidia-ml-py installed or not)
    assert gpu.start_probe((("number_of_gpu", 1),), (), 0.01) is None
    assert gpu.columns(None) == {}
    assert gpu.machine_info() == {}


def test_without_nvidia_ml_py_there_is_no_source(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pynvml(name, *args, **kwargs):
        if name == "pynvml":
            raise ImportError("No module named 'pynvml'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    monkeypatch.setattr(gpu, "_source", gpu._UNSET)
    assert gpu.default_source() is None


def test_machine_json_lists_the_gpus_driver_and_cuda():
    info = gpu.machine_info(recorded({}, devices=[H100, A100_MIG]))
    assert info["gpus"] == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559, "mig": False},
        {"index": 2, "name": "NVIDIA A100-SXM4-40GB", "memory_mb": 40960, "mig": True},
    ]
    assert (info["gpu_driver"], info["gpu_cuda_driver"]) == ("550.54.15", "12.4")
    assert info["torch_cuda"] == (gpu.torch_cuda_build() or "none (CPU-only build)")
    json.dumps(info)


def test_torch_cuda_build_is_read_without_importing_cuda():
    assert gpu.torch_cuda_build() == torch.version.cuda


# --- the axes -------------------------------------------------------------------------------

BASE = {"name": "g", "load": {"mode": "closed", "concurrency": 2, "duration_s": 1}}


def test_the_axes_render_into_config_properties_and_the_environment(tmp_path):
    spec = parse_sweep({**BASE, "server": {"number_of_gpu": [0, 2]}, "env": {"CUDA_VISIBLE_DEVICES": ["0", "0,1", ""]}}, "g.yaml")
    trials = expand(spec)
    assert len(trials) == 6 and len({t.group_id for t in trials}) == 6  # each pair needs its own JVM
    seen = set()
    for t in trials:
        files = trial_files(t, tmp_path, spec.settings)
        props = dict(line.split("=", 1) for line in files["config.properties"].decode().splitlines() if "=" in line and not line.startswith("#"))
        env = json.loads(files["env.json"])
        seen.add((props["number_of_gpu"], env["CUDA_VISIBLE_DEVICES"]))
        assert t.params()["param_server_number_of_gpu"] == int(props["number_of_gpu"])
        assert t.params()["param_env_CUDA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"]
    assert seen == {(n, v) for n in ("0", "2") for v in ("0", "0,1", "")}


def test_a_sweep_without_gpu_axes_renders_no_gpu_key(tmp_path):
    spec = parse_sweep(BASE, "g.yaml")
    [t] = expand(spec)
    assert b"number_of_gpu" not in trial_files(t, tmp_path, spec.settings)["config.properties"]


@pytest.mark.parametrize("extra, key, rule", [
    ({"server": {"number_of_gpu": -1}}, "server.number_of_gpu", "must be >= 0, got -1"),
    ({"server": {"number_of_gpu": "1"}}, "server.number_of_gpu", "must be an integer"),
    ({"server": {"number_of_gpu": 1.5}}, "server.number_of_gpu", "must be an integer"),
    ({"server": {"number_of_gpu": [1, 1]}}, "server.number_of_gpu[1]", "duplicate of number_of_gpu[0]"),
    ({"server": {"number_of_gpu": []}}, "server.number_of_gpu", "must not be empty"),
    ({"env": {"CUDA_VISIBLE_DEVICES": "0, 1"}}, "env.CUDA_VISIBLE_DEVICES", "GPU indices separated by commas"),
    ({"env": {"CUDA_VISIBLE_DEVICES": "GPU-8e3f"}}, "env.CUDA_VISIBLE_DEVICES", "GPU indices separated by commas"),
    ({"env": {"CUDA_VISIBLE_DEVICES": -1}}, "env.CUDA_VISIBLE_DEVICES", "got -1"),
    ({"env": {"CUDA_VISIBLE_DEVICES": ["0", "1,1"]}}, "env.CUDA_VISIBLE_DEVICES[1]", "names a GPU twice"),
    ({"env": {"CUDA_VISIBLE_DEVICES+OMP_NUM_THREADS": "x"}}, "env.CUDA_VISIBLE_DEVICES+OMP_NUM_THREADS", "GPU indices"),
])
def test_gpu_axes_are_validated(extra, key, rule):
    with pytest.raises(SpecError) as info:
        parse_sweep({**BASE, **extra}, "g.yaml")
    assert info.value.key == key and rule in info.value.rule and "\n" not in str(info.value)


@pytest.mark.parametrize("value", [0, "0", "0,1", "3,1,2", "", ["0", "1", ""], [0, 1]])
def test_gpu_axes_accept_indices_and_empty(value):
    spec = parse_sweep({**BASE, "server": {"number_of_gpu": [0, 1, 8]}, "env": {"CUDA_VISIBLE_DEVICES": value}}, "g.yaml")
    assert spec.server.number_of_gpu == [0, 1, 8]


# --- the handler's device --------------------------------------------------------------------


@pytest.mark.parametrize("gpu_id, cuda, expected", [
    (None, False, "cpu"), (None, True, "cpu"), (0, False, "cpu"), (0, True, "cuda:0"), (3, True, "cuda:3"), ("1", True, "cuda:1"),
])
def test_choose_device(gpu_id, cuda, expected):
    assert choose_device(gpu_id, cuda) == expected


class WorkerContext:
    """The part of TorchServe's Context that device_for reads."""

    def __init__(self, gpu_id):
        self.system_properties = {"model_dir": "/nowhere", "gpu_id": gpu_id}


def test_device_for_a_worker_follows_gpu_id_and_cuda(monkeypatch):
    assert device_for(WorkerContext(0)) == ("cuda:0" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_for(WorkerContext(1)) == "cuda:1"  # no tensor is moved: only the choice
    assert device_for(WorkerContext(None)) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_for(WorkerContext(1)) == "cpu"
    assert device_for(LocalContext(1)) == "cpu"  # no system properties at all


def test_a_worker_without_a_gpu_id_never_asks_cuda(monkeypatch):
    def boom():
        raise AssertionError("asked CUDA for a CPU worker")

    monkeypatch.setattr(torch.cuda, "is_available", boom)
    assert device_for(WorkerContext(None)) == "cpu"


def test_cpu_answers_say_x_device_cpu():
    handler = SweeperHandler.for_model("mlp")
    context = LocalContext(2)
    body = handler.info.example_request()
    answers = handler.handle([{"body": body}, {"body": b"not json"}], context)
    assert [h["X-Device"] for h in context.response_headers] == ["cpu", "cpu"]
    assert json.loads(answers[0])["class"] in range(10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_answers_match_cpu_answers():
    body = SweeperHandler.for_model("mlp").info.example_request()
    cpu_ctx, gpu_ctx = LocalContext(1), LocalContext(1)
    a = SweeperHandler.for_model("mlp").handle([{"body": body}], cpu_ctx)
    b = SweeperHandler.for_model("mlp", "cuda:0").handle([{"body": body}], gpu_ctx)
    assert gpu_ctx.response_headers[0]["X-Device"] == "cuda:0"
    assert json.loads(a[0])["class"] == json.loads(b[0])["class"]


# --- the client sees the device ----------------------------------------------------------------


def test_the_parser_collects_x_device_values_across_responses():
    devices: set = set()
    parser = ResponseParser(devices=devices)
    for dev in (b"cuda:0", b"cuda:1", b"cuda:0"):
        assert parser.feed(b"HTTP/1.1 200 OK\r\nX-Device: " + dev + b"\r\nX-Batch-Size: 4\r\nContent-Length: 2\r\n\r\nok")
        assert parser.batch_size == 4
        parser.reset()
    assert devices == {b"cuda:0", b"cuda:1"}
    plain = ResponseParser()  # no set given: the header is skipped
    assert plain.feed(b"HTTP/1.1 200 OK\r\nX-Device: cpu\r\nContent-Length: 0\r\n\r\n")


class DeviceServer(FakeServer):
    """The fake server, answering with an X-Device header."""

    device = "cuda:0"

    def _build(self, status: int, close: bool) -> bytes:
        head, sep, rest = super()._build(status, close).partition(b"\r\n")
        return head + sep + f"X-Device: {self.device}\r\n".encode() + rest


def test_client_device_is_the_set_of_devices_the_responses_named():
    with DeviceServer(delay_s=0.001, batch_size=2) as server:
        run = run_load(Target(server.url("/predictions/mlp"), b"[1]"), LoadProfile("closed", concurrency=2, requests=20, processes=2))
    assert run.devices == ("cuda:0",)
    got = summarize(run)
    assert got["client_device"] == "cuda:0" and got["client_ok"] == 20


def test_no_x_device_no_client_device_column():
    with FakeServer(delay_s=0.001) as server:
        run = run_load(Target(server.url("/predictions/mlp"), b"[1]"), LoadProfile("closed", concurrency=1, requests=5))
    assert run.devices == () and "client_device" not in summarize(run)


def test_the_ceiling_runs_on_the_gpus_the_trials_reported():
    rows = [
        {"status": "ok", "client_device": "cuda:1,cuda:0"},
        {"status": "ok", "client_device": "cuda:10"},
        {"status": "failed", "client_device": "cuda:7"},
        {"status": "ok", "client_device": "cpu"},
        {"status": "ok"},
    ]
    assert trial_devices(rows) == ["cuda:0", "cuda:1", "cuda:10"]
    assert trial_devices([{"status": "ok", "client_device": "cpu"}, {"status": "ok"}]) == []


# --- preflight --------------------------------------------------------------------------------

CPU_TORCH = CudaView("2.13.0+cpu", None, 0)
ONE_GPU = CudaView("2.13.0+cu126", "12.6", 1)
TWO_GPUS = CudaView("2.13.0+cu126", "12.6", 2)


@pytest.mark.parametrize("number_of_gpu, visible, view, expected", [
    (1, None, CPU_TORCH, "server.number_of_gpu=1 asks for a GPU, but no GPU is visible here: torch 2.13.0+cpu is a CPU-only build"),
    (None, "0", CPU_TORCH, "env.CUDA_VISIBLE_DEVICES=0 asks for a GPU, but no GPU is visible here"),
    (1, None, CudaView("2.13.0+cu126", "12.6", 0), "no GPU is visible here: torch 2.13.0+cu126 (CUDA 12.6) finds none"),
    (1, None, CudaView("2.13.0+cu126", "12.6", 0, "CUDA driver too old"), "torch could not say which are visible: CUDA driver too old"),
    (2, None, ONE_GPU, "server.number_of_gpu=2 asks for 2 GPUs, but 1 is visible: TorchServe would use 1"),
    (2, "1", TWO_GPUS, "asks for 2 GPUs, but 1 is visible (CUDA_VISIBLE_DEVICES=1)"),
    (None, "0,2", TWO_GPUS, "env.CUDA_VISIBLE_DEVICES=0,2 names GPU 2, but this machine has 2 (0-1)"),
    (1, "", TWO_GPUS, "CUDA_VISIBLE_DEVICES is empty: no GPU is visible to the workers"),
    (1, None, ONE_GPU, None),
    (2, "1,0", TWO_GPUS, None),
    (None, "1", TWO_GPUS, None),
])
def test_request_problem(number_of_gpu, visible, view, expected):
    got = gpu.request_problem(number_of_gpu, visible, view)
    assert (got is None) if expected is None else (expected in got and "\n" not in got)


def test_a_cpu_sweep_never_asks_torch_about_gpus():
    spec = parse_sweep({**BASE, "server": {"number_of_gpu": 0}, "env": {"CUDA_VISIBLE_DEVICES": ""}}, "g.yaml")

    def view():
        raise AssertionError("asked torch for a sweep that wants no GPU")

    gpu.check_trials(expand(spec), "g.yaml", view=view)


def test_check_trials_names_the_sweep_file_and_the_trial_that_asks():
    spec = parse_sweep({**BASE, "server": {"number_of_gpu": [0, 1, 2]}}, "g.yaml")
    gpu.check_trials(expand(spec)[:2], "g.yaml", view=lambda: ONE_GPU)
    with pytest.raises(EnvironmentProblem, match=r"^g\.yaml: server\.number_of_gpu=2 asks for 2 GPUs, but 1 is visible"):
        gpu.check_trials(expand(spec), "g.yaml", view=lambda: ONE_GPU)


def test_cuda_view_of_a_cpu_only_torch_starts_nothing(monkeypatch):
    if gpu.torch_cuda_build() is not None:
        pytest.skip("torch here is a CUDA build")
    monkeypatch.setattr(gpu.subprocess, "run", lambda *a, **k: pytest.fail("started a process"))
    view = gpu.cuda_view()
    assert (view.cuda_version, view.device_count, view.torch_version) == (None, 0, torch.__version__)


@pytest.mark.skipif(gpu.torch_cuda_build() is not None, reason="this machine's torch has CUDA")
def test_plan_of_the_shipped_gpu_sweep_says_in_one_line_that_no_gpu_is_visible(capsys):
    assert main(["plan", str(ROOT / "sweeps" / "gpu.yaml")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "gpu.yaml: server.number_of_gpu=1 asks for a GPU, but no GPU is visible here" in err


def test_plan_of_a_cpu_sweep_is_untouched(capsys):
    assert main(["plan", str(ROOT / "sweeps" / "smoke.yaml")]) == 0
    assert "number_of_gpu" not in capsys.readouterr().out


# --- the report ---------------------------------------------------------------------------------


def rows(with_gpu: bool) -> pd.DataFrame:
    out = []
    for k, (batch, tput, util) in enumerate([(1, 900.0, 35.0), (8, 2400.0, 80.0), (32, 3100.0, 97.0)]):
        for repeat in range(2):
            row = {
                "trial_id": f"t{k}", "repeat": repeat, "status": "ok", "error": "",
                "param_model_name": "mlp", "param_model_batch_size": batch, "param_server_number_of_gpu": 1,
                "load_mode": "closed", "load_concurrency": 64, "load_rate_rps": float("nan"),
                "client_throughput_rps": tput + repeat, "client_latency_p50_ms": 5.0, "client_latency_p99_ms": 9.0,
                "client_success_rate": 1.0, "client_bound": False, "client_bound_reason": "",
            }
            if with_gpu:
                row.update(
                    client_device="cuda:0", gpu_count=1, gpu_name="NVIDIA H100 80GB HBM3", gpu_util_pct_mean=util,
                    gpu_util_pct_max=util + 2, gpu_mem_used_mb_max=1200.0 + 300 * k, gpu_mem_used_mb_mean=1100.0,
                    gpu_power_w_mean=150.0 + 50 * k, gpu_power_w_max=400.0, gpu_sm_clock_mhz_mean=1980.0,
                    gpu_sm_clock_mhz_min=1755.0, gpu_temp_c_max=60.0 + k, gpu_throttle_reasons="SwPowerCap 10%" if k == 2 else "none",
                    gpu_util_pct_by_gpu=f"0:{util:.0f}", gpu_samples_n=21,
                )
            out.append(row)
    if with_gpu:
        out[0]["gpu_note"] = "GPU 0: power: Not Supported"
    return pd.DataFrame(out)


def write_run(tmp_path: Path, df: pd.DataFrame, machine: dict) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    df.to_csv(run / "results.csv", index=False)
    (run / "sweep.yaml").write_text("name: gpu\n")
    (run / "machine.json").write_text(json.dumps(machine))
    return run


def test_the_report_has_a_gpu_section_with_gpu_columns(tmp_path):
    machine = {"cpu_model": "test", **gpu.machine_info(recorded({}, devices=[H100]))}
    run = write_run(tmp_path, rows(with_gpu=True), machine)
    context = build_context(read_run(run))
    section = context["gpu"]
    assert [r.trial_id for r in section.rows] == ["t2", "t1", "t0"]  # best throughput first
    top = section.rows[0]
    assert (top.device, top.throttle, top.cells[0]) == ("cuda:0", "SwPowerCap 10%", "97.0")
    assert [p.name for p in section.plots] == ["gpu_util", "gpu_memory"]
    assert section.notes == ["GPU 0: power: Not Supported"]
    html, md = render_report(run)
    page = html.read_text()
    assert 'id="gpu"' in page and 'href="#gpu"' in page and 'data-plot="gpu_util"' in page and "<svg" in page
    assert "NVIDIA H100 80GB HBM3" in page  # machine.json's GPU
    text = md.read_text()
    assert "## GPUs" in text and "| t2 |" in text and "power: Not Supported" in text


def test_no_gpu_columns_no_gpu_section(tmp_path):
    run = write_run(tmp_path, rows(with_gpu=False), {"cpu_model": "test"})
    assert build_context(read_run(run))["gpu"] is None
    html, md = render_report(run)
    page = html.read_text()
    assert 'id="gpu"' not in page and "GPU" not in page
    assert "GPU" not in md.read_text()


def test_trials_that_ran_on_the_cpu_of_a_gpu_machine_show_no_gpu_section(tmp_path):
    df = rows(with_gpu=False).assign(gpu_count=0, client_device="cpu")
    run = write_run(tmp_path, df, {"cpu_model": "test"})
    assert build_context(read_run(run))["gpu"] is None


# --- the GPU check's bundle (benchmarks/gpu_bundle.py, benchmarks/gpu_env.py) -----------------


def _load(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_env = _load("gpu_env")
gpu_bundle = _load("gpu_bundle")

MANIFEST = {"python": "3.12", "binary": [], "distributions": {
    "pydantic": {"wheel": "pydantic-2.14.4-py3-none-any.whl", "requires": ["pydantic-core==2.50.5", "typing-extensions>=4.16.0"],
                 "project_rules": [">=2.5"]},
    "pydantic-core": {"wheel": None, "requires": [], "project_rules": []},
    "typing-extensions": {"wheel": "typing_extensions-4.16.0-py3-none-any.whl", "requires": [], "project_rules": []},
    "httpx": {"wheel": "httpx-0.29.0-py3-none-any.whl", "requires": ["idna"], "project_rules": [">=0.27"]},
    "idna": {"wheel": "idna-3.21-py3-none-any.whl", "requires": [], "project_rules": []},
    "pandas": {"wheel": None, "requires": ["numpy>=2.0.2"], "project_rules": [">=2"]},
    "numpy": {"wheel": None, "requires": [], "project_rules": [">=1.24"]},
}}


def test_the_machine_gets_only_what_it_lacks_or_has_too_old():
    machine = {"pydantic": "1.10.13", "pydantic-core": None, "typing-extensions": "4.12.0", "httpx": "0.28.1",
               "idna": "3.7", "pandas": "2.2.2", "numpy": "1.26.4"}
    install, missing, why = gpu_env.plan(MANIFEST, machine.get)
    # pydantic v1 is refused; the bundle's pydantic needs its exact core (compiled: not in
    # the bundle) and a newer typing-extensions; the machine's pandas and numpy stay
    assert install == ["pydantic", "typing-extensions"] and missing == ["pydantic-core"]
    assert "1.10.13 here" in why["pydantic"] and why["pydantic-core"] == "not installed"
    assert why["typing-extensions"] == "pydantic needs typing-extensions>=4.16.0 (4.12.0 here)"
    assert gpu_env.plan(MANIFEST, {**machine, "pydantic": "2.14.4", "pydantic-core": "2.50.5", "typing-extensions": "4.16.0"}.get) == ([], [], {})


def test_the_make_line_names_the_compiled_wheels_missing(monkeypatch):
    line = gpu_env.make_hint({**MANIFEST, "binary": ["numpy"]}, ["pandas"])
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert line.startswith(f"make gpu-bundle GPU_PY={py} GPU_GLIBC=") and line.endswith('GPU_WHEELS="numpy pandas"')


@pytest.mark.parametrize("name, fits", [
    ("idna-3.21-py3-none-any.whl", True),
    ("psutil-7.2.2-cp36-abi3-manylinux2010_x86_64.manylinux_2_12_x86_64.whl", True),
    (f"numpy-2.4.6-cp3{sys.version_info.minor}-cp3{sys.version_info.minor}-manylinux_2_28_x86_64.whl", True),
    (f"numpy-2.4.6-cp3{sys.version_info.minor + 1}-cp3{sys.version_info.minor + 1}-manylinux_2_28_x86_64.whl", False),
    (f"numpy-2.4.6-cp3{sys.version_info.minor}-cp3{sys.version_info.minor}-manylinux_2_28_aarch64.whl", False),
    ("pywin32-306-cp311-cp311-win_amd64.whl", False),
])
def test_a_compiled_wheel_fits_only_its_python(name, fits):
    assert gpu_env.wheel_fits(name) is fits


def test_restoring_a_wheel_stores_it_uncompressed_trims_the_jar_and_keeps_record_true(tmp_path):
    import base64
    import hashlib
    import io
    import zipfile

    jar = io.BytesIO()
    with zipfile.ZipFile(jar, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("META-INF/MANIFEST.MF", "Main-Class: org.pytorch.serve.ModelServer\n")
        z.writestr("org/pytorch/serve/ModelServer.class", b"\xca\xfe" * 100)
        z.writestr("org/codehaus/groovy/Big.class", b"\x00" * 1000)
        z.writestr("META-INF/native/libnetty_osx_x86_64.jnilib", b"\x01" * 100)
        z.writestr("META-INF/services/javax.script.ScriptEngineFactory", "org.codehaus.groovy.jsr223.GroovyScriptEngineFactory\n")
        z.writestr("META-INF/services/io.grpc.ManagedChannelProvider", "org.pytorch.serve.ModelServer\norg.codehaus.groovy.Big\n")
    src = tmp_path / "src" / "torchserve-0.12.0-py3-none-any.whl"
    src.parent.mkdir()
    record = "ts/frontend/model-server.jar,sha256=old,1\nts/__init__.py,sha256=x,0\ntorchserve-0.12.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ts/__init__.py", "")
        z.writestr("ts/frontend/model-server.jar", jar.getvalue())
        z.writestr("torchserve-0.12.0.dist-info/RECORD", record)
    out = gpu_bundle.restore_wheel(src, tmp_path, trim_jar=True)
    with zipfile.ZipFile(out) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        new_jar = z.read("ts/frontend/model-server.jar")
        rows = {r.split(",")[0]: r for r in z.read("torchserve-0.12.0.dist-info/RECORD").decode().splitlines()}
    digest = base64.urlsafe_b64encode(hashlib.sha256(new_jar).digest()).rstrip(b"=").decode()
    assert rows["ts/frontend/model-server.jar"] == f"ts/frontend/model-server.jar,sha256={digest},{len(new_jar)}"
    with zipfile.ZipFile(io.BytesIO(new_jar)) as j:
        names = set(j.namelist())
        assert names == {"META-INF/MANIFEST.MF", "org/pytorch/serve/ModelServer.class",
                         "META-INF/services/io.grpc.ManagedChannelProvider"}
        assert j.read("META-INF/services/io.grpc.ManagedChannelProvider").decode().split() == ["org.pytorch.serve.ModelServer"]
    whole = gpu_bundle.restore_wheel(src, tmp_path, trim_jar=False)
    with zipfile.ZipFile(whole) as z, zipfile.ZipFile(io.BytesIO(z.read("ts/frontend/model-server.jar"))) as j:
        assert len(j.namelist()) == 6
