"""The rendered report in a real browser (headless Chromium over the DevTools protocol):
no JavaScript errors, no request that leaves file:// or data:, every plot drawn with a
non-zero size, the summary table sorts on a header click. Saves a full-page screenshot
to test-artifacts/ for a person to look at.

Chromium comes from the Debian package ``chromium``. Without it the test is skipped,
unless CI is set: then a missing browser is a failure, not a silent pass.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sweeper.report import render_report

aiohttp = pytest.importorskip("aiohttp")

pytestmark = pytest.mark.chromium

FIXTURES = Path(__file__).parent / "fixtures"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _require_chromium() -> str:
    path = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if path:
        return path
    reason = f"headless Chromium not found at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI is set, so the browser test must run")
    pytest.skip(reason)


class Browser:
    """One headless Chromium in its own process group and profile directory."""

    def __init__(self, exe: str, profile: Path):
        self.profile = profile
        self.proc = subprocess.Popen(
            [
                exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # so close() can end the renderer processes too
        )

    def port(self, timeout_s: float = 30.0) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            if marker.is_file() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.05)
        raise TimeoutError("chromium did not open its DevTools port")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc.stderr.close()


class Page:
    """Just enough of the DevTools protocol: commands, and events kept in a list."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.events: list[dict] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def send(self, method: str, **params):
        i = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[i] = fut
        await self.ws.send_json({"id": i, "method": method, "params": params})
        reply = await asyncio.wait_for(fut, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def wait_event(self, method: str, timeout_s: float = 30):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(e["method"] == method for e in self.events):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no {method} event")

    async def eval(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


# Runs in the page: what the test asserts on.
PLOT_CHECK = """
Array.from(document.querySelectorAll("figure.plot")).map(function (f) {
  var svg = f.querySelector("svg");
  var r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  return {name: f.dataset.plot, svg: !!svg, width: r.width, height: r.height,
          shapes: svg ? svg.querySelectorAll("path, rect, use").length : 0};
})
"""

SORT_CHECK = """
(function () {
  var table = document.getElementById("summary");
  var headers = Array.from(table.tHead.rows[0].cells);
  var col = headers.findIndex(function (h) { return h.textContent.trim().startsWith("p99 ms"); });
  function column() {
    return Array.from(table.tBodies[0].rows).map(function (tr) {
      return parseFloat(tr.cells[col].getAttribute("data-sort"));
    }).filter(function (v) { return !isNaN(v); });
  }
  headers[col].click();
  var first = column();
  headers[col].click();
  var second = column();
  return {col: col, first: first, second: second, sort: headers[col].getAttribute("aria-sort")};
})()
"""


async def _inspect(exe: str, profile: Path, html: Path, shot: Path) -> dict:
    browser = Browser(exe, profile)
    try:
        port = browser.port()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(page_ws, max_msg_size=0) as ws:
                page = Page(ws)
                for domain in ("Page", "Runtime", "Log", "Network"):
                    await page.send(f"{domain}.enable")
                await page.send("Emulation.setDeviceMetricsOverride", width=1400, height=1000,
                                deviceScaleFactor=1, mobile=False)
                await page.send("Page.navigate", url=html.as_uri())
                await page.wait_event("Page.loadEventFired")
                plots = await page.eval(PLOT_CHECK)
                metrics = await page.send("Page.getLayoutMetrics")
                size = metrics["cssContentSize"]
                shot_data = await page.send(
                    "Page.captureScreenshot", format="png", captureBeyondViewport=True,
                    clip={"x": 0, "y": 0, "width": 1400, "height": min(size["height"], 12000), "scale": 1},
                )
                shot.parent.mkdir(parents=True, exist_ok=True)
                shot.write_bytes(base64.b64decode(shot_data["data"]))
                sort = await page.eval(SORT_CHECK)  # after the screenshot: it reorders the table
                js_errors = await page.eval("window.reportErrors")
                page.reader.cancel()
                return {"plots": plots, "sort": sort, "events": page.events, "js_errors": js_errors}
    finally:
        browser.close()


@pytest.mark.parametrize(
    "fixture, shot_name, expected_plots",
    [
        ("run_batching", "report.png", {"throughput_vs_batch", "latency_vs_concurrency", "achieved_vs_target",
                                        "latency_vs_rate", "pareto", "served_batch"}),
        ("run_threads", "report-threads.png", {"heatmap_throughput", "heatmap_ctx_per_req", "pareto"}),
    ],
)
def test_report_in_headless_chromium(tmp_path, fixture, shot_name, expected_plots):
    exe = _require_chromium()
    run = tmp_path / fixture
    shutil.copytree(FIXTURES / fixture, run)
    html, _ = render_report(run)

    result = asyncio.run(_inspect(exe, tmp_path / "profile", html, ARTIFACTS / shot_name))

    events = result["events"]
    exceptions = [e["params"]["exceptionDetails"] for e in events if e["method"] == "Runtime.exceptionThrown"]
    console_errors = [e["params"] for e in events
                      if e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert")]
    log_errors = [e["params"]["entry"] for e in events
                  if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
    assert exceptions == [] and console_errors == [] and log_errors == [] and result["js_errors"] == []

    # Offline: the page asked for nothing but itself (and inline data: URIs).
    urls = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    assert urls and all(u.startswith(("file://", "data:")) for u in urls), urls

    plots = {p["name"]: p for p in result["plots"]}
    assert set(plots) == expected_plots
    for p in plots.values():
        assert p["svg"] and p["width"] > 100 and p["height"] > 100 and p["shapes"] > 5, p

    sort = result["sort"]
    assert sort["col"] >= 0
    assert sort["first"] == sorted(sort["first"], reverse=True)  # numeric: descending first
    assert sort["second"] == sorted(sort["second"])
    assert sort["sort"] == "ascending"

    png = (ARTIFACTS / shot_name).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
