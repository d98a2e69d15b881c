"""The /admin/ memory page in a real headless Chromium against a real two-worker gunicorn."""

from __future__ import annotations

import time

import httpx
import pytest

from loadtests.launcher import REPO_ROOT
from tests.e2e.cdp import Browser, find_chromium
from tests.e2e.conftest import ServerFactory

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
TOKEN = "e2e-browser-token"
SCREENSHOT = REPO_ROOT / "reports" / "admin-memory.png"


def _wait_for_both_histories(url: str) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    deadline = time.monotonic() + 20
    passes = 0
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while True:
            for user_id in range(1, 100):  # the first pass misses, the next ones hit
                client.get(f"/users/{user_id}")
            passes += 1
            data: dict[str, object] = client.get("/admin/memory/history", headers=headers).json()
            workers = data["workers"]
            assert isinstance(workers, list)
            if passes >= 3 and len(workers) == 2 and all(len(w["wall_time"]) >= 3 for w in workers):
                time.sleep(1.5)  # one more sample after the last hits
                return data
            assert time.monotonic() < deadline, f"histories never filled: {data}"
            time.sleep(0.5)


def test_admin_page_logs_in_and_charts_every_worker(start_server: ServerFactory) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    server = start_server(
        {
            "ADMIN_TOKEN": TOKEN,
            "APP_HISTORY__INTERVAL_SECONDS": "1",
            "APP_MONITOR__METRICS_SHARE_SECONDS": "1",
        }
    )
    data = _wait_for_both_histories(server.url)
    pids = {w["pid"] for w in data["workers"]}  # type: ignore[attr-defined]
    with Browser(chromium) as browser:
        browser.goto(f"{server.url}/admin/")
        assert browser.evaluate("document.querySelector('#token') !== null")
        assert browser.evaluate("document.cookie") == ""
        browser.evaluate(
            f"document.querySelector('#token').value = {TOKEN!r};"
            "document.querySelector('form').submit(); true"
        )
        browser.wait_for("document.querySelectorAll('section.worker').length === 2")
        # The token is in no URL the browser visited, and no script can read the session.
        assert TOKEN not in browser.evaluate("location.href")
        assert browser.evaluate("document.cookie") == ""
        shown = browser.evaluate(
            "[...document.querySelectorAll('section.worker')].map(s => Number(s.dataset.pid))"
        )
        assert set(shown) == pids
        charts = browser.evaluate(
            "[...document.querySelectorAll('svg.chart')].map(svg => ({"
            "series: svg.dataset.series, points: Number(svg.dataset.points),"
            "drawn: svg.querySelector('polyline').getAttribute('points').split(' ').length,"
            "thresholds: svg.querySelectorAll('line.threshold').length,"
            "events: svg.querySelectorAll('g.event').length,"
            "width: svg.getBoundingClientRect().width}))"
        )
        rss = [c for c in charts if c["series"] == "rss"]
        caches = [c for c in charts if c["series"] == "cache-users"]
        assert len(rss) == 2 and len(caches) == 2, charts
        for chart in rss:
            assert chart["points"] >= 3 and chart["drawn"] == chart["points"], chart
            assert chart["thresholds"] == 4  # soft, hard, recycle, max_worker_rss of local
            assert chart["events"] >= 1  # the worker's start
            assert chart["width"] > 100
        assert all(c["drawn"] >= 3 for c in caches), caches
        headings = browser.evaluate(
            "[...document.querySelectorAll('section.worker h2')].map(h => h.textContent)"
        )
        assert any("hit rate 100.0 %" in h for h in headings), headings  # the repeat passes
        browser.screenshot(SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 5000
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        # Without the session or the header, the JSON stays closed.
        assert client.get("/admin/memory/history").status_code == 401
