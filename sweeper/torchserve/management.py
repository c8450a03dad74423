"""Register, unregister and scale a model through TorchServe's management API; read status."""

from __future__ import annotations

import httpx

from ..errors import ManagementError
from ..plan import ModelParams
from .process import TorchServe


class _Client(httpx.Client):
    """httpx.Client whose transport errors become ManagementError (a failed trial, not a crash)."""

    def request(self, method, url, **kwargs):  # type: ignore[override]
        try:
            return super().request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ManagementError(f"{method} {url}: {type(exc).__name__}: {exc}") from None


def _client(server: TorchServe, timeout_s: float) -> _Client:
    return _Client(base_url=server.management_url, headers=server.headers("management"), timeout=timeout_s)


def _check(r: httpx.Response, what: str) -> None:
    if r.status_code >= 300:
        try:
            detail = r.json().get("message", r.text)
        except ValueError:
            detail = r.text
        detail = " ".join(str(detail).split())[:200]
        raise ManagementError(f"{what}: HTTP {r.status_code}: {detail}")


def list_models(server: TorchServe, timeout_s: float = 10.0) -> list[str]:
    with _client(server, timeout_s) as c:
        r = c.get("/models")
        _check(r, "list models")
        return [m["modelName"] for m in r.json().get("models", [])]


def describe_model(server: TorchServe, name: str, timeout_s: float = 10.0) -> dict:
    """GET /models/NAME: workers (pid, status), batch settings, jobQueueStatus."""
    with _client(server, timeout_s) as c:
        r = c.get(f"/models/{name}")
        _check(r, f"describe {name}")
        data = r.json()
        return data[0] if isinstance(data, list) else data


def unregister_model(server: TorchServe, name: str, timeout_s: float = 60.0) -> None:
    with _client(server, timeout_s) as c:
        _check(c.delete(f"/models/{name}"), f"unregister {name}")


def register_model(server: TorchServe, params: ModelParams, timeout_s: float = 120.0) -> None:
    """(Re)register `params.name` from `<name>.mar` with the trial's per-model settings.

    Synchronous: returns once the initial workers are up. min/max workers above the initial
    count go through PUT, which TorchServe applies without a restart.
    """
    if params.name in list_models(server):
        unregister_model(server, params.name)
    query: dict[str, object] = {
        "url": f"{params.name}.mar",
        "model_name": params.name,
        "batch_size": params.batch_size,
        "max_batch_delay": params.max_batch_delay_ms,
        "response_timeout": params.response_timeout_s,
        "synchronous": "true",
    }
    if params.min_workers is not None:
        query["initial_workers"] = params.min_workers
    with _client(server, timeout_s) as c:
        _check(c.post("/models", params=query), f"register {params.name}")
        if params.min_workers is not None and params.max_workers not in (None, params.min_workers):
            scale = {"min_worker": params.min_workers, "max_worker": params.max_workers, "synchronous": "true"}
            _check(c.put(f"/models/{params.name}", params=scale), f"scale {params.name}")


def ready_workers(server: TorchServe, name: str) -> int:
    workers = describe_model(server, name).get("workers", [])
    return sum(1 for w in workers if w.get("status") == "READY")
