"""Two targets in one engine run, served in alternating blocks (`sweeper duel`).

`run_alternating(targets, profile, block_s, order)` runs one load profile against several
targets in turn: block k (seconds [k * block_s, (k + 1) * block_s) after t0) sends to
`targets[order[k]]`. Every engine process holds warm keep-alive connections to every
target from before t0, so a switch costs no connect and no new process:

- closed loop: `concurrency` slots; a slot whose request comes back sends its next one to
  the target of the block in which it became free (its scheduled time), on an idle
  connection to that target. So at a switch the old target's requests in flight finish
  while the new target's begin, and the requests in flight stay `concurrency`;
- open loop: request i, due at its fixed time, goes to the target of the block it is due in.

A request's target is therefore a function of its scheduled time: the records carry no
target column, and `block_figures` cuts them into blocks by the same comparison the
engines make (`scheduled_s >= (k + 1) * block_s`, in the same floating-point arithmetic).

The hot path stays as cheap as the plain loops': per request one subtraction and one
comparison to know the block, and in the closed loop one dictionary lookup for the
connection's target (`docs/duel.md` has the engine's cost measured against the fake
server).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from sweeper.errors import LoadError

from . import windows as win
from .engine import ClosedLoop, OpenLoop, OPEN_LOOP_PREOPEN, _NAN, _raise_fd_limit
from .http import Connection, prepare
from .launch import run_load
from .types import STATUS_CONNECTION_ERROR, STATUS_REFUSED, LoadProfile, LoadRun, Target


@dataclass(frozen=True)
class Alternation:
    """The engine factory that run_load hands to its engine processes: which target each
    block of `block_s` seconds serves."""

    block_s: float
    order: tuple[int, ...]

    def __call__(self, loop, targets, part):
        _raise_fd_limit(len(targets) * max(part.concurrency, OPEN_LOOP_PREOPEN) + 64)
        cls = AlternatingClosedLoop if part.mode == "closed" else AlternatingOpenLoop
        return cls(loop, targets, part, self)


class _Blocks:
    """What both alternating loops share: a connection pool and request rotation per
    target, and the block clock."""

    def _setup(self, targets: Sequence[Target], alternation: Alternation) -> None:
        self.endpoints = [prepare(t) for t in targets]
        self.requests = []
        for endpoint in self.endpoints:
            requests = endpoint.requests
            k = self.part.index % len(requests)
            # each payload's prebuilt bytes in turn, each process starting at its own
            self.requests.append(itertools.cycle(requests[k:] + requests[:k]).__next__)
        self.addrs: list[tuple] = []
        self.target_of: dict[Connection, int] = {}
        self.block_s = alternation.block_s
        self.order = alternation.order
        self.end_rel = len(self.order) * self.block_s
        self.block = 0
        self.current = self.order[0]
        self.switch_rel = self.block_s
        self.t0 = 0.0

    async def _resolve_all(self) -> None:
        for endpoint in self.endpoints:
            try:
                infos = await self.loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise ConnectionError(f"cannot resolve {endpoint.host}: {exc}") from None
            self.addrs.append(infos[0][4][:2])

    async def connect_to(self, k: int) -> Connection:
        conn = Connection(self, self.endpoints[k].no_body, self.clock)
        addr = self.addrs[k]
        await asyncio.wait_for(self.loop.create_connection(lambda: conn, addr[0], addr[1]), self.part.timeout_s)
        self.conns.add(conn)
        self.target_of[conn] = k
        return conn

    async def _preconnect_all(self, count: int) -> list[list[Connection]]:
        pools = []
        for k, endpoint in enumerate(self.endpoints):
            try:
                pools.append(list(await asyncio.gather(*(self.connect_to(k) for _ in range(count)))))
            except (OSError, asyncio.TimeoutError) as exc:
                raise ConnectionError(f"cannot connect to {endpoint.host}:{endpoint.port}: {exc or 'timed out'}") from None
        return pools

    def _start_blocks(self, t0: float) -> None:
        self.t0 = t0
        self.block = 0
        self.current = self.order[0]
        self.switch_rel = self.block_s

    def _advance(self, rel: float) -> None:
        """Move the block clock to the block holding `rel` seconds since t0 (the last block
        past the end: the caller checks end_rel)."""
        b, last = self.block, len(self.order) - 1
        while b < last and rel >= (b + 1) * self.block_s:
            b += 1
        self.block = b
        self.current = self.order[b]
        self.switch_rel = (b + 1) * self.block_s if b < last else math.inf

    def connect_and_send_to(self, k: int, sched: float, sent: float) -> None:
        self.loop.create_task(self._connect_and_send_to(k, sched, sent))

    async def _connect_and_send_to(self, k: int, sched: float, sent: float) -> None:
        self.connecting.append(sched)
        try:
            conn = await self.connect_to(k)
        except (OSError, asyncio.TimeoutError):
            self.connecting.remove(sched)
            end = self.clock()
            self.record((sched, sent, end, STATUS_CONNECTION_ERROR, -1, _NAN))
            self.on_connect_failure(end)
            return
        self.connecting.remove(sched)
        conn.send(self.requests[k](), sched, sent)

    def on_idle_lost(self, conn: Connection) -> None:
        self.conns.discard(conn)
        self.target_of.pop(conn, None)


class AlternatingClosedLoop(_Blocks, ClosedLoop):
    """`concurrency` slots over every target's connections; each request goes to the
    target of the block in which its slot became free."""

    def __init__(self, loop, targets, part, alternation: Alternation):
        ClosedLoop.__init__(self, loop, targets[0], part)
        self._setup(targets, alternation)

    async def prepare(self) -> None:
        if self.part.requests is not None:
            raise ValueError("an alternating closed loop runs for its blocks, not for a request count")
        await self._resolve_all()
        self.idle = await self._preconnect_all(self.part.concurrency)
        self.active = self.part.concurrency
        self.issued = 0
        self.limit = math.inf

    def start(self, t0: float) -> None:
        self._start_blocks(t0)
        self.stop_at = t0 + self.end_rel
        if self.active == 0:
            self._finish()
        for _ in range(self.active):
            self.issue(None, t0)

    def issue(self, conn: Connection | None, sched: float) -> None:
        rel = sched - self.t0
        if rel >= self.switch_rel:
            self._advance(rel)
        if rel >= self.end_rel:
            self.active -= 1
            if self.active == 0:
                self._finish()
            return
        self.issued += 1
        k = self.current
        if conn is not None:
            if conn.open:
                if self.target_of[conn] == k:
                    conn.send(self.requests[k](), sched, self.clock())
                    return
                self.idle[self.target_of[conn]].append(conn)
            else:  # the server closed it after its answer
                self.target_of.pop(conn, None)
        idle = self.idle[k]
        while idle:
            other = idle.pop()
            if other.open:
                other.send(self.requests[k](), sched, self.clock())
                return
        self.connect_and_send_to(k, sched, self.clock())

    def stop_sending(self) -> None:
        self.end_rel = min(self.end_rel, self.clock() - self.t0)

    def on_failure(self, conn, end, status) -> None:
        self.target_of.pop(conn, None)
        ClosedLoop.on_failure(self, conn, end, status)


class AlternatingOpenLoop(_Blocks, OpenLoop):
    """The open loop's fixed schedule; each request goes to the target of the block it is
    due in."""

    def __init__(self, loop, targets, part, alternation: Alternation):
        OpenLoop.__init__(self, loop, targets[0], part)
        self._setup(targets, alternation)

    async def prepare(self) -> None:
        await self._resolve_all()
        part = self.part
        self.count = part.requests
        self.interval = part.stride / part.rate_rps
        self.offset = part.index / part.rate_rps
        self.cap = part.concurrency
        self.idles = await self._preconnect_all(min(self.cap, OPEN_LOOP_PREOPEN, self.count))
        self.outstanding = 0
        self.next_i = 0
        self.sending = True

    def start(self, t0: float) -> None:
        self._start_blocks(t0)
        OpenLoop.start(self, t0)

    def dispatch(self, sched: float) -> None:
        sent = self.clock()
        if self.outstanding >= self.cap:
            self.record((sched, sent, sent, STATUS_REFUSED, -1, _NAN))
            return
        self.outstanding += 1
        if sched - self.t0 >= self.switch_rel:
            self._advance(sched - self.t0)
        k = self.current
        idle = self.idles[k]
        while idle:
            conn = idle.pop()
            if conn.open:
                conn.send(self.requests[k](), sched, sent)
                return
        self.connect_and_send_to(k, sched, sent)

    def on_response(self, conn, status, batch_size, handler_ms, end) -> None:
        self.record((conn.sched, conn.sent, end, status, batch_size, handler_ms))
        if conn.open:
            self.idles[self.target_of[conn]].append(conn)
        else:
            self.target_of.pop(conn, None)
        self._settle()

    def on_failure(self, conn, end, status) -> None:
        self.target_of.pop(conn, None)
        OpenLoop.on_failure(self, conn, end, status)


def run_alternating(
    targets: Sequence[Target], profile: LoadProfile, block_s: float, order: Sequence[int], on_ready=None
) -> LoadRun:
    """`profile` against `targets` in blocks of `block_s` seconds, block k sending to
    targets[order[k]]; as long as the blocks (the profile's duration_s and requests are
    replaced). Blocking; every engine process is gone when it returns or raises (run_load).
    `on_ready`: as run_load's."""
    targets = tuple(targets)
    order = tuple(int(k) for k in order)
    if not targets:
        raise LoadError("alternating load: no targets")
    if not block_s > 0 or math.isinf(block_s):
        raise LoadError(f"alternating load: block_s must be > 0, got {block_s}")
    if not order:
        raise LoadError("alternating load: no blocks")
    bad = sorted({k for k in order if not 0 <= k < len(targets)})
    if bad:
        raise LoadError(f"alternating load: blocks name target(s) {bad}, there are {len(targets)}")
    profile = replace(profile, duration_s=len(order) * block_s, requests=None)
    return run_load(targets, profile, on_ready=on_ready, engine=Alternation(float(block_s), order))


def block_index(scheduled_s: np.ndarray, block_s: float, blocks: int) -> np.ndarray:
    """The block each request belongs to (by its scheduled time, as the engines decide;
    `blocks` for one scheduled past the last block)."""
    bounds = np.arange(1, blocks + 1) * float(block_s)
    return np.searchsorted(bounds, scheduled_s, side="right")


def block_figures(run: LoadRun, block_s: float, blocks: int, settle_s: float) -> list[win.Window]:
    """Each block's requests, served requests per second, mean and p99 latency, from the
    requests scheduled after its first `settle_s` seconds (the switch: the other target's
    requests still in flight, this one's queue filling). A request counts in the block it
    was scheduled in, whenever it ended."""
    rec = run.records
    sched = rec["scheduled_s"]
    k = block_index(sched, block_s, blocks)
    starts = np.arange(blocks) * float(block_s)
    within = k < blocks
    settled = np.zeros(len(rec), dtype=bool)
    settled[within] = sched[within] >= starts[k[within]] + settle_s
    served = (rec["status"] >= 200) & (rec["status"] < 300)
    latency = rec["end_s"] - sched
    span = block_s - settle_s
    out = []
    for b in range(blocks):
        mine = settled & (k == b)
        out.append(win.window_stats(b, int(mine.sum()), latency[mine & served], span))
    return out
