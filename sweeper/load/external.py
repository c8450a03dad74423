"""The independent clients `sweeper verify` compares the engine with: wrk (its Lua hooks
send a request set's payloads in turn and report as one JSON line) and ApacheBench `ab`
(one body). Each runs as a subprocess for a fixed time at a fixed number of connections;
only 2xx answers count as served."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import SweeperError


# wrk reports through a Lua `done` hook as one JSON line; the body and headers come from
# the environment so that no key is ever written to disk.
WRK_LUA = """\
local f = assert(io.open(os.getenv("VERIFY_BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()
wrk.method = os.getenv("VERIFY_METHOD")
if #body > 0 then wrk.body = body end
local ct = os.getenv("VERIFY_CONTENT_TYPE")
if ct and #ct > 0 then wrk.headers["Content-Type"] = ct end
local auth = os.getenv("VERIFY_AUTHORIZATION")
if auth and #auth > 0 then wrk.headers["Authorization"] = auth end

-- several payloads (VERIFY_BODIES > 1): each a request of its own, sent in turn, one per
-- request, as the engine sends a request set's payloads (built once, in init)
local count = tonumber(os.getenv("VERIFY_BODIES") or "1")
if count > 1 then
  local built = {}
  function init(args)
    for i = 1, count do
      local g = assert(io.open(os.getenv("VERIFY_BODY_FILE") .. "." .. i, "rb"))
      local b = g:read("*a")
      g:close()
      local headers = {}
      for name, value in pairs(wrk.headers) do headers[name] = value end
      local t = os.getenv("VERIFY_CONTENT_TYPE_" .. i)
      if t and #t > 0 then headers["Content-Type"] = t end
      built[i] = wrk.format(nil, nil, headers, b)
    end
  end
  local turn = 0
  function request()
    turn = turn % count + 1
    return built[turn]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non_2xx_3xx": %d, "connect": %d, '
    .. '"read": %d, "write": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass(frozen=True)
class Measurement:
    ok_rps: float  # 2xx per second
    errors: int


@dataclass(frozen=True)
class Request:
    url: str
    body: bytes
    content_type: str
    authorization: str  # "" without token auth
    method: str = "POST"
    # the payloads after the first, (body, content type) each: sent in turn with `body`,
    # one per request, by the engine and by wrk (not by ab, which sends one body)
    more: tuple[tuple[bytes, str], ...] = ()

    @property
    def payloads(self) -> tuple[tuple[bytes, str], ...]:
        return ((self.body, self.content_type), *self.more)


def parse_wrk(stdout: str) -> Measurement:
    lines = [line for line in stdout.splitlines() if line.startswith("WRK_JSON ")]
    if not lines:
        raise SweeperError("wrk printed no result line (WRK_JSON)")
    data = json.loads(lines[-1][len("WRK_JSON ") :])
    ok = data["requests"] - data["non_2xx_3xx"]
    errors = data["non_2xx_3xx"] + sum(data[k] for k in ("connect", "read", "write", "timeout"))
    seconds = data["duration_us"] / 1e6
    return Measurement(ok / seconds if seconds > 0 else float("nan"), int(errors))


_AB = {
    "complete": re.compile(r"^Complete requests:\s+(\d+)", re.M),
    "non2xx": re.compile(r"^Non-2xx responses:\s+(\d+)", re.M),
    "time": re.compile(r"^Time taken for tests:\s+([\d.]+) seconds", re.M),
}


def parse_ab(stdout: str) -> Measurement:
    found = {k: p.search(stdout) for k, p in _AB.items()}
    if not found["complete"] or not found["time"]:
        raise SweeperError("ab printed no 'Complete requests' / 'Time taken for tests' lines")
    complete = int(found["complete"].group(1))
    non2xx = int(found["non2xx"].group(1)) if found["non2xx"] else 0
    seconds = float(found["time"].group(1))
    # ab's "Failed requests" also counts served responses whose length differs from the
    # first one; only non-2xx responses are not served.
    return Measurement((complete - non2xx) / seconds if seconds > 0 else float("nan"), non2xx)


def find_client(preference: str = "auto") -> tuple[str, str] | None:
    """(name, path) of the independent client: wrk first, then ab; None if neither."""
    names = ("wrk", "ab") if preference == "auto" else (preference,)
    for name in names:
        path = shutil.which(name)
        if path:
            return name, path
    return None


def run_client(name: str, path: str, req: Request, connections: int, duration_s: float, tmp: Path) -> Measurement:
    body_file = tmp / "body"
    body_file.write_bytes(req.body)
    if name == "wrk":
        script = tmp / "verify.lua"
        script.write_text(WRK_LUA)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "VERIFY_BODY_FILE": str(body_file),
            "VERIFY_METHOD": req.method,
            "VERIFY_CONTENT_TYPE": req.content_type,
            "VERIFY_AUTHORIZATION": req.authorization,
            "VERIFY_BODIES": str(len(req.payloads)),
        }
        if req.more:
            for i, (body, content_type) in enumerate(req.payloads, start=1):
                (tmp / f"body.{i}").write_bytes(body)
                env[f"VERIFY_CONTENT_TYPE_{i}"] = content_type
        cmd = [path, "-t1", f"-c{connections}", f"-d{duration_s:g}s", "-s", str(script), req.url]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration_s + 60)
        if out.returncode != 0:
            said = (out.stderr.strip() or out.stdout.strip())[:300]
            raise SweeperError(f"wrk failed (exit {out.returncode}): {said}")
        return parse_wrk(out.stdout)
    if req.more:
        raise SweeperError("ab sends one body: verify with ab sends the request set's first payload only")
    # ab: keep-alive, the same connections, a time limit; -n large so the time limit ends it
    cmd = [path, "-k", "-q", "-c", str(connections), "-t", f"{duration_s:g}", "-n", "100000000"]
    if req.method == "POST":
        cmd += ["-p", str(body_file), "-T", req.content_type]
    if req.authorization:
        cmd += ["-H", f"Authorization: {req.authorization}"]
    out = subprocess.run(cmd + [req.url], capture_output=True, text=True, timeout=duration_s + 60)
    if out.returncode != 0:
        raise SweeperError(f"ab failed (exit {out.returncode}): {out.stderr.strip()[:300]}")
    return parse_ab(out.stdout)
