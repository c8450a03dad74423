"""One engine process: its event loop, the closed and open loops, and the records they write.

Everything here runs inside a child process started by sweeper.load.launch. The hot path
is callback-driven: a completed response records one tuple and, in the closed loop, writes
the next request on the same connection from inside `data_received`; no task, future or
timer is created per request. Timeouts are enforced by one watchdog that scans the
connections a few times a second instead of arming a timer per request.

Times are time.perf_counter() values while running and seconds since t0 in the records.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import os
import resource
import signal
import socket
import time
from dataclasses import dataclass

import numpy as np

from .http import Connection, prepare
from .types import RECORD_DTYPE, STATUS_CONNECTION_ERROR, STATUS_REFUSED, STATUS_TIMEOUT, Target

# After a failed connection attempt a closed-loop slot waits this long before the next one,
# so that a dead server yields a few hundred error rows a second rather than a hot loop
# writing millions of them.
RECONNECT_BACKOFF_S = 0.01
# Open loop: connections opened before t0, so that the first requests do not pay for
# connection setup; more are opened on demand while the server falls behind.
OPEN_LOOP_PREOPEN = 16
# Open loop: the shortest timer the scheduler arms (see OpenLoop.tick).
TIMER_MIN_WAIT_S = 0.001
# The watchdog scans for timed-out requests this often (at most; shorter for short timeouts).
WATCHDOG_INTERVAL_S = 0.1

_NAN = math.nan


@dataclass(frozen=True)
class EnginePart:
    """What one engine process does: its share of the profile."""

    mode: str  # "closed" | "open"
    index: int  # this process's number, 0..stride-1
    stride: int  # number of engine processes
    timeout_s: float
    concurrency: int = 0  # closed: requests in flight; open: cap on outstanding requests
    requests: int | None = None  # closed: stop after this many; open: exactly this many
    duration_s: float | None = None  # closed: stop issuing after this long
    rate_rps: float = 0.0  # open: the total rate of all processes
    cpu_affinity: tuple[int, ...] | None = None
    window_s: float | None = None  # stability windows: report each complete one to the parent


class ParentGone(Exception):
    """The process that started this engine exited; nobody will read the records."""


class _Engine:
    """Connections and records shared by both loops."""

    def __init__(self, loop: asyncio.AbstractEventLoop, target: Target, part: EnginePart):
        self.loop = loop
        self.part = part
        self.endpoint = prepare(target)
        # Payloads in rotation, each process starting at its own: next() hands out the
        # prebuilt bytes (itertools.cycle allocates nothing per request).
        requests = self.endpoint.requests
        k = part.index % len(requests)
        self.next_request = itertools.cycle(requests[k:] + requests[:k]).__next__
        self.clock = time.perf_counter
        self.records: list[tuple] = []
        self.record = self.records.append
        self.devices: set[bytes] = set()  # X-Device values seen (sweeper.load.http)
        self.conns: set[Connection] = set()
        self.addr: tuple | None = None
        self.done: asyncio.Future | None = None
        # The sweeper that started this process (the process that ran run_load): when it
        # is gone (SIGKILL leaves no `finally` to stop us), stop sending instead of loading
        # the server until the end. Its pid is watched, not our parent's: a process forked
        # by the fork server has the server as its parent, and keeps it alive.
        self.sweeper_pid: int | None = None
        # Stability windows (part.window_s): the pipe to the parent, which decides when
        # the measurement has lasted long enough and then sends "stop".
        self.pipe = None
        self.windows: _WindowReport | None = None
        self.connecting: list[float] = []  # scheduled times of requests still connecting

    async def resolve(self) -> None:
        # Resolve once: a name lookup per reconnect would go through a thread pool.
        host, port = self.endpoint.host, self.endpoint.port
        try:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConnectionError(f"cannot resolve {host}: {exc}") from None
        self.addr = infos[0][4][:2]

    async def connect(self) -> Connection:
        conn = Connection(self, self.endpoint.no_body, self.clock)
        await asyncio.wait_for(
            self.loop.create_connection(lambda: conn, self.addr[0], self.addr[1]),
            self.part.timeout_s,
        )
        self.conns.add(conn)
        return conn

    async def preconnect(self, count: int) -> list[Connection]:
        try:
            return list(await asyncio.gather(*(self.connect() for _ in range(count))))
        except (OSError, asyncio.TimeoutError) as exc:
            host, port = self.endpoint.host, self.endpoint.port
            raise ConnectionError(f"cannot connect to {host}:{port}: {exc or 'timed out'}") from None

    def connect_and_send(self, sched: float, sent: float) -> None:
        self.loop.create_task(self._connect_and_send(sched, sent))

    async def _connect_and_send(self, sched: float, sent: float) -> None:
        self.connecting.append(sched)
        try:
            conn = await self.connect()
        except (OSError, asyncio.TimeoutError):
            self.connecting.remove(sched)
            end = self.clock()
            self.record((sched, sent, end, STATUS_CONNECTION_ERROR, -1, _NAN))
            self.on_connect_failure(end)
            return
        self.connecting.remove(sched)
        conn.send(self.next_request(), sched, sent)

    async def run(self, t0: float) -> None:
        self.done = self.loop.create_future()
        # The loop's timers may fire a millisecond early; spin the last bit so that no
        # process starts before the common t0 (a send before its schedule would be a lie).
        await asyncio.sleep(max(0.0, t0 - self.clock() - 0.002))
        while self.clock() < t0:
            pass
        if self.part.window_s and self.pipe is not None:
            self.windows = _WindowReport(self.part.window_s, t0)
        watchdog = self.loop.create_task(self._watchdog())
        try:
            self.start(t0)
            await self.done
        finally:
            watchdog.cancel()
            for conn in self.conns:
                conn.close()

    async def _watchdog(self) -> None:
        timeout = self.part.timeout_s
        interval = min(WATCHDOG_INTERVAL_S, timeout / 10)
        while True:
            await asyncio.sleep(interval)
            if self.sweeper_pid is not None and not _alive(self.sweeper_pid):
                if not self.done.done():
                    self.done.set_exception(ParentGone(f"the sweeper (pid {self.sweeper_pid}) is gone"))
                return
            now = self.clock()
            for conn in list(self.conns):
                if conn.busy:
                    if now - conn.sent > timeout:
                        conn.fail(STATUS_TIMEOUT)
                elif not conn.open:
                    self.conns.discard(conn)
            if self.windows is not None:
                self._windows_tick(now)

    def _windows_tick(self, now: float) -> None:
        """Report the windows completed since the last tick; obey a "stop" from the parent."""
        # A window is complete when no request scheduled in it is still outstanding.
        pending = [c.sched for c in self.conns if c.busy] + self.connecting
        horizon = min(pending, default=now)
        done = self.windows.collect(self.records, min(now, horizon))
        if done:
            self.pipe.send(("windows", done))
        if self.pipe.poll():
            command, _ = self.pipe.recv()
            if command == "stop":
                self.windows = None  # nothing more to report: the parent has decided
                self.stop_sending()

    def records_array(self, t0: float) -> np.ndarray:
        out = np.array(self.records, dtype=RECORD_DTYPE) if self.records else np.zeros(0, RECORD_DTYPE)
        for field in ("scheduled_s", "sent_s", "end_s"):
            out[field] -= t0
        return out

    def on_idle_lost(self, conn: Connection) -> None:
        # The server closed an idle keep-alive connection; the next send on it reconnects.
        self.conns.discard(conn)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class ClosedLoop(_Engine):
    """`concurrency` slots; each issues its next request the moment its previous one ends."""

    async def prepare(self) -> None:
        await self.resolve()
        self.slots = await self.preconnect(self.part.concurrency)
        self.active = len(self.slots)
        self.issued = 0
        self.limit = self.part.requests if self.part.requests is not None else math.inf

    def start(self, t0: float) -> None:
        self.stop_at = t0 + self.part.duration_s if self.part.duration_s is not None else math.inf
        if not self.slots:
            self._finish()
        for conn in self.slots:
            self.issue(conn, t0)

    def issue(self, conn: Connection | None, sched: float) -> None:
        if self.issued >= self.limit or sched >= self.stop_at:
            self.active -= 1
            if self.active == 0:
                self._finish()
            return
        self.issued += 1
        if conn is not None and conn.open:
            conn.send(self.next_request(), sched, self.clock())
        else:
            self.connect_and_send(sched, self.clock())

    def on_response(self, conn, status, batch_size, handler_ms, end) -> None:
        self.record((conn.sched, conn.sent, end, status, batch_size, handler_ms))
        self.issue(conn, end)

    def stop_sending(self) -> None:
        # The slots end as their requests come back (issue() sees the past stop time).
        self.stop_at = min(self.stop_at, self.clock())

    def on_failure(self, conn, end, status) -> None:
        self.record((conn.sched, conn.sent, end, status, -1, _NAN))
        self.issue(None, end)

    def on_connect_failure(self, end) -> None:
        self.loop.call_later(RECONNECT_BACKOFF_S, self._retry)

    def _retry(self) -> None:
        self.issue(None, self.clock())


class OpenLoop(_Engine):
    """Request i of this process is due at t0 + (index + i * stride) / rate, whatever is
    outstanding: the processes' schedules interleave into one at the total rate. A request
    due while `concurrency` are outstanding is recorded as refused (STATUS_REFUSED), not
    delayed."""

    async def prepare(self) -> None:
        await self.resolve()
        part = self.part
        self.count = part.requests
        self.interval = part.stride / part.rate_rps
        self.offset = part.index / part.rate_rps
        self.cap = part.concurrency
        self.idle = await self.preconnect(min(self.cap, OPEN_LOOP_PREOPEN, self.count))
        self.outstanding = 0
        self.next_i = 0
        self.sending = True

    def start(self, t0: float) -> None:
        self.base = t0 + self.offset
        self.tick()

    def tick(self) -> None:
        # Send everything that is due (catching up after a late wake-up), then sleep until
        # the next one. Timers fire with about a millisecond of granularity: send lag shows it.
        now = self.clock()
        i, count, base, interval = self.next_i, self.count, self.base, self.interval
        while i < count:
            sched = base + i * interval
            if sched > now:
                break
            self.dispatch(sched)
            i += 1
        self.next_i = i
        if i < count:
            # uvloop timers fire up to 1 ms early (its clock is in whole milliseconds), and
            # a delay under 0.5 ms rounds to "now": re-arming for a sub-millisecond
            # remainder would spin the loop. Waiting at least 1 ms costs up to 1 ms of send
            # lag instead, which the records show.
            wait = base + i * interval - self.clock()
            self.loop.call_later(max(wait, TIMER_MIN_WAIT_S), self.tick)
        else:
            self.sending = False
            if self.outstanding == 0:
                self._finish()

    def stop_sending(self) -> None:
        # The next tick sees the schedule exhausted and finishes once nothing is outstanding.
        self.count = min(self.count, self.next_i)

    def dispatch(self, sched: float) -> None:
        sent = self.clock()
        if self.outstanding >= self.cap:
            self.record((sched, sent, sent, STATUS_REFUSED, -1, _NAN))
            return
        self.outstanding += 1
        idle = self.idle
        while idle:
            conn = idle.pop()  # the most recently used connection: warm, surely still open
            if conn.open:
                conn.send(self.next_request(), sched, sent)
                return
        self.connect_and_send(sched, sent)

    def on_response(self, conn, status, batch_size, handler_ms, end) -> None:
        self.record((conn.sched, conn.sent, end, status, batch_size, handler_ms))
        if conn.open:
            self.idle.append(conn)
        self._settle()

    def on_failure(self, conn, end, status) -> None:
        self.record((conn.sched, conn.sent, end, status, -1, _NAN))
        self._settle()

    def on_connect_failure(self, end) -> None:
        self._settle()

    def _settle(self) -> None:
        self.outstanding -= 1
        if not self.sending and self.outstanding == 0:
            self._finish()


def _schedstat() -> tuple[float, int] | None:
    """(seconds this thread was runnable but waiting for a CPU, times it was scheduled)
    from /proc/self/schedstat (Linux); None where that cannot be read. The event loop is
    this process's main thread, whose figures the file holds."""
    try:
        with open("/proc/self/schedstat") as f:
            _, wait_ns, slices = f.read().split()[:3]
        return int(wait_ns) / 1e9, int(slices)
    except (OSError, ValueError):
        return None


class _WindowReport:
    """Per-window request counts and served latencies of this process, for the parent's
    stability rule (sweeper.load.windows). Records are binned by scheduled time a few
    times a second, in bulk, off the hot path."""

    def __init__(self, window_s: float, t0: float):
        self.window_s = window_s
        self.t0 = t0
        self.seen = 0  # records binned so far
        self.next = 0  # first window not reported yet
        self.counts: dict[int, int] = {}
        self.latencies: dict[int, list[np.ndarray]] = {}

    def collect(self, records: list, horizon: float) -> list[tuple[int, int, np.ndarray]]:
        new = records[self.seen :]
        self.seen += len(new)
        if new:
            arr = np.array(new, dtype=RECORD_DTYPE)
            k = np.floor((arr["scheduled_s"] - self.t0) / self.window_s + 1e-9).astype(int)
            ok = (arr["status"] >= 200) & (arr["status"] < 300)
            lat = (arr["end_s"] - arr["scheduled_s"]).astype("f4")
            for w in np.unique(k):
                mine = k == w
                self.counts[int(w)] = self.counts.get(int(w), 0) + int(mine.sum())
                self.latencies.setdefault(int(w), []).append(lat[mine & ok])
        complete = int(np.floor((horizon - self.t0) / self.window_s + 1e-9))
        out = []
        while self.next < complete:
            w = self.next
            parts = self.latencies.pop(w, [])
            lat = np.concatenate(parts) if parts else np.zeros(0, "f4")
            out.append((w, self.counts.pop(w, 0), lat))
            self.next += 1
        return out


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # the engine still works on the default loop, only slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc: whether the pid exists at all
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def child_main(
    pipe, target: Target, part: EnginePart, warmup: EnginePart | None = None, sweeper_pid: int | None = None,
    make_engine=None,
) -> None:
    """Entry point of an engine process. Talks to the parent over `pipe`:
    -> ("ready", warmup_requests) | ("error", msg);  <- ("go", t0_wall) | ("stop", None);
    with part.window_s, while running: -> ("windows", [(index, requests, latencies_s)]),
    <- ("stop", None) when the parent's stability rule is met;
    -> ("done", records, cpu_s, (run_delay_s, timeslices), devices) | ("error", msg).

    A warm-up (a closed loop whose records are dropped) runs before "ready", in this same
    process, so a trial pays for one engine start, not two.

    `make_engine(loop, target, part)` builds the engine instead of the plain closed or open
    loop (sweeper.load.alternating: two targets in alternating blocks)."""
    # The parent owns Ctrl-C: it terminates the engines; a KeyboardInterrupt traceback
    # from every child would only bury the parent's message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sweeper = sweeper_pid or os.getppid()  # under 'spawn' the parent is the sweeper
    loop = None
    try:
        if part.cpu_affinity:
            os.sched_setaffinity(0, part.cpu_affinity)
        _raise_fd_limit(part.concurrency + 64)
        loop = _new_loop()
        warmed = 0
        if warmup is not None:
            warm = ClosedLoop(loop, target, warmup)
            warm.sweeper_pid = sweeper
            loop.run_until_complete(warm.prepare())
            loop.run_until_complete(warm.run(time.perf_counter()))
            warmed = len(warm.records)
        make = make_engine or (ClosedLoop if part.mode == "closed" else OpenLoop)
        engine = make(loop, target, part)
        engine.sweeper_pid = sweeper
        engine.pipe = pipe
        loop.run_until_complete(engine.prepare())
        pipe.send(("ready", warmed))
        command, t0_wall = pipe.recv()
        if command != "go":
            return
        # perf_counter has no common origin across processes by contract; the wall clock
        # does. Convert the shared wall-clock t0 once, then use the monotonic clock.
        t0 = time.perf_counter() + (t0_wall - time.time())
        # No cyclic GC while running: the hot path makes no reference cycles, and a full
        # collection walks every record kept so far (tens of milliseconds per million
        # records: docs/measurements.md#code-engine-gc), which would show up as send lag
        # and latency that belong to no server.
        gc.disable()
        cpu0, sched0 = time.process_time(), _schedstat()
        loop.run_until_complete(engine.run(t0))
        cpu_s, sched1 = time.process_time() - cpu0, _schedstat()
        gc.enable()
        waited = (sched1[0] - sched0[0], sched1[1] - sched0[1]) if sched0 and sched1 else (_NAN, 0)
        devices = sorted(d.decode("latin-1") for d in engine.devices)
        pipe.send(("done", engine.records_array(t0), cpu_s, waited, devices))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # reported to the parent, which raises LoadError
        try:
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
    finally:
        if loop is not None:
            loop.close()
        pipe.close()
