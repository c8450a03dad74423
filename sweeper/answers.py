"""Whether a trial's requests were served: the first answers, the success rate, the error line.

A run where nothing was served must never look like a success:
- Before the warm-up, each payload of the trial's request set is sent once
  (`first_answers`). When none of them gets `request.expect_status`, the trial fails at
  once: the warm-up and the window would only repeat the refusal.
- After the window, a success rate (answers with expect_status / requests) below
  `settings.min_success_rate` fails the trial.
The error line gives the status counts and the first failed answer: HTTP status and body,
whitespace collapsed, cut to BODY_CHARS and with the server's token keys redacted.

These requests go through httpx, off the load engine's hot path.
"""

from __future__ import annotations

from typing import Callable

import httpx
import numpy as np

from .errors import RequestsFailed
from .load.summary import success_rate
from .payload import RequestSet

BODY_CHARS = 200


def one_line(text: str, limit: int = BODY_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_answer(status: int, body: bytes, redact: Callable[[str], str] = lambda s: s) -> str:
    text = one_line(redact(body.decode("utf-8", errors="replace")))
    return f"HTTP {status}: {text}" if text else f"HTTP {status} (empty body)"


def first_answers(
    requests: RequestSet, url: str, headers: dict[str, str], timeout_s: float
) -> list[tuple[int, bytes]]:
    """One request per payload; (status, body) each, status 0 with the error text when
    no answer came."""
    out = []
    with httpx.Client(timeout=timeout_s) as client:
        for p in requests.payloads:
            try:
                r = client.request(requests.method, url, content=p.body, headers={**headers, "Content-Type": p.content_type})
                out.append((r.status_code, r.content[:4096]))
            except httpx.HTTPError as exc:
                out.append((0, f"no answer: {type(exc).__name__}: {exc}".encode()))
    return out


def check_first_answers(answers: list[tuple[int, bytes]], expect_status: int, redact: Callable[[str], str]) -> None:
    """RequestsFailed when no payload got expect_status: fail before the warm-up."""
    if any(status == expect_status for status, _ in answers):
        return
    status, body = answers[0]
    counts = _counts([s for s, _ in answers])
    raise RequestsFailed(
        f"every first request failed before the warm-up (expected HTTP {expect_status}; statuses {counts}); "
        f"first answer: {describe_answer(status, body, redact)}"
    )


def _counts(statuses) -> str:
    codes, counts = np.unique(np.asarray(statuses, dtype=int), return_counts=True)
    return " ".join(f"{int(c)}:{int(n)}" for c, n in zip(codes, counts))


def check_success(
    statuses: np.ndarray,
    expect_status: int,
    min_rate: float,
    replay: Callable[[], list[tuple[int, bytes]]],
    redact: Callable[[str], str],
    partial_row: dict | None = None,
) -> None:
    """RequestsFailed when the share of answers with expect_status is below min_rate.
    `replay` sends each payload once more to show a failed answer's body (the engine
    counts answers but keeps no bodies)."""
    rate = success_rate(statuses, expect_status)
    if rate >= min_rate:
        return
    counts = _counts(statuses) if len(statuses) else "none"
    failed = [(s, b) for s, b in replay() if s != expect_status]
    if failed:
        shown = f"a failed answer (replayed after the window): {describe_answer(*failed[0], redact)}"
    elif np.any(statuses <= 0):
        shown = "statuses 0, -1, -2 = no answer (connection error, timeout, refused by the engine's cap); a replay after the window was answered"
    else:
        shown = "a replay after the window was answered as expected"
    what = "no requests were sent" if not len(statuses) else f"success rate {rate:.3f}"
    raise RequestsFailed(
        f"{what} < settings.min_success_rate {min_rate:g} (expected HTTP {expect_status}; statuses {counts}); {shown}",
        partial_row=partial_row,
    )
