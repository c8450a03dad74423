"""Scrape TorchServe's Prometheus text and turn counter deltas into per-trial means.

ts_inference_latency_microseconds and ts_queue_latency_microseconds are counters of
cumulative microseconds; a trial's mean is (after - before) / (requests after - before).
A figure that cannot be known (no requests, a series missing from the second scrape, a
counter that went backwards because the server restarted) is NaN, never 0 or negative.
"""

from __future__ import annotations

import math

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .errors import ServerError

from .errors import ServerError

Scrape = dict[tuple[str, frozenset], float]

REQUESTS = "ts_inference_requests"  # names without "_total" (see parse)
INFERENCE_US = "ts_inference_latency_microseconds"
QUEUE_US = "ts_queue_latency_microseconds"


def parse(text: str) -> Scrape:
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # the parser appends "_total" to counters that lack it; one spelling for all
            name = sample.name[: -len("_total")] if sample.name.endswith("_total") else sample.name
            out[(name, frozenset(sample.labels.items()))] = float(sample.value)
    return out


def scrape(metrics_url: str, timeout_s: float = 5.0) -> Scrape:
    try:
        r = httpx.get(metrics_url + "/metrics", timeout=timeout_s)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise ServerError(f"scraping {metrics_url}/metrics failed: {type(exc).__name__}: {exc}") from None
    return parse(r.text)


def total(scrape_: Scrape, name: str, model: str | None = None) -> float:
    """Sum of a metric's samples, optionally only those labelled with model_name=model."""
    s = 0.0
    for (n, labels), v in scrape_.items():
        if n == name and (model is None or ("model_name", model) in labels):
            s += v
    return s


def server_columns(before: Scrape, after: Scrape, model: str) -> dict[str, float]:
    def delta(name: str) -> float:
        return total(after, name, model) - total(before, name, model)

    requests = delta(REQUESTS)
    per_req = (lambda us: us / requests / 1000.0) if requests > 0 else (lambda us: math.nan)
    return {
        "server_requests": requests,
        "server_inference_latency_mean_ms": per_req(delta(INFERENCE_US)),
        "server_queue_latency_mean_ms": per_req(delta(QUEUE_US)),
    }
