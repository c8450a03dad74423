"""A fake TorchServe for the attach tests: inference, management and metrics APIs on one
real loopback socket (tests/fakeserver.py's `route`), answering as TorchServe 0.12 does
where the sweeper depends on it (checked against the real server: a missing or wrong key
is HTTP 400 InvalidKeyException; an archive not in the store is 404 on registration;
registration without enable_model_api is 405, scaling works without it).

    with FakeTorchServe(store={"mlp.mar"}, keys=True) as ts:
        ts.add("mlp", workers=2, batch_size=1)
        ... ts.url, ts.key_file(tmp_path), ts.calls (method, path) of every request

Every request is recorded in `calls` (method, path with query), so a test can say which
models were never touched. `down = True` drops every connection unanswered.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from fakeserver import FakeServer

KEYS = {"management": "mgmtkey1", "inference": "infkey01", "API": "apikey01"}


class FakeTorchServe:
    def __init__(self, store: set[str] = frozenset({"mlp.mar"}), keys: bool = True, model_api: bool = True,
                 fail_predictions: set[str] = frozenset(), on_prediction=None):
        self.store = set(store)
        self.keys = keys
        self.model_api = model_api
        self.fail_predictions = set(fail_predictions)
        self.on_prediction = on_prediction  # called with the model name of every prediction
        self.models: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []  # (method, path) of every request
        self.served: dict[str, int] = {}
        self.down = False  # True: every connection is dropped unanswered (a target lost mid-sweep)
        self._lock = threading.Lock()
        self._server = FakeServer(route=self._route)

    def __enter__(self) -> "FakeTorchServe":
        self._server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._server.__exit__(*exc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    def target(self, key_file: Path | None = None) -> dict:
        """The sweep file's target group for this server (all three APIs on one port)."""
        out = {"inference": self.url, "management": self.url, "metrics": self.url}
        if key_file is not None:
            out["key_file"] = str(key_file)
        return out

    def key_file(self, where: Path, keys: dict = KEYS) -> Path:
        path = where / "key_file.json"
        stamp = "2099-01-01T00:00:00.000000000Z"
        path.write_text(json.dumps({
            "management": {"key": keys["management"], "expiration time": stamp},
            "inference": {"key": keys["inference"], "expiration time": stamp},
            "API": {"key": keys["API"]},
        }))
        return path

    def add(self, name: str, url: str | None = None, workers: int = 1, max_workers: int | None = None,
            batch_size: int = 1, max_batch_delay: int = 100, response_timeout: int = 120) -> None:
        self.models[name] = {
            "modelName": name, "modelVersion": "1.0", "modelUrl": url or f"{name}.mar", "runtime": "python",
            "minWorkers": workers, "maxWorkers": max_workers or workers, "batchSize": batch_size,
            "maxBatchDelay": max_batch_delay, "responseTimeout": response_timeout, "loadedAtStartup": False,
        }

    def state(self) -> dict:
        """Each model's settings as the test sees them."""
        return {n: {k: m[k] for k in ("modelUrl", "minWorkers", "maxWorkers", "batchSize", "maxBatchDelay")}
                for n, m in sorted(self.models.items())}

    def touched(self, name: str) -> list[tuple[str, str]]:
        """Calls that changed `name` (PUT, DELETE of /models/NAME)."""
        return [(m, p) for m, p in self.calls if m in ("PUT", "DELETE") and urlsplit(p).path == f"/models/{name}"]

    # --- the API ---------------------------------------------------------------------------

    def _describe(self, m: dict) -> dict:
        workers = [{"id": str(9000 + i), "status": "READY", "pid": -1} for i in range(m["minWorkers"])]
        return {**m, "workers": workers, "jobQueueStatus": {"remainingCapacity": 100, "pendingRequests": 0}}

    def _route(self, method: str, target: str, headers: dict, body: bytes):
        if self.down:
            raise ConnectionAbortedError("the fake target is down")  # the connection is dropped
        with self._lock:
            self.calls.append((method, target))
            return self._answer(method, target, headers)

    def _answer(self, method: str, target: str, headers: dict):
        parts = urlsplit(target)
        path, query = unquote(parts.path), {k: v[0] for k, v in parse_qs(parts.query).items()}

        def js(status: int, data) -> tuple[int, bytes]:
            return status, json.dumps(data).encode()

        def refused():
            return js(400, {"code": 400, "type": "InvalidKeyException",
                            "message": "Token Authorization failed. Token either incorrect, expired, or not provided correctly"})

        def key_ok(api: str) -> bool:
            return not self.keys or headers.get("authorization") == f"Bearer {KEYS[api]}"

        if method == "OPTIONS" and path == "/":
            return js(200, {"openapi": "3.0.1", "info": {"title": "TorchServe APIs", "version": "0.12.0"}})
        if path == "/metrics":
            lines = ["# TYPE ts_inference_requests_total counter"]
            lines += [f'ts_inference_requests_total{{model_name="{n}",model_version="default",hostname="fake"}} {c}'
                      for n, c in self.served.items()]
            return 200, ("\n".join(lines) + "\n").encode()
        if path == "/ping":
            return js(200, {"status": "Healthy"}) if key_ok("inference") else refused()
        if path.startswith("/predictions/"):
            if not key_ok("inference"):
                return refused()
            name = path.split("/")[2]
            if name not in self.models:
                return js(404, {"code": 404, "type": "ModelNotFoundException", "message": f"Model not found: {name}"})
            if self.on_prediction is not None:
                self.on_prediction(name)
            if name in self.fail_predictions:
                return js(507, {"code": 507, "message": "handler failed"})
            self.served[name] = self.served.get(name, 0) + 1
            return js(200, [0.5, 0.5])
        if not path.startswith("/models"):
            return js(404, {"message": "no such path"})
        if not key_ok("management"):
            return refused()
        rest = [p for p in path.split("/")[2:] if p]
        if method == "GET" and not rest:
            return js(200, {"models": [{"modelName": n, "modelUrl": m["modelUrl"]} for n, m in sorted(self.models.items())]})
        if method == "POST" and not rest:
            if not self.model_api:
                return js(405, {"code": 405, "type": "MethodNotAllowedException", "message": "Requested method is not allowed"})
            url, name = query["url"], query.get("model_name") or query["url"].removesuffix(".mar")
            if url not in self.store:
                return js(404, {"code": 404, "type": "ModelNotFoundException", "message": f"Model not found at: {url}"})
            if name in self.models:
                return js(409, {"code": 409, "type": "ConflictStatusException", "message": f"Model {name} is already registered."})
            workers = int(query.get("initial_workers", 0))
            self.add(name, url, workers=workers, batch_size=int(query.get("batch_size", 1)),
                     max_batch_delay=int(query.get("max_batch_delay", 100)),
                     response_timeout=int(query.get("response_timeout", 120)))
            return js(200, {"status": f'Model "{name}" Version: 1.0 registered with {workers} initial workers'})
        name = rest[0]
        if name not in self.models:
            return js(404, {"code": 404, "type": "ModelNotFoundException", "message": f"Model not found: {name}"})
        m = self.models[name]
        if method == "GET":
            return js(200, [self._describe(m)])
        if method == "PUT":
            m["minWorkers"] = int(query["min_worker"])
            m["maxWorkers"] = int(query.get("max_worker", m["minWorkers"]))
            return js(200, {"status": "Workers scaled"})
        if method == "DELETE":
            if not self.model_api:
                return js(405, {"code": 405, "type": "MethodNotAllowedException", "message": "Requested method is not allowed"})
            del self.models[name]
            return js(200, {"status": f'Model "{name}" unregistered'})
        return js(405, {"message": "method not allowed"})
