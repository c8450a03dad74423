"""Scrape TorchServe's Prometheus text and turn counter deltas into per-trial means.

ts_inference_latency_microseconds and ts_queue_latency_microseconds are counters of
cumulative microseconds. TorchServe adds to them only when it answers a request with a
result (RestJob.response); ts_inference_requests_total counts every arrival, including
those answered 503 (queue full), failed by the handler, or still queued. So a trial's mean
is (after - before) of the latency counter divided by the requests *served* in the window
(the client's 2xx count: the window's scrapes enclose the whole load), never by the
arrivals: with half the requests answered 503 that would halve the mean.
A figure that cannot be known (no requests, a series missing from the second scrape, a
counter that went backwards because the server restarted) is NaN, never 0 or negative.
"""

from __future__ import annotations

import math

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..errors import ServerError

Scrape = dict[tuple[str, frozenset], float]

REQUESTS = "ts_inference_requests"  # names without "_total" (see parse)
INFERENCE_US = "ts_inference_latency_microseconds"
QUEUE_US = "ts_queue_latency_microseconds"


def parse(text: str) -> Scrape:
    """{(name, labels): value}. TorchServe 0.12 writes counters both with and without
    "_total" (ts_inference_requests_total, ts_inference_latency_microseconds); the names
    here never carry it. Raises ValueError for text that is not Prometheus exposition."""
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name[: -len("_total")] if sample.name.endswith("_total") else sample.name
            out[(name, frozenset(sample.labels.items()))] = float(sample.value)
    return out


def scrape(metrics_url: str, timeout_s: float = 5.0) -> Scrape:
    """One scrape of TorchServe's metrics endpoint; a server that cannot answer, or answers
    something that is not Prometheus text, is a ServerError (the trial fails), not a crash
    of the sweep."""
    try:
        r = httpx.get(metrics_url + "/metrics", timeout=timeout_s)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise ServerError(f"scraping {metrics_url}/metrics failed: {type(exc).__name__}: {exc}") from None
    try:
        return parse(r.text)
    except ValueError as exc:
        raise ServerError(f"scraping {metrics_url}/metrics: not Prometheus text: {exc}") from None


def total(scrape_: Scrape, name: str, model: str | None = None) -> float:
    """Sum of a metric's samples, optionally only those labelled with model_name=model."""
    found = _sum(scrape_, name, model)
    return 0.0 if found is None else found


def _sum(scrape_: Scrape, name: str, model: str | None) -> float | None:
    """Like total, but None when no sample matches."""
    s, found = 0.0, False
    for (n, labels), v in scrape_.items():
        if n == name and (model is None or ("model_name", model) in labels):
            s += v
            found = True
    return s if found else None


def delta(before: Scrape, after: Scrape, name: str, model: str | None = None) -> float:
    """Counter increase between two scrapes; NaN when unknown (series absent afterwards,
    or the counter went backwards: the server restarted in between). A series absent
    before the window is a counter TorchServe had not created yet: 0."""
    end = _sum(after, name, model)
    if end is None:
        return math.nan
    start = _sum(before, name, model) or 0.0
    d = end - start
    return d if d >= 0 else math.nan


def server_columns(before: Scrape, after: Scrape, model: str, served: int | None) -> dict[str, float]:
    """server_requests (arrivals, TorchServe's count), server_served (the denominator of
    the means: requests answered with a result) and the latency means per served request.
    `served` None (unknown) gives NaN means."""
    requests = delta(before, after, REQUESTS, model)

    def per_request_ms(name: str) -> float:
        if served is None or not served > 0:
            return math.nan
        return delta(before, after, name, model) / served / 1000.0

    return {
        "server_requests": requests,
        "server_served": math.nan if served is None else served,
        "server_inference_latency_mean_ms": per_request_ms(INFERENCE_US),
        "server_queue_latency_mean_ms": per_request_ms(QUEUE_US),
    }
