"""Sweeping a TorchServe someone else started (the sweep's `target`): the checks before
anything is sent, and the run's first and last steps around the sweep loop.

`prepare_target` is `sweeper plan` and `sweeper run`'s preparation of a sweep with a target
(sweeper.preflight hands it over): the schema has already refused what would need a
restart (server and env keys) and a target beyond loopback without allow_remote; here the
key file, the archive and the request files are read, and, unless only planning, the target
is asked whether it answers on its three addresses, takes the keys and has the model. Every
problem is one SpecError (exit 2) before any load is sent and before the run directory
exists. Those questions are a GET each, except one: whether the target's model store holds
an archive, and whether it allows registrations at all, only a registration can tell, so
the archive is registered with no workers under a name of the sweeper's own and
unregistered at once.

`Visit` is the run's part: `begin` writes target_before.json (or, resuming, cleans up
after the interrupted run by its snapshot) and machine.json's `target`; `finish` restores
the target (sweeper.executors.attach.restore) and writes target_after.json, and says in
one line what it undid or what still differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx

from .errors import ManagementError, SpecError, SweeperError
from .executors.attach import batching_of, default_version, registered_batching, restore, same_batching, server_for
from .machine import machine_cpus
from .payload import load_request_sets, resolve_files
from .plan import count_trials, default_order, expand, order
from .rundir import RunDir
from .torchserve import attached
from .torchserve.attached import AttachedServer
from .torchserve.process import read_keys
from .usermodel import UserModel, resolve as resolve_user_model


def prepare_target(path: Path, spec, yes: bool, contact: bool = True):
    """preflight.prepare for a sweep with a target; `contact`: check the target too (else
    nothing is sent: `sweeper plan`). Returns (path, spec, trials, None, UserModel)."""
    source = str(path)
    defaulted = {key for key in ("management", "metrics") if getattr(spec.target, key) is None}
    spec = _resolve_target(spec, source)
    for i, cpu in enumerate(spec.settings.client_cpus or []):
        if cpu not in machine_cpus():
            raise SpecError(source, f"settings.client_cpus[{i}]", f"must be a CPU this process may use, got {cpu}")
    spec, archive_file = _archive(spec, source)
    spec = resolve_files(spec, source)
    request_sets = load_request_sets(spec, source)
    from handlers.models import MODELS

    if spec.model.name not in MODELS and not spec.requests:
        raise SpecError(source, "request", f"required for model {spec.model.name!r} (not one of the sweeper's): give files, text or json that its handler accepts")
    server = None
    if contact:
        server = connect(spec, source, defaulted)
        spec = _check_model(server, spec, source, archive_file)
    distinct = count_trials(spec)
    if spec.search.budget_trials is not None:
        distinct = min(distinct, spec.search.budget_trials)
    if distinct > spec.settings.max_trials and not yes:
        raise SpecError(source, "settings.max_trials",
                        f"the grid has {distinct} trials, more than the limit {spec.settings.max_trials}; pass --yes to run it anyway")
    how = spec.settings.order or default_order(spec.settings.repeats)
    trials = order(expand(spec), how, spec.settings.seed)
    if server is not None and spec.model.registered is not None:
        _check_copies(server, spec, source, trials)
    return path, spec, trials, None, UserModel(spec, None, archive_file, request_sets)


def _resolve_target(spec, source: str):
    """The target with its three addresses spelled out and the key file made absolute, so
    a run's sweep.yaml says where it sent load and works from the run directory."""
    t = spec.target
    update: dict = {"management": t.management_url, "metrics": t.metrics_url, "inference": t.inference.rstrip("/")}
    if t.key_file is not None:
        key = Path(t.key_file).expanduser()
        update["key_file"] = str(key if key.is_absolute() else (Path(source).parent / key).resolve())
    return spec.model_copy(update={"target": t.model_copy(update=update)})


def _archive(spec, source: str):
    """(spec, the archive's file name: the registration's url, or None). An archive found
    here is read as for servers of the sweeper's own (its manifest names the model); one
    that is not is taken as a file of the target's model store, named by model.name or else
    by its file name."""
    archive = spec.model.archive
    if archive is None:
        return spec, None
    local = Path(archive).expanduser()
    local = local if local.is_absolute() else Path(source).parent / local
    if local.is_file():
        user = resolve_user_model(spec, source)
        return user.spec, user.archive_file
    url = Path(archive).name
    if "name" not in spec.model.model_fields_set:
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"name": Path(url).stem})})
    return spec, url


# --- asking the target -------------------------------------------------------------------


def _ask(source: str, key: str, method: str, url: str, defaulted: bool = False, **kwargs) -> httpx.Response:
    try:
        return httpx.request(method, url, timeout=10.0, **kwargs)
    except httpx.HTTPError as exc:
        why = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        if defaulted:  # the address the sweep did not give
            why += f" ({key} not given: TorchServe's default port on the inference address's host; give {key})"
        raise SpecError(source, key, f"cannot reach {url}: {why}") from None


def refused(r: httpx.Response) -> bool:
    """A key missing or refused: TorchServe 0.12 answers HTTP 400 InvalidKeyException
    (checked), others 401 or 403."""
    return r.status_code in (401, 403) or (r.status_code == 400 and "InvalidKeyException" in r.text)


def _refusal(server: AttachedServer, api: str, r: httpx.Response) -> str:
    said = f"HTTP {r.status_code}: {attached.message(r)}"
    if server.key_file is None:
        return f"the target asks for a key ({said}): give target.key_file, the key_file.json its server wrote where it started"
    return f"the target refused the {api} key of {server.key_file} ({said})"


def connect(spec, source: str, defaulted: set[str] | frozenset[str] = frozenset()) -> AttachedServer:
    """The target, checked: the key file reads, the management API answers and takes its
    key, /ping answers Healthy to the inference key, /metrics answers. GETs only."""
    t = spec.target
    if t.key_file is not None:
        try:
            keys = read_keys(Path(t.key_file))
        except FileNotFoundError:
            raise SpecError(source, "target.key_file", f"file not found: {t.key_file}") from None
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise SpecError(source, "target.key_file",
                            f"not a TorchServe key file (management, inference and API keys): {type(exc).__name__}: {exc}") from None
        if keys.expires_at < time.time():
            at = datetime.fromtimestamp(keys.expires_at, timezone.utc).isoformat(timespec="seconds")
            raise SpecError(source, "target.key_file", f"its keys expired at {at}: regenerate them on the server (PUT /token)")
    server = server_for(spec)
    r = _ask(source, "target.management", "GET", server.management_url + "/models", "management" in defaulted,
             params={"limit": 1}, headers=server.headers("management"))
    if refused(r):
        raise SpecError(source, "target.key_file", _refusal(server, "management", r))
    if r.status_code != 200:
        raise SpecError(source, "target.management", f"GET /models answered HTTP {r.status_code}: {attached.message(r)}")
    r = _ask(source, "target.inference", "GET", server.inference_url + "/ping", headers=server.headers("inference"))
    if refused(r):
        raise SpecError(source, "target.key_file", _refusal(server, "inference", r))
    if r.status_code != 200 or '"Healthy"' not in r.text.replace(" ", ""):
        raise SpecError(source, "target.inference", f"/ping answered HTTP {r.status_code}: {attached.message(r)} (not Healthy)")
    r = _ask(source, "target.metrics", "GET", server.metrics_url + "/metrics", "metrics" in defaulted)
    if r.status_code != 200:
        raise SpecError(source, "target.metrics", f"/metrics answered HTTP {r.status_code}: {attached.message(r)}")
    return server


def _check_model(server: AttachedServer, spec, source: str, archive_file: str | None):
    """The model is there: model.registered is registered (its settings then fill the
    per-model keys the sweep leaves out), or the archive is in the target's model store."""
    try:
        if spec.model.registered is not None:
            name = spec.model.registered
            found = attached.describe(server, name)
            if found is None:
                names = attached.model_names(server)
                raise SpecError(source, "model.registered",
                                f"the target has no model {name!r} registered (it has: {', '.join(names) or 'none'})")
            return _fill_from(spec, found)
        url = archive_file or f"{spec.model.name}.mar"
        check_archive(server, url, spec.model.name, source, "model.archive" if spec.model.archive else "model.name")
        return spec
    except ManagementError as exc:
        raise SpecError(source, "target.management", str(exc)) from None


def _fill_from(spec, found: dict):
    """The per-model keys the sweep leaves out, from the registered model's own settings."""
    m = spec.model
    given = m.model_fields_set
    update: dict = {}
    if "batch_size" not in given:
        update["batch_size"] = int(found["batchSize"])
    if "max_batch_delay_ms" not in given:
        update["max_batch_delay_ms"] = int(found["maxBatchDelay"])
    if "response_timeout_s" not in given and found.get("responseTimeout"):
        update["response_timeout_s"] = int(found["responseTimeout"])
    if m.min_workers is None and int(found.get("minWorkers") or 0) >= 1:
        update["min_workers"] = int(found["minWorkers"])
        if m.max_workers is None:
            update["max_workers"] = max(int(found.get("maxWorkers") or 0), update["min_workers"])
    return spec.model_copy(update={"model": m.model_copy(update=update)}) if update else spec


def check_archive(server: AttachedServer, url: str, base: str, source: str, key: str) -> dict:
    """Register `url` with no workers under a free name of the sweeper's own, read its
    description, unregister it: whether the target's store has the archive and whether
    the target allows registrations (enable_model_api). Returns the description."""
    taken = set(attached.model_names(server))
    n = 0
    while attached.own_name(base, n) in taken:
        n += 1
    name = attached.own_name(base, n)
    params = {"url": url, "model_name": name, "initial_workers": 0, "synchronous": "true"}
    r = _ask(source, "target.management", "POST", server.management_url + "/models", params=params,
             headers=server.headers("management"))
    if r.status_code == 405:
        raise SpecError(source, "target.management",
                        "the target refuses registrations (HTTP 405): start it with enable_model_api=true in its config.properties")
    if r.status_code == 404:
        raise SpecError(source, key, f"the target's model store has no {url} (TorchServe: {attached.message(r)})")
    if r.status_code >= 300:
        raise SpecError(source, key, f"registering {url} (no workers, as a check) answered HTTP {r.status_code}: {attached.message(r)}")
    try:
        found = attached.describe(server, name) or {}
    finally:
        r = _ask(source, "target.management", "DELETE", f"{server.management_url}/models/{name}",
                 headers=server.headers("management"))
    if r.status_code >= 300:
        raise SpecError(source, "target.management", f"unregistering the check registration {name} answered HTTP {r.status_code}: {attached.message(r)}")
    return attached.compact(found) if found else {}


def _check_copies(server: AttachedServer, spec, source: str, trials) -> None:
    """A trial with batching other than the registered model's own runs on a copy: the
    target must allow registrations, and take the model's archive again."""
    name = spec.model.registered
    found = attached.describe(server, name)
    if found is None:
        return  # _check_model said so already
    own = registered_batching(found)
    if all(same_batching(batching_of(t.model), own) for t in trials):
        return
    try:
        check_archive(server, str(found["modelUrl"]), name, source, "model.registered")
    except SpecError as exc:
        raise SpecError(exc.source, exc.key, f"{exc.rule} (trials with another batch size, delay or timeout than "
                                             f"{name}'s own run on a copy the sweeper registers)") from None


# --- the run's first and last steps ------------------------------------------------------


@dataclass
class Visit:
    """A run on a target: what it found there, and how to leave it so."""

    run: RunDir
    spec: object  # SweepSpec
    server: AttachedServer
    before: dict
    problem: str = ""

    @classmethod
    def begin(cls, run: RunDir, spec) -> tuple["Visit", list[str]]:
        """Before the first trial: the snapshot (target_before.json), or, resuming a run
        that has one, the clean-up after its interruption; machine.json's `target`.
        Returns the visit and the lines to show."""
        server = server_for(spec)
        lines: list[str] = []
        before = run.target_before()
        if not run.target_before_json.exists():
            before = attached.snapshot(server)
            run.write_target_before(before)
        else:
            done = restore(server, before, spec.model.registered)
            if done:
                lines.append(f"target: undid what the interrupted run left ({'; '.join(done)})")
        info = describe_target(server, spec, before)
        run.record_target(info, at=datetime.now().isoformat(timespec="seconds"))
        where = (f"its processes are sampled (frontend pid {server.root_pid})" if server.root_pid
                 else f"the proc_* columns stay empty: {server.processes_note}")
        lines.append(f"target {server.inference_url}: TorchServe {info.get('torchserve') or '(version not reported)'}, "
                     f"{len(before.get('models', {}))} model(s) registered; {where}")
        if info.get("metrics_note"):
            lines.append(f"note: {info['metrics_note']}")
        return cls(run, spec, server, before), lines

    def finish(self) -> tuple[bool, str]:
        """After the last trial (however the loop ended): restore the target, write
        target_after.json. Returns (left as found, one line)."""
        try:
            done = restore(self.server, self.before, self.spec.model.registered)
            after = attached.snapshot(self.server)
        except SweeperError as exc:
            self.problem = f"could not restore the target ({exc}); when it answers again, `sweeper run --resume {self.run.path}` restores it"
            self.run.write_target_after({"restored": False, "error": str(exc)})
            return False, self.problem
        differs = differences(self.before, after)
        self.run.write_target_after({**after, "restored": True, "undone": done, "differences": differs})
        undone = f" ({'; '.join(done)})" if done else ""  # the executor's close() undid the rest already
        if differs:
            self.problem = (f"target restored{undone}, but it differs from {self.run.target_before_json.name}: "
                            f"{'; '.join(differs)}")
            return False, self.problem
        return True, f"target left as found{undone}: {self.run.target_after_json}"


def differences(before: dict, after: dict) -> list[str]:
    """What differs between two snapshots, one phrase each."""
    was, now = before.get("models", {}), after.get("models", {})
    out = [f"{name} is gone" for name in sorted(set(was) - set(now))]
    out += [f"{name} is new" for name in sorted(set(now) - set(was))]
    for name in sorted(set(was) & set(now)):
        if was[name] != now[name]:
            out.append(f"{name} was {was[name]}, now {now[name]}")
    return out


def describe_target(server: AttachedServer, spec, before: dict) -> dict:
    """The `target` entry of machine.json: the addresses, what the target says of itself (its API
    description's version), the model the sweep measures as the target describes it, and
    whether its processes are sampled."""
    api = attached.api_description(server)
    registered = spec.model.registered
    if registered is not None:
        model = default_version(before, registered) or {}
    else:
        url = (Path(spec.model.archive).name if spec.model.archive else f"{spec.model.name}.mar")
        try:
            model = check_archive(server, url, spec.model.name, "target", "model")
        except SpecError:
            model = {}
    info: dict = {
        "inference": server.inference_url,
        "management": server.management_url,
        "metrics": server.metrics_url,
        "torchserve": api.get("version", ""),
        "api_title": api.get("title", ""),
        "note": "the fingerprint in this file is the machine that sent the load; the server is the target",
        "model": model,
        "processes_sampled": bool(server.root_pid),
        "processes_note": server.processes_note,
    }
    try:
        text = httpx.get(server.metrics_url + "/metrics", timeout=10.0).text
    except httpx.HTTPError:
        text = ""
    if "ts_inference" not in text:
        info["metrics_note"] = ("the target's /metrics has no ts_inference series (metrics_mode=prometheus "
                                "in its config.properties?): the server_* latency columns will be empty")
    return info
