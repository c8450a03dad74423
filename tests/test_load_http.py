"""The engine's HTTP/1.1 pieces without a network: request bytes and response parsing."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeper.errors import LoadError
from sweeper.load.http import ProtocolError, ResponseParser, prepare
from sweeper.load.types import Target

HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Batch-Size: 8\r\nX-Handler-Ms: 3.25\r\n\r\n"


def feed_all(parser: ResponseParser, pieces) -> list[bool]:
    return [parser.feed(p) for p in pieces]


@pytest.mark.parametrize(
    "raw, status, batch_size, handler_ms, keep_alive",
    [
        (HEAD_OK + b"hello", 200, 8, 3.25, True),
        (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n", 503, -1, math.nan, True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi", 200, -1, math.nan, False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", 200, -1, math.nan, False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi", 200, -1, math.nan, True),
        (b"HTTP/1.1 204 No Content\r\nX-Batch-Size: 2\r\n\r\n", 204, 2, math.nan, True),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-batch-size: 4\r\n\r\n"
            b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
            200, 4, math.nan, True,
        ),
        (  # chunked with a trailer section
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n",
            200, -1, math.nan, True,
        ),
        (  # an interim 100 Continue precedes the real response
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
            201, -1, math.nan, True,
        ),
        (  # malformed diagnostic headers are ignored, not errors
            b"HTTP/1.1 200 OK\r\nX-Batch-Size: many\r\nX-Handler-Ms: ?\r\nContent-Length: 0\r\n\r\n",
            200, -1, math.nan, True,
        ),
    ],
)
def test_parser_reads_status_headers_and_end(raw, status, batch_size, handler_ms, keep_alive):
    parser = ResponseParser()
    assert parser.feed(raw) is True
    assert parser.status == status
    assert parser.batch_size == batch_size
    assert parser.handler_ms == handler_ms or (math.isnan(handler_ms) and math.isnan(parser.handler_ms))
    assert parser.keep_alive == keep_alive


def test_parser_waits_for_the_whole_body():
    parser = ResponseParser()
    assert feed_all(parser, [HEAD_OK[:10], HEAD_OK[10:], b"hel", b"lo"]) == [False, False, False, True]


def test_head_response_has_no_body_whatever_content_length_says():
    parser = ResponseParser(no_body=True)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n") is True


def test_body_until_close_completes_on_eof():
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\nsome") is False
    assert parser.feed(b" more") is False
    assert parser.feed_eof() is True
    assert parser.keep_alive is False


def test_eof_in_a_content_length_body_is_not_completion():
    parser = ResponseParser()
    parser.feed(HEAD_OK + b"he")
    assert parser.feed_eof() is False


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        HEAD_OK + b"hello+extra",  # no pipelining: bytes past the end are an error
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nextra",
    ],
)
def test_parser_rejects_malformed_responses(raw):
    with pytest.raises(ProtocolError):
        ResponseParser().feed(raw)


def test_parser_rejects_an_endless_head():
    parser = ResponseParser()
    with pytest.raises(ProtocolError):
        for _ in range(100):
            parser.feed(b"X-Filler: " + b"a" * 1000 + b"\r\n")


def test_parser_reset_allows_the_next_response_on_the_same_connection():
    parser = ResponseParser()
    assert parser.feed(HEAD_OK + b"hello")
    parser.reset()
    assert parser.feed(b"HTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n")
    assert (parser.status, parser.batch_size) == (503, -1)


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, pos = [], 0
    for size in sizes:
        piece = body[pos : pos + size]
        if piece:
            out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        pos += size
    if pos < len(body):
        out.append(b"%x\r\n%s\r\n" % (len(body) - pos, body[pos:]))
    return b"".join(out) + b"0\r\n\r\n"


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=300),
    chunked=st.booleans(),
    sizes=st.lists(st.integers(1, 50), max_size=8),
    cuts=st.lists(st.integers(0, 600), max_size=6),
    batch=st.integers(0, 512),
)
def test_any_split_of_a_response_parses_the_same(body, chunked, sizes, cuts, batch):
    head = b"HTTP/1.1 200 OK\r\nX-Batch-Size: %d\r\n" % batch
    if chunked:
        raw = head + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(body, sizes)
    else:
        raw = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    points = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    pieces = [raw[a:b] for a, b in zip(points, points[1:])]
    parser = ResponseParser()
    results = feed_all(parser, pieces)
    # Complete exactly when the last byte arrives, never before.
    assert results[-1] is True and not any(results[:-1])
    assert (parser.status, parser.batch_size) == (200, batch)


def test_prepare_builds_the_request_once():
    target = Target(
        "http://127.0.0.1:8080/predictions/mlp?x=1",
        body=b'{"a": 1}',
        headers=(("Authorization", "Bearer k"), ("Content-Type", "application/json")),
    )
    endpoint = prepare(target)
    assert (endpoint.host, endpoint.port, endpoint.no_body) == ("127.0.0.1", 8080, False)
    head, _, body = endpoint.request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /predictions/mlp?x=1 HTTP/1.1"
    assert b"Host: 127.0.0.1:8080" in lines
    assert b"Content-Length: 8" in lines
    assert b"Authorization: Bearer k" in lines
    assert body == b'{"a": 1}'


def test_prepare_get_without_body_has_no_content_length_and_keeps_given_host():
    endpoint = prepare(Target("http://localhost/ping", method="GET", headers=(("Host", "x"),)))
    assert endpoint.port == 80
    assert b"Content-Length" not in endpoint.request
    assert endpoint.request.count(b"Host:") == 1


@pytest.mark.parametrize("url", ["https://127.0.0.1/", "ftp://x/", "http:///path", "http://h:99999/"])
def test_prepare_rejects_urls_it_cannot_send_to(url):
    with pytest.raises(LoadError, match="load target"):
        prepare(Target(url))
