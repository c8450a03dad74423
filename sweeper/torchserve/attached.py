"""A TorchServe someone else started: its three addresses, its keys, its processes when
they are on this machine, and what it has registered.

`AttachedServer` offers what a measurement asks of a server (sweeper.measure: addresses,
authorization headers, `alive`, the process tree, an empty log directory), so a trial
measures the same on it as on a server of the sweeper's own; it never starts, stops or
restarts anything. Keys come from the server's key_file.json and are re-read before each
trial (the owner may regenerate them); they are never regenerated here, since that would
lock out the owner's other clients.

Its processes. When the inference port's listening socket belongs to a process of this
machine that this user can see and that is a TorchServe frontend (java ...
org.pytorch.serve.ModelServer), the frontend and its descendants (the backend workers)
are the server's processes; otherwise there are none, and `processes_note` says why (a
container publishes its ports through a proxy process; another machine's processes are
out of reach).

Snapshots. `snapshot` lists every registered model and each version's settings and
worker count: what the run directory keeps before the first trial and after the last, and
what restoring compares against. Names the sweeper registers end in `_sweeper_<n>`
(`own_name`), so a later run can recognise them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from ..errors import ManagementError, ServerError
from .process import Keys, read_keys

FRONTEND_MARK = "org.pytorch.serve.ModelServer"
OWN_SUFFIX = "_sweeper_"
_OWN = re.compile(r"^(.+)_sweeper_(\d+)$")
# a trial's keys must outlive it by this much (the scrape and the replay of a failed answer
# after the window still send them); smaller than a server of the sweeper's own asks for,
# since these keys cannot be regenerated here
KEY_MARGIN_S = 30.0
# keys of a model version's description a snapshot keeps (GET /models/NAME/all)
SNAPSHOT_KEYS = ("modelVersion", "modelUrl", "minWorkers", "maxWorkers", "batchSize", "maxBatchDelay",
                 "responseTimeout", "loadedAtStartup")


def own_name(base: str, n: int) -> str:
    """The name of the sweeper's n-th registration of model `base` on a target."""
    return f"{base}{OWN_SUFFIX}{n}"


def is_own_name(name: str) -> bool:
    """Whether `name` is spelled as the sweeper names its registrations (`own_name`)."""
    return _OWN.match(name) is not None


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


def port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


class AttachedServer:
    """A running TorchServe at three addresses; `key_file`: its key_file.json (None: token
    authorization off, no key sent)."""

    def __init__(self, inference_url: str, management_url: str, metrics_url: str, key_file: Path | None = None,
                 log_dir: Path | None = None):
        self.inference_url = inference_url.rstrip("/")
        self.management_url = management_url.rstrip("/")
        self.metrics_url = metrics_url.rstrip("/")
        self.key_file = Path(key_file) if key_file is not None else None
        self.keys: Keys | None = read_keys(self.key_file) if self.key_file is not None else None
        # measure() reads the batches of a trial from the server's stdout; an attached
        # server's is not ours to read: a directory with no logs gives none
        self.log_dir = log_dir or Path("/nonexistent-attached-server-logs")
        self.workdir = self.log_dir.parent
        self._frontend: int | None = None
        self.processes_note = ""
        self.find_processes()

    # --- credentials --------------------------------------------------------------------

    def headers(self, api: str) -> dict[str, str]:
        """Authorization header for 'inference' or 'management' (empty without a key file)."""
        if self.keys is None:
            return {}
        return {"Authorization": f"Bearer {getattr(self.keys, api)}"}

    def refresh_tokens(self, min_valid_s: float) -> None:
        """Re-read the key file (its owner may have regenerated the keys); a ServerError when
        the keys expire before `min_valid_s` from now, since regenerating them here would
        lock out the owner's other clients."""
        if self.key_file is None:
            return
        try:
            self.keys = read_keys(self.key_file)
        except (OSError, ValueError, KeyError) as exc:
            raise ServerError(f"cannot read the target's key file {self.key_file}: {exc}") from None
        left = self.keys.expires_at - time.time()
        if left < min_valid_s + KEY_MARGIN_S:
            raise ServerError(
                f"the target's keys in {self.key_file} expire in {max(left, 0):.0f} s, before this trial ends "
                f"(about {min_valid_s:.0f} s): regenerate them on the server (PUT /token) and resume"
            )

    # --- liveness and processes ---------------------------------------------------------

    def alive(self) -> bool:
        """The target answers /ping with Healthy."""
        try:
            r = httpx.get(self.inference_url + "/ping", headers=self.headers("inference"), timeout=5.0)
            return r.status_code == 200 and r.json().get("status") == "Healthy"
        except (httpx.HTTPError, ValueError):
            return False

    def find_processes(self) -> int | None:
        """The frontend's pid when its listening socket is on this machine and visible to
        this user (processes_note says why not otherwise)."""
        self._frontend, self.processes_note = find_frontend(self.inference_url)
        return self._frontend

    @property
    def root_pid(self) -> int:
        """The frontend (the JVM); 0 when its processes are not on this machine (nothing to sample)."""
        if self._frontend is not None and not psutil.pid_exists(self._frontend):
            self.find_processes()  # restarted by its owner: look again
        return self._frontend or 0

    def processes(self) -> list[psutil.Process]:
        """The frontend and its descendants (backend workers); [] when they are not here."""
        pid = self.root_pid
        if not pid:
            return []
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def note_pids(self) -> None:
        """Nothing to note: the sweeper stops none of these processes."""

    def log_tail(self, lines: int = 40) -> str:
        return ""


def find_frontend(inference_url: str) -> tuple[int | None, str]:
    """(pid of the TorchServe frontend listening on the inference address's port, "") or
    (None, why it cannot be sampled)."""
    host, port = host_of(inference_url), port_of(inference_url)
    if not _on_this_machine(host):
        return None, f"the target ({host}) is not this machine: its processes cannot be sampled from here"
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error as exc:  # e.g. AccessDenied where the OS hides sockets
        return None, f"this machine's listening sockets cannot be read ({type(exc).__name__})"
    owners = {c.pid for c in conns if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port}
    owners.discard(None)
    if not owners:
        return None, (f"no process this user can see listens on port {port} (a container's published port, "
                      "or another user's server): its processes cannot be sampled")
    for pid in sorted(owners):
        try:
            if FRONTEND_MARK in " ".join(psutil.Process(pid).cmdline()):
                return pid, ""
        except psutil.Error:
            continue
    try:
        name = psutil.Process(min(owners)).name()
    except psutil.Error:
        name = "?"
    return None, (f"port {port} is held by {name!r} (pid {min(owners)}), not a TorchServe frontend "
                  "(a container's proxy?): its processes cannot be sampled")


def _on_this_machine(host: str) -> bool:
    if host == "localhost" or host.startswith("127.") or host == "::1":
        return True
    try:
        addresses = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    except (psutil.Error, OSError):
        return False
    return host in addresses


# --- the management API, as an attached server needs it ----------------------------------


def _get(server: AttachedServer, path: str, params: dict | None = None, timeout_s: float = 10.0) -> httpx.Response:
    try:
        return httpx.get(server.management_url + path, params=params, headers=server.headers("management"),
                         timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ManagementError(f"GET {server.management_url}{path}: {type(exc).__name__}: {exc}") from None


def _ok(r: httpx.Response, what: str) -> None:
    if r.status_code >= 300:
        raise ManagementError(f"{what}: HTTP {r.status_code}: {message(r)}")


def message(r: httpx.Response) -> str:
    """TorchServe's error message of a response, on one line."""
    try:
        data = r.json()
        detail = data.get("message", r.text) if isinstance(data, dict) else r.text
    except ValueError:
        detail = r.text
    return " ".join(str(detail).split())[:200]


def model_names(server: AttachedServer) -> list[str]:
    """Every registered model's name (GET /models, every page)."""
    names: list[str] = []
    token = None
    for _ in range(1000):  # pages of 100; a bound, not a limit anyone reaches
        params = {"limit": 100, **({"next_page_token": token} if token else {})}
        r = _get(server, "/models", params)
        _ok(r, "list models")
        data = r.json()
        names += [m["modelName"] for m in data.get("models", [])]
        token = data.get("nextPageToken")
        if not token:
            break
    return names


def versions(server: AttachedServer, name: str) -> list[dict]:
    """GET /models/NAME/all: every version's description; [] when NAME is not registered."""
    r = _get(server, f"/models/{name}/all")
    if r.status_code == 404:
        return []
    _ok(r, f"describe {name}")
    data = r.json()
    return data if isinstance(data, list) else [data]


def describe(server: AttachedServer, name: str) -> dict | None:
    """GET /models/NAME: the default version's description; None when NAME is not registered."""
    r = _get(server, f"/models/{name}")
    if r.status_code == 404:
        return None
    _ok(r, f"describe {name}")
    data = r.json()
    return data[0] if isinstance(data, list) else data


def compact(description: dict) -> dict:
    """A version's settings and worker count, as a snapshot keeps them."""
    out = {k: description.get(k) for k in SNAPSHOT_KEYS}
    out["workers"] = len(description.get("workers") or [])
    return out


def snapshot(server: AttachedServer) -> dict:
    """{"models": {name: [each version's settings]}}: what the target has registered."""
    return {"models": {name: [compact(v) for v in versions(server, name)] for name in sorted(model_names(server))}}


def worker_pids(description: dict | None) -> set[int]:
    """The pids of a model's workers in its description (none where TorchServe says -1)."""
    out = set()
    for w in (description or {}).get("workers") or []:
        try:
            pid = int(w.get("pid", -1))
        except (TypeError, ValueError):
            continue
        if pid > 0:
            out.add(pid)
    return out


def scale(server: AttachedServer, name: str, min_workers: int, max_workers: int, timeout_s: float) -> None:
    """PUT /models/NAME?min_worker=&max_worker=&synchronous=true: returns once the workers
    are up (TorchServe allows it without enable_model_api)."""
    params = {"min_worker": min_workers, "max_worker": max_workers, "synchronous": "true"}
    try:
        r = httpx.put(f"{server.management_url}/models/{name}", params=params, headers=server.headers("management"),
                      timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ManagementError(f"scale {name}: {type(exc).__name__}: {exc}") from None
    _ok(r, f"scale {name}")


def api_description(server: AttachedServer) -> dict:
    """What the target says of itself: OPTIONS / on the inference address (its OpenAPI
    description); {} when it does not answer that."""
    try:
        r = httpx.request("OPTIONS", server.inference_url + "/", headers=server.headers("inference"), timeout=10.0)
        data = r.json() if r.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}
    info = data.get("info") if isinstance(data, dict) else None
    return {k: info.get(k) for k in ("title", "version")} if isinstance(info, dict) else {}
