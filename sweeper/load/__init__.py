"""The load engine: closed loop (N requests in flight) and open loop (fixed rate).

Public interface (used by sweeper.measure; keep it stable):

    Target(url, body, headers, method)          what to send
    LoadProfile(mode, concurrency, rate_rps, duration_s, requests, processes, timeout_s,
                cpu_affinity)                    how to send it
    run_load(target, profile) -> LoadRun         blocking; runs engine process(es)
    summarize(run) -> dict                       the client_* columns of results.csv
    write_records(run, path) / read_records(path) / encode_records(run) -> bytes

Records are a numpy structured array with RECORD_DTYPE, one row per request:
    scheduled_s  when the request was due (open loop: the fixed schedule; closed loop:
                 the moment its slot became free), seconds since the run's t0
    sent_s       when the engine actually started sending it
    end_s        when the response (or error) was complete
    status       HTTP status; no HTTP answer: 0 connection error, -1 timeout, -2 refused
                 by the open loop's outstanding cap (types.STATUS_*; older records: 0)
    batch_size   served batch size from the X-Batch-Size response header, -1 if absent
    handler_ms   X-Handler-Ms response header, NaN if absent

The X-Device values of the responses are not per-request records: each engine collects the
distinct ones (LoadRun.devices, the client_device column).

Modules: types (data), http (request bytes, response parser, connection), engine (one
engine process: closed and open loops), launch (run_load: processes, common t0, merge),
summary (client_* columns, client-bound rules), records (requests.csv.gz).
"""

from .launch import run_load
from .records import encode_records, read_records, write_records
from .summary import summarize
from .types import RECORD_DTYPE, LoadProfile, LoadRun, Target

__all__ = [
    "RECORD_DTYPE",
    "LoadProfile",
    "LoadRun",
    "Target",
    "encode_records",
    "read_records",
    "run_load",
    "summarize",
    "write_records",
]
