"""Do the client and the server agree? client_minus_server_mean_ms and its flag.

Both sides time the same served requests: the load engine from the request's scheduled
send to the last byte of its answer (client_latency_mean_ms), TorchServe from the job's
creation to the response being handed to netty (ts_inference_latency_microseconds per
served request: server_inference_latency_mean_ms). The client's interval contains the
server's, so the difference is what happens outside TorchServe's timer: the engine
writing the request and parsing the answer, the loopback hops, netty decoding the request
before the job exists and writing the answer after, and in the open loop the send lag.

On loopback with a healthy engine that is well under a millisecond (send lag p50
~0.6 ms in the open loop; the engine's own per-request work is tens of microseconds:
see benchmarks/README_load.md). CLIENT_SERVER_BOUND_MS (2 ms) allows three times that,
plus CLIENT_SERVER_BOUND_FRACTION (10%) of the server's mean, for the parts that grow
with load (a busy netty event loop reading requests late, answers queued behind others
on a busy machine). A larger difference is flagged (client_server_disagree): the
client's figures contain time that is not the server's, either the client measuring
itself (a busy engine reads answers late: check client_bound) or requests waiting
before TorchServe's timer starts (a netty backlog under overload, e.g. with
job_queue_size 1: docs/measurements.md#code-netty-backlog).

On a heavily loaded machine (many more runnable threads than cores) up to half the
client's latency can be spent outside TorchServe's timer, and the bound flags such trials
(docs/measurements.md#code-client-server-bound). The bound rests on measurements on
loaded machines only; it has not been measured on a quiet machine yet.
"""

from __future__ import annotations

import math

CLIENT_SERVER_BOUND_MS = 2.0
CLIENT_SERVER_BOUND_FRACTION = 0.10


def client_server_columns(row: dict) -> dict:
    """client_minus_server_mean_ms, client_server_disagree (bool) and
    client_server_disagree_reason for one trial's row (NaN / False when either mean is
    missing)."""
    client = _number(row.get("client_latency_mean_ms"))
    server = _number(row.get("server_inference_latency_mean_ms"))
    diff = client - server
    if math.isnan(diff):
        return {"client_minus_server_mean_ms": math.nan, "client_server_disagree": False,
                "client_server_disagree_reason": ""}
    bound = CLIENT_SERVER_BOUND_MS + CLIENT_SERVER_BOUND_FRACTION * server
    disagree = abs(diff) > bound
    reason = (
        f"client mean {client:.2f} ms - server mean {server:.2f} ms = {diff:+.2f} ms, beyond "
        f"{CLIENT_SERVER_BOUND_MS:g} ms + {CLIENT_SERVER_BOUND_FRACTION:.0%} of the server mean ({bound:.2f} ms)"
        if disagree else ""
    )
    return {"client_minus_server_mean_ms": diff, "client_server_disagree": disagree,
            "client_server_disagree_reason": reason}


def _number(v) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x
