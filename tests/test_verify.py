"""sweeper verify: the clients' outputs parsed, alternating pairs against the fake server
with wrk (skipped where wrk is not installed, outside CI), and the report's sentence."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from sweeper import verify as v
from sweeper.errors import SweeperError
from sweeper.load import external
from sweeper.report import render_report
from sweeper.report.verified import summary_line

from fakeserver import FakeServer

FIXTURES = Path(__file__).parent / "fixtures"

WRK_OUT = (
    "Running 1s test @ http://127.0.0.1:1/p\n  1 threads and 4 connections\n"
    'WRK_JSON {"requests": 1000, "duration_us": 2000000, "non_2xx_3xx": 100, "connect": 0, '
    '"read": 1, "write": 0, "timeout": 2}\n'
)
AB_OUT = """\
Concurrency Level:      4
Time taken for tests:   2.000 seconds
Complete requests:      1000
Failed requests:        150
   (Connect: 0, Receive: 0, Length: 150, Exceptions: 0)
Non-2xx responses:      100
Keep-Alive requests:    1000
"""


@pytest.mark.parametrize("parse, text", [(external.parse_wrk, WRK_OUT), (external.parse_ab, AB_OUT)])
def test_client_outputs_count_2xx_per_second(parse, text):
    m = parse(text)
    assert m.ok_rps == pytest.approx(450.0)  # (1000 - 100 non-2xx) / 2 s
    assert m.errors == (103 if parse is external.parse_wrk else 100)


def test_unparseable_client_output_is_an_error():
    with pytest.raises(SweeperError):
        external.parse_wrk("no result")
    with pytest.raises(SweeperError):
        external.parse_ab("Complete requests: 5\n")


def _client_or_skip(name):
    found = external.find_client(name)
    if found is None:
        if name == "wrk" and os.environ.get("CI"):
            pytest.fail("wrk must be installed under CI (make test installs it)")
        pytest.skip(f"{name} not installed")
    return found


@pytest.mark.parametrize("name", [pytest.param("wrk", marks=pytest.mark.wrk), "ab"])
def test_alternating_pairs_against_the_fake_server(name):
    client = _client_or_skip(name)
    with FakeServer(delay_s=0.005, keep_alive_header=True) as server:
        req = external.Request(server.url("/p"), b'{"x": 1}', "application/json", "Bearer abc")
        result = v.pairs(req, client, connections=4, duration_s=1.0, count=2)
    assert [p["order"] for p in result["pairs"]] == [["engine", name], [name, "engine"]]
    # 4 in flight at 5 ms each: about 800 req/s for both; they must agree roughly
    for p in result["pairs"]:
        assert 300 < p["engine_rps"] < 900 and 300 < p["client_rps"] < 900
        assert p["engine_errors"] == 0 and p["client_errors"] == 0
    assert 0.7 < result["ratio_median"] < 1.3


def test_report_shows_the_second_opinion(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run_batching", run)
    html, md = render_report(run)
    assert "Second opinion" not in md.read_text()
    (run / "verify.json").write_text(json.dumps({
        "client": "wrk", "connections": 16, "duration_s": 10, "trial_id": "abc",
        "pairs": [{"ratio": 0.99}, {"ratio": 1.01}], "ratio_median": 1.0, "ratio_min": 0.99, "ratio_max": 1.01,
    }))
    html, md = render_report(run)
    for text in (html.read_text(), md.read_text()):
        assert "engine/wrk median 1.000" in text and "measured the server, not itself" in text


@pytest.mark.parametrize("rate, latency_ms, expected", [(500, 20.0, 10), (500, 20.1, 11), (3, 1.0, 1), (1e6, 100.0, v.MAX_CONCURRENCY)])
def test_a_capacity_winner_is_verified_at_the_requests_in_flight_at_its_capacity(rate, latency_ms, expected):
    assert v.in_flight(rate, latency_ms) == expected


@pytest.mark.wrk
def test_wrk_and_the_engine_send_a_request_sets_payloads_in_turn():
    """A request set of several payloads: both clients send each in turn, one per request,
    as the sweep's engine did (the fake server counts the bodies by length)."""
    client = _client_or_skip("wrk")
    short, long = b'{"x": 1}', b'{"text": "' + b"a" * 200 + b'"}'
    with FakeServer(delay_s=0.002, keep_alive_header=True) as server:
        req = external.Request(server.url("/p"), short, "application/json", "", more=((long, "text/plain"),))
        assert req.payloads == ((short, "application/json"), (long, "text/plain"))
        result = v.pairs(req, client, connections=4, duration_s=1.0, count=2)
        lengths = dict(server.lengths)
    assert all(p["engine_errors"] == 0 and p["client_errors"] == 0 for p in result["pairs"])
    sent = lengths.get(len(short), 0) + lengths.get(len(long), 0)
    assert sent >= 0.99 * sum(lengths.values()) and sent > 100, lengths  # no other body
    # in turn: as many of each, but for the requests in flight when a run stopped
    assert abs(lengths[len(short)] - lengths[len(long)]) <= 4 * 4 + 4, lengths


def test_ab_refuses_several_payloads(tmp_path):
    req = external.Request("http://127.0.0.1:1/p", b"a", "text/plain", "", more=((b"bb", "text/plain"),))
    with pytest.raises(SweeperError, match="ab sends one body"):
        external.run_client("ab", "/nonexistent/ab", req, 1, 0.1, tmp_path)


@pytest.mark.parametrize("sent, says", [(3, "payloads in turn"), (1, "the first of request set 'files'")])
def test_the_report_says_which_payloads_verify_sent(sent, says):
    data = {"client": "wrk" if sent == 3 else "ab", "ratio_median": 1.0, "ratio_min": 1.0, "ratio_max": 1.0,
            "pairs": [{}], "request": "files", "request_payloads": 3, "request_payloads_sent": sent}
    assert says in summary_line(data)
