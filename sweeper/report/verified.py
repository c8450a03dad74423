"""The report's sentence on `sweeper verify`: verify.json read from the run directory (the
command that writes it starts servers; the report only reads what it left)."""

from __future__ import annotations

import json
from pathlib import Path

from sweeper.rundir import RunDir


def read(run_dir: Path) -> dict | None:
    """verify.json of a run, or None."""
    path = RunDir(run_dir).verify_json
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def summary_line(data: dict) -> str:
    """One sentence for the report."""
    ratio = data.get("ratio_median")
    n = len(data.get("pairs", []))
    client = data.get("client", "?")
    verdict = ""
    if isinstance(ratio, (int, float)) and ratio == ratio:
        verdict = (
            " The engine measured the server, not itself." if 0.95 <= ratio <= 1.05
            else " The two clients disagree by more than 5%: read the winner's figures with care."
        )
    return (
        f"Second opinion: the winner (trial {data.get('trial_id')}) rerun with our engine and with {client}, "
        f"{n} alternating pairs of {data.get('duration_s')} s at {data.get('connections')} in flight: "
        f"engine/{client} median {ratio:.3f} (min {data.get('ratio_min', float('nan')):.3f}, "
        f"max {data.get('ratio_max', float('nan')):.3f}).{verdict}{_payload_note(data)}"
    )


def _payload_note(data: dict) -> str:
    n = data.get("request_payloads")
    if not isinstance(n, int) or n <= 1:
        return ""
    if data.get("request_payloads_sent") == n:
        return f" Both sent request set {data.get('request')!r}'s {n} payloads in turn, one per request, as the sweep did."
    return f" Both sent one body, the first of request set {data.get('request')!r}'s {n} payloads ({data.get('client')} sends one)."
