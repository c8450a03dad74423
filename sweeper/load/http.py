"""The engine's HTTP/1.1 client: request bytes, response parsing, one keep-alive connection.

Why not aiohttp or httpx: on the server's own machine the client shares the CPU with
TorchServe, and every microsecond the client spends per request is taken from the server
it measures. A per-request coroutine, header dict and body object are the bulk of a
general client's cost; this client has none of them. The request is built once as bytes;
a response is parsed just far enough to know its status, where it ends (Content-Length,
chunked encoding, or connection close) and the headers the sweeper's handlers set
(X-Batch-Size, X-Handler-Ms, X-Device). The body is counted, never kept.

One request at a time per connection (no pipelining): a response that carries bytes
after its end is a protocol error, not a second response.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from sweeper.errors import LoadError

from .types import STATUS_CONNECTION_ERROR, Target

MAX_HEAD_BYTES = 64 * 1024  # a response head larger than this is garbage, not a response

_NAN = math.nan


class ProtocolError(Exception):
    """The peer sent something that is not a well-formed HTTP/1.1 response."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    request: bytes  # the complete request, sent as is for every request
    no_body: bool  # HEAD: a response never has a body
    # Target.bodies: every payload's complete request, sent round-robin (else (request,))
    requests: tuple[bytes, ...] = ()


def prepare(target: Target) -> Endpoint:
    """Build the request bytes once. Raises LoadError for a URL the engine cannot send to."""
    parts = urlsplit(target.url)
    if parts.scheme != "http":
        raise LoadError(f"load target {target.url!r}: only http:// URLs are supported")
    if not parts.hostname:
        raise LoadError(f"load target {target.url!r}: no host")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise LoadError(f"load target {target.url!r}: {exc}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    method = target.method.upper()

    def build(body: bytes, headers: tuple[tuple[str, str], ...]) -> bytes:
        given = {name.lower() for name, _ in headers}
        lines = [f"{method} {path} HTTP/1.1"]
        if "host" not in given:
            host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
            lines.append(f"Host: {host}:{port}")
        if "content-length" not in given and (body or method in ("POST", "PUT", "PATCH")):
            lines.append(f"Content-Length: {len(body)}")
        if "user-agent" not in given:
            lines.append("User-Agent: torchserve-sweeper")
        lines.extend(f"{name}: {value}" for name, value in headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    requests = tuple(build(b, h) for b, h in target.bodies) or (build(target.body, target.headers),)
    return Endpoint(parts.hostname, port, requests[0], method == "HEAD", requests)


# The only response headers the engine reads, found in one pass over the lower-cased head
# (one regex scan costs about a third of five separate searches).
_HEADERS = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection|x-batch-size|x-handler-ms|x-device)"
    rb"[ \t]*:[ \t]*([^\r\n]*)"
)


class ResponseParser:
    """Incremental parser of one response at a time; `feed` returns True when it is complete.

    After completion: status, batch_size (-1 if absent), handler_ms (NaN if absent),
    keep_alive (False: the server will close, or the body ran until close). `devices`, when
    given, collects every X-Device value seen (a set shared by the engine's connections:
    one add per response that has the header, no per-request record).
    """

    __slots__ = (
        "no_body", "buf", "in_head", "status", "batch_size", "handler_ms", "keep_alive",
        "remaining", "chunked", "chunk_left", "in_trailer", "until_close", "devices",
    )

    def __init__(self, no_body: bool = False, devices: set | None = None):
        self.no_body = no_body
        self.devices = devices
        self.reset()

    def reset(self) -> None:
        self.buf = b""
        self.in_head = True
        self.status = 0
        self.batch_size = -1
        self.handler_ms = _NAN
        self.keep_alive = True
        self.remaining = 0  # Content-Length bytes still to come
        self.chunked = False
        self.chunk_left = 0  # bytes of the current chunk, including its trailing CRLF
        self.in_trailer = False
        self.until_close = False  # no length given: the body ends when the server closes

    def feed(self, data: bytes) -> bool:
        if not self.in_head:
            if self.chunked:
                return self._feed_chunked(data)
            if self.until_close:
                return False
            self.remaining -= len(data)
            if self.remaining > 0:
                return False
            if self.remaining < 0:
                raise ProtocolError("bytes after the end of the response")
            return True
        buf = self.buf + data if self.buf else data
        while True:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise ProtocolError("response head too large")
                self.buf = buf
                return False
            self._parse_head(buf[:i])
            buf = buf[i + 4 :]
            if self.status >= 200:
                break
            # 1xx interim response (e.g. 100 Continue): the real one follows.
        self.buf = b""
        self.in_head = False
        if self.chunked:
            return self._feed_chunked(buf)
        if self.until_close:
            return False
        self.remaining -= len(buf)
        if self.remaining > 0:
            return False
        if self.remaining < 0:
            raise ProtocolError("bytes after the end of the response")
        return True

    def feed_eof(self) -> bool:
        """The server closed the connection: True if that completed the response."""
        return not self.in_head and self.until_close

    def _parse_head(self, head: bytes) -> None:
        if head[:5] != b"HTTP/" or len(head) < 12:
            raise ProtocolError(f"not an HTTP response: {head[:40]!r}")
        try:
            self.status = status = int(head[9:12])
        except ValueError:
            raise ProtocolError(f"bad status line: {head[:40]!r}") from None
        length = conn = None
        chunked = False
        for name, value in _HEADERS.findall(head.lower()):
            if name == b"content-length":
                length = value
            elif name == b"connection":
                conn = value.rstrip()
            elif name == b"x-batch-size":
                try:
                    self.batch_size = int(value)
                except ValueError:
                    pass  # a malformed diagnostic header is not a failed request
            elif name == b"x-handler-ms":
                try:
                    self.handler_ms = float(value)
                except ValueError:
                    pass
            elif name == b"x-device":
                if self.devices is not None:
                    self.devices.add(value.rstrip())
            else:  # transfer-encoding
                chunked = value.rstrip().endswith(b"chunked")
        if head[5:8] == b"1.0":
            self.keep_alive = conn == b"keep-alive"
        else:
            self.keep_alive = conn != b"close"
        if status < 200 or status in (204, 304) or self.no_body:
            self.remaining = 0
        elif chunked:
            self.chunked = True
        elif length is not None:
            try:
                self.remaining = int(length)
            except ValueError:
                raise ProtocolError(f"bad Content-Length: {length!r}") from None
        else:
            self.until_close = True
            self.keep_alive = False

    def _feed_chunked(self, data: bytes) -> bool:
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        while True:
            if self.chunk_left:
                take = min(self.chunk_left, end - pos)
                pos += take
                self.chunk_left -= take
                if self.chunk_left:
                    self.buf = b""
                    return False
            if self.in_trailer:
                rest = buf[pos:]
                if len(rest) < 2:
                    self.buf = rest
                    return False
                if rest[:2] == b"\r\n":
                    leftover = len(rest) - 2
                else:
                    k = rest.find(b"\r\n\r\n")
                    if k < 0:
                        self.buf = rest
                        return False
                    leftover = len(rest) - k - 4
                if leftover:
                    raise ProtocolError("bytes after the end of the response")
                self.buf = b""
                return True
            j = buf.find(b"\r\n", pos)
            if j < 0:
                if end - pos > MAX_HEAD_BYTES:
                    raise ProtocolError("chunk size line too long")
                self.buf = buf[pos:]
                return False
            try:
                size = int(buf[pos:j].split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size: {buf[pos:j][:20]!r}") from None
            pos = j + 2
            if size == 0:
                self.in_trailer = True
            else:
                self.chunk_left = size + 2


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time.

    The owner (an engine loop) gets `owner.on_response(conn, status, batch_size,
    handler_ms, end)` when a response is complete and `owner.on_failure(conn, end, status)`
    when the request in flight failed (connection lost, protocol error, timeout; `status`
    is what to record). `sched` and `sent` belong to the request in flight; the owner sets
    them in `send`.
    """

    __slots__ = ("owner", "transport", "parser", "busy", "open", "sched", "sent", "clock")

    def __init__(self, owner, no_body: bool, clock):
        self.owner = owner
        self.transport = None
        self.parser = ResponseParser(no_body, getattr(owner, "devices", None))
        self.busy = False
        self.open = False
        self.sched = 0.0
        self.sent = 0.0
        self.clock = clock

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.open = True

    def send(self, request: bytes, sched: float, sent: float) -> None:
        self.sched = sched
        self.sent = sent
        self.busy = True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            self.close()  # bytes nobody asked for: the stream can no longer be trusted
            return
        parser = self.parser
        try:
            done = parser.feed(data)
        except ProtocolError:
            self.fail()
            return
        if done:
            end = self.clock()
            self.busy = False
            keep = parser.keep_alive
            status, batch_size, handler_ms = parser.status, parser.batch_size, parser.handler_ms
            parser.reset()
            if not keep:
                self.close()
            self.owner.on_response(self, status, batch_size, handler_ms, end)

    def eof_received(self):
        return False  # let the transport close; connection_lost settles the request

    def connection_lost(self, exc) -> None:
        was_open = self.open
        self.open = False
        if self.busy:
            parser = self.parser
            if exc is None and parser.feed_eof():
                end = self.clock()
                self.busy = False
                status, batch_size, handler_ms = parser.status, parser.batch_size, parser.handler_ms
                parser.reset()
                self.owner.on_response(self, status, batch_size, handler_ms, end)
            else:
                self.busy = False
                parser.reset()
                self.owner.on_failure(self, self.clock(), STATUS_CONNECTION_ERROR)
        elif was_open:
            self.owner.on_idle_lost(self)

    def fail(self, status: int = STATUS_CONNECTION_ERROR) -> None:
        """Abort the request in flight (timeout, protocol error); the owner hears on_failure
        with `status` (types.STATUS_TIMEOUT or STATUS_CONNECTION_ERROR)."""
        if self.busy:
            self.busy = False
            self.parser.reset()
            self.close()
            self.owner.on_failure(self, self.clock(), status)

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.abort()
