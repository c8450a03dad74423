"""A fake HTTP/1.1 server on a real loopback socket, for testing the load engine.

It runs an asyncio server in a background thread of the test process (the engine runs in
child processes, so the two do not share a GIL). Behaviour is set per instance:

    delay_s        every response waits this long after its request arrived
    delay_fn       instead of delay_s: a function of the seconds since the first request
                   giving the delay (a server that speeds up, or never settles)
    stall_at_s,    responses that would be due in [first request + stall_at_s,
    stall_s        first request + stall_at_s + stall_s) wait until the window ends
                   (relative to the first request, so child start-up time does not matter)
    fail_every,    every fail_every-th request (1-based arrival order) is answered with
    fail_status    fail_status instead of 200
    batch_size,    values of the X-Batch-Size / X-Handler-Ms response headers (None: omit)
    handler_ms
    chunked        answer with Transfer-Encoding: chunked (in two chunks) instead of
                   Content-Length
    close_every    every close_every-th response says Connection: close and the server
                   closes the connection after it
    body           the response body
    keep_alive_header  say "Connection: keep-alive" (ab's HTTP/1.0 keep-alive needs it;
                   TorchServe says it)
    service_s      one FIFO server with this service time per request (delay_s still a minimum):
                   a request is answered service_s after the previous one was, or after
                   it arrived if the server was idle, so the capacity is 1 / service_s
                   req/s and beyond it the queue (and latency) grows without bound

    route          a function (method, path with query, headers dict with lowercase names,
                   body) -> (status, body) or None, called for every request: a server that
                   answers by path (a fake TorchServe API); None: the behaviour above

Counters (read after the load): requests, connections, lengths (requests by body length).

    with FakeServer(delay_s=0.002) as server:
        run_load(Target(server.url("/predict"), b"x"), profile)
"""

from __future__ import annotations

import asyncio
import socket
import threading


class _ServerProtocol(asyncio.Protocol):
    def __init__(self, server: "FakeServer"):
        self.server = server
        self.buf = b""
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections += 1
        self.server._transports.add(transport)

    def connection_lost(self, exc) -> None:
        self.server._transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while True:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                break
            head = buf[:i].lower()
            length = 0
            j = head.find(b"\r\ncontent-length:")
            if j >= 0:
                k = head.find(b"\r\n", j + 2)
                length = int(head[j + 17 : k if k >= 0 else None])
            if len(buf) < i + 4 + length:
                break
            request = buf[: i + 4 + length]
            buf = buf[i + 4 + length :]
            self.server.lengths[length] = self.server.lengths.get(length, 0) + 1
            if self.server.route is not None and self.server._on_route(self, request, i):
                continue
            self.server._on_request(self)
        self.buf = buf

    def respond(self, response: bytes, close: bool) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(response)
        if close:
            self.transport.close()


class FakeServer:
    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        delay_fn=None,
        stall_at_s: float | None = None,
        stall_s: float = 0.0,
        fail_every: int = 0,
        fail_status: int = 503,
        batch_size: int | None = None,
        handler_ms: float | None = None,
        chunked: bool = False,
        close_every: int = 0,
        body: bytes = b'{"status": "Healthy"}\n',
        keep_alive_header: bool = False,
        service_s: float = 0.0,
        route=None,
    ):
        self.route = route
        self.service_s = service_s
        self._free_at = 0.0  # service_s: when the one server finishes its queue
        self.delay_s = delay_s
        self.delay_fn = delay_fn
        self.stall_at_s = stall_at_s
        self.stall_s = stall_s
        self.fail_every = fail_every
        self.fail_status = fail_status
        self.batch_size = batch_size
        self.handler_ms = handler_ms
        self.chunked = chunked
        self.close_every = close_every
        self.body = body
        self.keep_alive_header = keep_alive_header
        self.requests = 0
        self.lengths: dict[int, int] = {}  # requests by body length (Content-Length)
        self.connections = 0
        self.port = 0
        self._first_at: float | None = None
        self._transports: set = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._responses = {
            status: [self._build(status, close) for close in (False, True)]
            for status in {200, fail_status}
        }

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _build(self, status: int, close: bool) -> bytes:
        reason = {200: "OK", 503: "Service Unavailable"}.get(status, "Status")
        lines = [f"HTTP/1.1 {status} {reason}", "content-type: application/json"]
        if self.batch_size is not None:
            lines.append(f"X-Batch-Size: {self.batch_size}")
        if self.handler_ms is not None:
            lines.append(f"X-Handler-Ms: {self.handler_ms}")
        if close:
            lines.append("Connection: close")
        elif self.keep_alive_header:
            lines.append("Connection: keep-alive")
        body = self.body
        if self.chunked:
            lines.append("Transfer-Encoding: chunked")
            half = len(body) // 2
            chunks = [c for c in (body[:half], body[half:]) if c]
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        else:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _on_route(self, proto: _ServerProtocol, request: bytes, head_end: int) -> bool:
        """Answer through `route`; False when it declines (None)."""
        lines = request[:head_end].decode("latin-1").split("\r\n")
        method, path = lines[0].split(" ")[:2]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        answer = self.route(method, path, headers, request[head_end + 4 :])
        if answer is None:
            return False
        self.requests += 1
        status, body = answer
        head = f"HTTP/1.1 {status} Status\r\ncontent-type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        proto.respond(head.encode() + body, False)
        return True

    def _on_request(self, proto: _ServerProtocol) -> None:
        self.requests += 1
        n = self.requests
        status = self.fail_status if self.fail_every and n % self.fail_every == 0 else 200
        close = bool(self.close_every) and n % self.close_every == 0
        response = self._responses[status][close]
        now = self._loop.time()
        if self._first_at is None:
            self._first_at = now
        due = now + (self.delay_fn(now - self._first_at) if self.delay_fn else self.delay_s)
        if self.service_s:
            self._free_at = max(self._free_at, now) + self.service_s
            due = max(due, self._free_at)
        if self.stall_at_s is not None:
            start = self._first_at + self.stall_at_s
            if start <= due < start + self.stall_s:
                due = start + self.stall_s
        if due <= now:
            proto.respond(response, close)
        else:
            self._loop.call_at(due, proto.respond, response, close)

    def __enter__(self) -> "FakeServer":
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", 0))
                self.port = sock.getsockname()[1]
                server = loop.run_until_complete(
                    loop.create_server(lambda: _ServerProtocol(self), sock=sock, backlog=4096)
                )
            except BaseException as exc:  # reported to __enter__
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                for transport in list(self._transports):
                    transport.abort()
                loop.run_until_complete(server.wait_closed())
                loop.close()

        self._thread = threading.Thread(target=serve, name="fakeserver", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
