"""Register, unregister and scale a model through TorchServe's management API; read status."""

from __future__ import annotations

import httpx

from ..errors import ManagementError
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


def scale_workers(server: TorchServe, name: str, min_workers: int, max_workers: int | None,
                  timeout_s: float = 120.0) -> None:
    """PUT /models/NAME: set the workers of a registered model without registering it again
    (TorchServe starts or stops workers and keeps the model); returns once they are up."""
    scale = {"min_worker": min_workers, "max_worker": max_workers or min_workers, "synchronous": "true"}
    with _client(server, timeout_s) as c:
        _check(c.put(f"/models/{name}", params=scale), f"scale {name}")


def register_model(
    server: TorchServe,
    name: str,
    *,
    batch_size: int,
    max_batch_delay_ms: int,
    response_timeout_s: int,
    min_workers: int | None = None,
    max_workers: int | None = None,
    timeout_s: float = 120.0,
    url: str | None = None,
) -> None:
    """(Re)register `name` from `<name>.mar` (or `url`: a user's archive's file name in the
    model store) with these per-model settings. They are given explicitly, so they win over
    an archive's model-config.yaml (TorchServe uses the archive's values only for
    parameters left out), except minWorkers/maxWorkers, which win over initial_workers at
    registration: with `url`, a scale call after it sets the sweep's workers again.

    Synchronous: returns once the initial workers (`min_workers`; TorchServe's default when
    None) are up. A `max_workers` above `min_workers` goes through PUT, which TorchServe
    applies without a restart.
    """
    if name in list_models(server):
        unregister_model(server, name)
    query: dict[str, object] = {
        "url": url or f"{name}.mar",
        "model_name": name,
        "batch_size": batch_size,
        "max_batch_delay": max_batch_delay_ms,
        "response_timeout": response_timeout_s,
        "synchronous": "true",
    }
    if min_workers is not None:
        query["initial_workers"] = min_workers
    with _client(server, timeout_s) as c:
        _check(c.post("/models", params=query), f"register {name}")
        if min_workers is not None and (url is not None or max_workers not in (None, min_workers)):
            scale = {"min_worker": min_workers, "max_worker": max_workers or min_workers, "synchronous": "true"}
            _check(c.put(f"/models/{name}", params=scale), f"scale {name}")

