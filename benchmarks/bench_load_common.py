"""Helpers shared by the bench_load_* scripts: a TorchServe of their own, an aiohttp reference.

Not a benchmark itself. The scripts import it as a sibling module.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeper.torchserve.config import Ports  # noqa: E402
from sweeper.torchserve.process import TorchServe, check_java  # noqa: E402


@contextmanager
def torchserve(model_store: Path | None = None, env: dict[str, str] | None = None):
    """A TorchServe on free loopback ports in a temporary directory, token auth off
    (the benchmarks measure the request path, not key handling); stopped on exit."""
    check_java()
    store = Path(model_store or ROOT / "model_store").resolve()

    def render(ports: Ports) -> str:
        return "\n".join(
            [
                f"inference_address=http://127.0.0.1:{ports.inference}",
                f"management_address=http://127.0.0.1:{ports.management}",
                f"metrics_address=http://127.0.0.1:{ports.metrics}",
                # gRPC always opens: without these it takes 7070/7071 on every address
                "grpc_inference_address=127.0.0.1",
                f"grpc_inference_port={ports.grpc_inference}",
                "grpc_management_address=127.0.0.1",
                f"grpc_management_port={ports.grpc_management}",
                f"model_store={store}",
                "enable_model_api=true",
                "metrics_mode=prometheus",
                "disable_token_authorization=true",
                "",
            ]
        )

    with tempfile.TemporaryDirectory(prefix="bench-load-ts-") as tmp:
        with TorchServe(Path(tmp), render, env or {}, store, token_auth=False) as server:
            yield server


@contextmanager
def ping_target(use_torchserve: bool, fake_delay_s: float = 0.0):
    """(url, label) of a `/ping`: a model-less TorchServe, or the tests' fake server in
    this process answering after `fake_delay_s`."""
    if use_torchserve:
        with torchserve() as server:
            yield server.inference_url + "/ping", "TorchServe 0.12 /ping, no model"
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from fakeserver import FakeServer

        with FakeServer(delay_s=fake_delay_s) as server:
            label = f"fake server (tests/fakeserver.py, asyncio, this process), {fake_delay_s * 1000:g} ms delay"
            yield server.url("/ping"), label


def _aiohttp_child(url: str, method: str, body: bytes, headers: dict, concurrency: int,
                   duration_s: float, queue) -> None:
    """Closed loop with aiohttp on uvloop: a fast general-purpose client, kept as the
    reference the engine's raw client must beat."""
    import aiohttp
    import uvloop

    async def main() -> tuple[int, int, float, float]:
        ok = errors = 0
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            t0 = time.perf_counter()
            stop = t0 + duration_s

            async def slot() -> None:
                nonlocal ok, errors
                while time.perf_counter() < stop:
                    try:
                        async with session.request(method, url, data=body or None, headers=headers) as r:
                            await r.read()
                            if 200 <= r.status < 300:
                                ok += 1
                            else:
                                errors += 1
                    except aiohttp.ClientError:
                        errors += 1

            cpu0 = time.process_time()
            await asyncio.gather(*(slot() for _ in range(concurrency)))
            return ok, errors, time.perf_counter() - t0, time.process_time() - cpu0

    queue.put(uvloop.run(main()))


def aiohttp_closed_loop(url: str, concurrency: int, duration_s: float, method: str = "GET",
                        body: bytes = b"", headers: dict | None = None) -> dict:
    """Run the aiohttp reference in a child process; 2xx/s, errors, CPU %."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_aiohttp_child,
        args=(url, method, body, headers or {}, concurrency, duration_s, queue),
        daemon=True,
    )
    proc.start()
    try:
        ok, errors, wall, cpu = queue.get(timeout=duration_s + 60)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
            proc.join()
    return {"ok_rps": ok / wall, "errors": errors, "cpu_pct": 100 * cpu / wall}
