"""The TorchServe process: start, wait until ready, keep tokens fresh, stop, logs.

`TorchServe` is a context manager. Each instance gets its own working directory, TMPDIR
(TorchServe's pid file lives there), log directory and free loopback ports, and runs
`torchserve --foreground` as the leader of a new process session. Stopping signals the
whole process group, so the JVM and every backend worker go, even after the wrapper or
the JVM died; then it waits until the ports are free again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import astuple, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import httpx
import psutil

from . import reaper
from ..errors import EnvironmentProblem, ServerError, ServerNotReady
from .config import Ports

# A key must outlive the expected run by this much: a stability rule may extend a window,
# a capacity step may drain a backlog, and the scrape and the replay of a failed answer
# after the window still send it. Five minutes covers each of them many times over.
TOKEN_MARGIN_S = 300.0

LOG_FILES = ("stdout.log", "ts_log.log", "model_log.log")
# TorchServe's default logging, except that rolled-over logs are not gzip-compressed
# (the compression is a CPU burst inside the JVM in the middle of some trial): see the
# file's header. Not used when the rendered config's vmargs name a log4j configuration.
LOG4J_CONFIG = Path(__file__).resolve().parents[2] / "templates" / "log4j2.xml"
PORT_FREE_TIMEOUT_S = 10.0


def check_java() -> str:
    """The `java -version` line; EnvironmentProblem if Java 11+ is missing."""
    java = shutil.which("java")
    install = "install a JDK 11+ (Debian: apt-get install openjdk-17-jre-headless)"
    if java is None:
        raise EnvironmentProblem(f"java not found on PATH: TorchServe needs Java 11 or newer; {install}")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentProblem(f"cannot run {java}: {exc}; {install}") from None
    line = (out.stderr or out.stdout).splitlines()[0] if (out.stderr or out.stdout) else ""
    try:
        version = line.split('"')[1]
        major = int(version.split(".")[0] if not version.startswith("1.") else version.split(".")[1])
    except (IndexError, ValueError):
        raise EnvironmentProblem(f"cannot read the Java version from {line!r}; {install}") from None
    if major < 11:
        raise EnvironmentProblem(f"Java {version} is too old: TorchServe needs Java 11 or newer; {install}")
    return line


def names_log_config(config_text: str) -> bool:
    """Whether config.properties' vmargs choose a log4j configuration of their own."""
    return any(
        line.strip().startswith("vmargs") and "-Dlog4j.configurationFile" in line for line in config_text.splitlines()
    )


def torchserve_executable() -> str:
    candidate = Path(sys.executable).parent / "torchserve"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("torchserve")
    if found is None:
        raise EnvironmentProblem("torchserve not found: install the package (make sweep does it)")
    return found


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(host: str, n: int = 3) -> list[int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def fixed_ports(base_port: int) -> list[int]:
    """inference, management, metrics, gRPC inference, gRPC management."""
    return [base_port + i for i in range(5)]


def check_ports(host: str, base_port: int) -> None:
    """EnvironmentProblem naming the first of the fixed ports that is taken."""
    for port in fixed_ports(base_port):
        if not port_is_free(host, port):
            raise EnvironmentProblem(f"port {port} on {host} is already in use (settings.base_port={base_port} uses {base_port}-{base_port + 4})")


THREAD_VARIABLES = ("TS_", "MKL_", "OMP_")


def server_environment(inherited: "Mapping[str, str]", trial_env: "Mapping[str, str]") -> dict[str, str]:
    """The server's environment: ours without thread settings and TorchServe variables,
    plus the trial's. Thread counts come from the trial or from nothing: a Ray worker
    carries OMP_NUM_THREADS set by Ray (its num_cpus, or 1), and inheriting it would make
    a thread-contention study silently measure Ray's value."""
    env = {k: v for k, v in inherited.items() if not k.startswith(THREAD_VARIABLES)}
    env.update(trial_env)
    return env


@dataclass(frozen=True)
class Keys:
    inference: str
    management: str
    api: str
    expires_at: float  # earliest expiry of the inference/management keys, epoch seconds


def _parse_expiry(text: str) -> float:
    # e.g. "2030-01-01T05:45:57.659885323Z": Python wants at most microseconds
    head, _, frac = text.rstrip("Z").partition(".")
    stamp = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return stamp.timestamp() + (float("0." + frac) if frac else 0.0)


def read_keys(path: Path) -> Keys:
    data = json.loads(path.read_text())
    return Keys(
        inference=data["inference"]["key"],
        management=data["management"]["key"],
        api=data["API"]["key"],
        expires_at=min(
            _parse_expiry(data["inference"]["expiration time"]),
            _parse_expiry(data["management"]["expiration time"]),
        ),
    )


class TorchServe:
    """One TorchServe instance owned by this process. Use as a context manager."""

    def __init__(
        self,
        workdir: Path,
        render: "callable",  # (Ports) -> config.properties text
        env: dict[str, str],
        model_store: Path,
        host: str = "127.0.0.1",
        ready_timeout_s: float = 60.0,
        cpu_affinity: tuple[int, ...] | None = None,
        token_auth: bool = True,
        base_port: int | None = None,
    ):
        # absolute: torchserve runs with this as its cwd, so a relative path would dangle
        self.workdir = Path(workdir).resolve()
        self._render = render
        self.env = dict(env)
        self.model_store = Path(model_store).resolve()
        self.host = host
        self.ready_timeout_s = ready_timeout_s
        self.cpu_affinity = cpu_affinity
        self.token_auth = token_auth
        self.base_port = base_port
        self.ports: Ports | None = None
        self.keys: Keys | None = None
        self._proc: subprocess.Popen | None = None
        self._pgid: int | None = None
        self._seen_pids: set[int] = set()
        self._tmp: Path | None = None
        self._reaper: subprocess.Popen | None = None

    # --- addresses and credentials ---------------------------------------------------

    def _url(self, port: int) -> str:
        # A server listening on every address (0.0.0.0) is reached, and measured, on loopback.
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def inference_url(self) -> str:
        return self._url(self.ports.inference)

    @property
    def management_url(self) -> str:
        return self._url(self.ports.management)

    @property
    def metrics_url(self) -> str:
        return self._url(self.ports.metrics)

    def headers(self, api: str) -> dict[str, str]:
        """Authorization header for 'inference' or 'management' (empty without token auth)."""
        if not self.token_auth:
            return {}
        if self.keys is None:
            raise ServerError("token keys not read yet: the server is not ready")
        return {"Authorization": f"Bearer {getattr(self.keys, api)}"}

    @property
    def root_pid(self) -> int:
        """The `torchserve --foreground` wrapper: parent of the JVM, grandparent of workers."""
        if self._proc is None:
            raise ServerError("server not started")
        return self._proc.pid

    @property
    def process_group(self) -> int:
        """The process group (and session) the wrapper leads: the JVM and every worker in it."""
        if self._pgid is None:
            raise ServerError("server not started")
        return self._pgid

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    # --- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> "TorchServe":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self._proc is not None:
            raise ServerError("server already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        ports = fixed_ports(self.base_port) if self.base_port else free_ports(self.host, 5)
        self.ports = Ports(*ports)
        busy = [p for p in ports if not port_is_free(self.host, p)]
        if busy:
            raise ServerError(f"port {busy[0]} on {self.host} is already in use")
        config = self.workdir / "config.properties"
        text = self._render(self.ports)
        config.write_text(text)
        env = server_environment(os.environ, self.env)
        # A private temp dir: TorchServe's pid file goes to TMPDIR, and the wrapper passes
        # TEMP to the JVM as java.io.tmpdir, where the workers' unix sockets live
        # (/tmp/.ts.sock.9000 otherwise, shared by every instance). Short, because a unix
        # socket path is limited to 108 bytes.
        self._tmp = Path(tempfile.mkdtemp(prefix="sweeper-ts-"))
        env.update(
            TMPDIR=str(self._tmp),
            TEMP=str(self._tmp),
            LOG_LOCATION=str(self.log_dir),
            METRICS_LOCATION=str(self.log_dir),
        )
        cmd = [
            torchserve_executable(),
            "--foreground",
            "--ncs",
            "--ts-config",
            str(config),
            "--model-store",
            str(self.model_store),
        ]
        if not names_log_config(text) and LOG4J_CONFIG.is_file():
            cmd += ["--log-config", str(LOG4J_CONFIG)]
        affinity = self.cpu_affinity
        stdout = open(self.log_dir / "stdout.log", "ab")
        try:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, affinity)) if affinity else None,
            )
        finally:
            stdout.close()
        self._pgid = self._proc.pid  # session leader: pgid == pid
        self._reaper = reaper.start(self._pgid, str(self._tmp))  # stops the group if this process is SIGKILLed
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        key_file = self.workdir / "key_file.json"
        last = "no answer"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise ServerError(
                        f"torchserve exited with code {self._proc.returncode} before it was ready",
                        self.log_tail(),
                    )
                if self.token_auth:
                    if not key_file.exists():
                        time.sleep(0.1)
                        continue
                    try:
                        self.keys = read_keys(key_file)
                    except (ValueError, KeyError):
                        time.sleep(0.1)  # being written
                        continue
                try:
                    r = client.get(self.inference_url + "/ping", headers=self.headers("inference"))
                    if r.status_code == 200 and r.json().get("status") == "Healthy":
                        self._snapshot_pids()
                        return
                    last = f"HTTP {r.status_code} {r.text.strip()[:80]}"
                except (httpx.HTTPError, ValueError) as exc:
                    last = type(exc).__name__
                time.sleep(0.1)
        raise ServerNotReady(
            f"torchserve not ready within {self.ready_timeout_s:g} s (last /ping: {last})", self.log_tail()
        )

    def refresh_tokens(self, min_valid_s: float) -> None:
        """Regenerate the keys unless they stay valid for `min_valid_s` (the expected length
        of what comes next) plus TOKEN_MARGIN_S (TorchServe's keys expire after 60 min)."""
        if not self.token_auth or self.keys is None:
            return
        if self.keys.expires_at - time.time() > min_valid_s + TOKEN_MARGIN_S:
            return
        with httpx.Client(timeout=10.0) as client:
            for kind in ("management", "inference"):
                try:
                    r = client.put(
                        f"{self.management_url}/token",
                        params={"type": kind},
                        headers={"Authorization": f"Bearer {self.keys.api}"},
                    )
                except httpx.HTTPError as exc:
                    raise ServerError(f"token refresh for {kind} failed: {type(exc).__name__}: {exc}") from None
                if r.status_code != 200:
                    raise ServerError(f"token refresh for {kind} failed: HTTP {r.status_code}")
        self.keys = read_keys(self.workdir / "key_file.json")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self.frontend_pid() is not None

    def _snapshot_pids(self) -> None:
        for p in self.processes():
            self._seen_pids.add(p.pid)

    def processes(self) -> list[psutil.Process]:
        """Every live process of this server's session: wrapper, JVM, backend workers."""
        if self._pgid is None:
            return []
        out = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getsid(p.pid) == self._pgid:
                    out.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return out

    def frontend_pid(self) -> int | None:
        for p in self.processes():
            try:
                if "org.pytorch.serve.ModelServer" in " ".join(p.cmdline()):
                    return p.pid
            except psutil.Error:
                continue
        return None

    def stop(self) -> None:
        """Stop the JVM and every worker; idempotent; safe after a crash of the server."""
        if self._proc is None:
            self._remove_tmp()  # a start that failed before the process began
            return
        procs = self.processes()
        self._seen_pids.update(p.pid for p in procs)
        # Killed, not asked to stop: TorchServe's orderly shutdown (SIGTERM) took 3.8-4.8 s
        # on a 2-core VM, the JVM silent while netty's event loops waited out their quiet
        # periods, and wrote nothing the sweeper reads (its logs are written line by line as
        # it runs): a tenth of a thread-contention sweep
        # (docs/measurements.md#m66-thread-contention-with-the-ceilings-processes-reused-stopping-a-server).
        for p in procs:
            try:
                p.kill()  # also a worker that left the group
            except psutil.Error:
                pass
        try:
            os.killpg(self._pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        psutil.wait_procs(procs + self.processes(), timeout=5.0)
        try:
            self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self.ports is not None:
            deadline = time.monotonic() + PORT_FREE_TIMEOUT_S
            ports = astuple(self.ports)
            while time.monotonic() < deadline and not all(port_is_free(self.host, p) for p in ports):
                time.sleep(0.05)
        self._proc = None
        if self._reaper is not None:
            self._reaper.kill()
            self._reaper.wait()
            self._reaper = None
        self._remove_tmp()
        # for tests and post-mortems: every pid this server had, all stopped by now
        (self.workdir / "pids.json").write_text(json.dumps(sorted(self._seen_pids)))

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @property
    def seen_pids(self) -> frozenset[int]:
        """Every pid this server was seen with (for tests that check nothing is left)."""
        return frozenset(self._seen_pids)

    def note_pids(self) -> None:
        self._snapshot_pids()

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for name in LOG_FILES:
            path = self.log_dir / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {name}\n" + "\n".join(text))
        return redact("\n".join(parts), self.keys)


def redact(text: str, keys: Keys | None) -> str:
    """Remove token keys from text the sweeper writes (logs can echo them)."""
    if keys is None:
        return text
    for k in (keys.inference, keys.management, keys.api):
        if k:
            text = text.replace(k, "<redacted>")
    return text
