"""Parsing TorchServe 0.12's Prometheus text and turning counter deltas into per-request means."""

from __future__ import annotations

import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sweeper.torchserve import metrics
from sweeper.errors import ServerError


def exposition(requests: float, inference_us: float, queue_us: float, other_model_requests: float = 7.0) -> str:
    """What TorchServe 0.12 writes with metrics_mode=prometheus: counters with and without
    "_total", a trailing comma in the label set, a second model, and gauges."""
    return f"""# HELP ts_inference_latency_microseconds Cumulative inference duration in microseconds
# TYPE ts_inference_latency_microseconds counter
ts_inference_latency_microseconds{{uuid="5b8c1c4e-7a1e-4a8b",model_name="mlp",model_version="default",}} {inference_us}
ts_inference_latency_microseconds{{uuid="5b8c1c4e-7a1e-4a8b",model_name="cnn",model_version="default",}} 99999.0
# HELP ts_inference_requests_total Total number of inference requests.
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{{uuid="5b8c1c4e-7a1e-4a8b",model_name="mlp",model_version="default",}} {requests}
ts_inference_requests_total{{uuid="5b8c1c4e-7a1e-4a8b",model_name="cnn",model_version="default",}} {other_model_requests}
# HELP ts_queue_latency_microseconds Cumulative queue duration in microseconds
# TYPE ts_queue_latency_microseconds counter
ts_queue_latency_microseconds{{uuid="5b8c1c4e-7a1e-4a8b",model_name="mlp",model_version="default",}} {queue_us}
ts_queue_latency_microseconds{{uuid="5b8c1c4e-7a1e-4a8b",model_name="cnn",model_version="default",}} 12345.0
# HELP QueueTime Queue time
# TYPE QueueTime gauge
QueueTime{{Level="Host",Hostname="box",}} 0.0
# HELP CPUUtilization CPU utilization
# TYPE CPUUtilization gauge
CPUUtilization{{Level="Host",Hostname="box",}} 42.5
"""


def test_parse_torchserve_text():
    scrape = metrics.parse(exposition(10.0, 1234.0, 500.0))
    labels = frozenset({("uuid", "5b8c1c4e-7a1e-4a8b"), ("model_name", "mlp"), ("model_version", "default")})
    assert scrape[("ts_inference_requests", labels)] == 10.0  # no "_total" in the name
    assert scrape[("ts_inference_latency_microseconds", labels)] == 1234.0
    assert scrape[("ts_queue_latency_microseconds", labels)] == 500.0
    assert scrape[("CPUUtilization", frozenset({("Level", "Host"), ("Hostname", "box")}))] == 42.5
    assert not any(name.endswith("_total") for name, _ in scrape)


def test_total_filters_by_model_name():
    scrape = metrics.parse(exposition(10.0, 1234.0, 500.0, other_model_requests=7.0))
    assert metrics.total(scrape, metrics.REQUESTS, "mlp") == 10.0
    assert metrics.total(scrape, metrics.REQUESTS, "cnn") == 7.0
    assert metrics.total(scrape, metrics.REQUESTS) == 17.0
    assert metrics.total(scrape, metrics.REQUESTS, "transformer") == 0.0


def test_delta_gives_per_request_means_in_ms():
    before = metrics.parse(exposition(10.0, 1234.0, 500.0))
    after = metrics.parse(exposition(30.0, 5234.0, 2500.0, other_model_requests=1000.0))
    cols = metrics.server_columns(before, after, "mlp", served=20)
    assert cols["server_requests"] == 20.0
    assert cols["server_inference_latency_mean_ms"] == pytest.approx(4000.0 / 20 / 1000)  # 0.2 ms
    assert cols["server_queue_latency_mean_ms"] == pytest.approx(2000.0 / 20 / 1000)


def test_samples_of_two_model_versions_are_summed():
    text = exposition(10.0, 1000.0, 0.0).replace(
        "# HELP ts_queue_latency",
        'ts_inference_requests_total{uuid="u",model_name="mlp",model_version="2.0",} 5.0\n# HELP ts_queue_latency',
    )
    assert metrics.total(metrics.parse(text), metrics.REQUESTS, "mlp") == 15.0


def test_zero_requests_gives_nan_means():
    before = metrics.parse(exposition(10.0, 1234.0, 500.0))
    cols = metrics.server_columns(before, before, "mlp", served=0)
    assert cols["server_requests"] == 0.0
    assert math.isnan(cols["server_inference_latency_mean_ms"])
    assert math.isnan(cols["server_queue_latency_mean_ms"])


def test_counters_created_during_the_window_count_from_zero():
    after = metrics.parse(exposition(4.0, 400.0, 40.0))
    cols = metrics.server_columns({}, after, "mlp", served=4)
    assert cols["server_requests"] == 4.0
    assert cols["server_inference_latency_mean_ms"] == pytest.approx(0.1)


def test_a_missing_second_scrape_is_nan_not_negative():
    # the runner passes {} when the server died during the window
    before = metrics.parse(exposition(10.0, 1234.0, 500.0))
    cols = metrics.server_columns(before, {}, "mlp", served=10)
    assert all(math.isnan(v) for k, v in cols.items() if k != "server_served"), cols


def test_a_counter_reset_is_nan_not_negative():
    before = metrics.parse(exposition(100.0, 9000.0, 900.0))
    after = metrics.parse(exposition(5.0, 500.0, 50.0))
    cols = metrics.server_columns(before, after, "mlp", served=5)
    assert all(math.isnan(v) for k, v in cols.items() if k != "server_served"), cols


def test_a_missing_latency_series_is_nan_not_zero():
    text = "\n".join(line for line in exposition(30.0, 5.0, 5.0).splitlines() if not line.startswith("ts_queue_latency"))
    before = metrics.parse(exposition(10.0, 1.0, 1.0))
    cols = metrics.server_columns(before, metrics.parse(text + "\n"), "mlp", served=20)
    assert cols["server_requests"] == 20.0
    assert math.isnan(cols["server_queue_latency_mean_ms"])


def test_other_models_do_not_leak_into_the_columns():
    before = metrics.parse(exposition(10.0, 1000.0, 100.0, other_model_requests=0.0))
    after = metrics.parse(exposition(10.0, 1000.0, 100.0, other_model_requests=500.0))
    cols = metrics.server_columns(before, after, "mlp", served=0)
    assert cols["server_requests"] == 0.0


def test_garbage_is_a_value_error():
    with pytest.raises(ValueError):
        metrics.parse("ts_inference_requests_total{model_name=\"mlp\" 10\n")


# --- scrape over a real loopback socket -------------------------------------------------------------


class _Endpoint:
    def __init__(self, status: int, body: str):
        self.status, self.body = status, body

    def __enter__(self) -> str:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                data = endpoint.body.encode()
                self.send_response(endpoint.status if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_scrape_reads_the_metrics_endpoint():
    with _Endpoint(200, exposition(3.0, 30.0, 3.0)) as url:
        assert metrics.total(metrics.scrape(url), metrics.REQUESTS, "mlp") == 3.0


@pytest.mark.parametrize("status, body", [(500, "oops"), (200, "this is { not prometheus")])
def test_a_bad_answer_is_a_server_error(status, body):
    with _Endpoint(status, body) as url, pytest.raises(ServerError):
        metrics.scrape(url)


def test_an_unreachable_endpoint_is_a_server_error():
    with _Endpoint(200, "") as url:
        pass  # closed: nothing listens on that port any more
    with pytest.raises(ServerError):
        metrics.scrape(url, timeout_s=2.0)
