"""Proof the guard can fail: a short real run of a leaking server FAILS, the real server PASSES.

Each test runs `python -m loadtests.run --smoke` (gunicorn + Locust on 127.0.0.1, ~30 s) as a
subprocess, with its own SQLite store and reports directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_SECONDS = 90
# The leak must not be hidden by the safety nets this project adds (RSS recycling, request-count
# restarts): those bound a leak, and here the point is that the guard sees one.
NO_RECYCLING = [
    "APP_SERVER__MAX_WORKER_RSS_MB=65536",
    "APP_MEMORY__RECYCLE_LIMIT_MB=65000",  # below max_worker_rss_mb, as settings require
    "APP_SERVER__MAX_REQUESTS=0",
]


def _run(tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    store = f"APP_STORE__PATH={tmp_path / 'app.sqlite3'}"
    command = [
        sys.executable, "-m", "loadtests.run", "--smoke", "--profile", "starter",
        "--reports-dir", str(tmp_path / "reports"), "--server-env", store, *extra,
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS
    )
    summaries = list((tmp_path / "reports").glob("loadtest-*/summary.json"))
    assert len(summaries) == 1, done.stdout + done.stderr
    return done.returncode, json.loads(summaries[0].read_text()), done.stdout


def _failed(summary: dict[str, Any]) -> set[str]:
    return {c["name"] for c in summary["criteria"] if c["result"] == "FAIL"}


def test_the_real_server_never_fails_the_smoke_verdict(tmp_path: Path) -> None:
    # 15 s cannot prove a server bounded: PASS or INCONCLUSIVE are both honest, FAIL is not.
    code, summary, out = _run(tmp_path)
    assert summary["result"] in ("PASS", "INCONCLUSIVE"), out
    assert code == {"PASS": 0, "INCONCLUSIVE": 3}[summary["result"]], out
    assert summary["exit_code"] == code
    hard = {c["name"]: c["result"] for c in summary["criteria"] if "RSS slope" not in c["name"]}
    hard.pop("RSS growth per 1k requests")
    assert set(hard.values()) == {"PASS"}, hard
    assert summary["reported"]["requests"] > 0
    assert summary["reported"]["hit_rate"] is not None
    # The X-Cache answers were tallied per scenario, and agree with the server's counters.
    by_scenario = summary["cache_by_scenario"]
    assert by_scenario["hot_answers_load"] > 0
    assert by_scenario["cold_answers_load"] > 0
    prefill = summary["prefill"]
    assert prefill["requests"] > 0, prefill  # smoke prefills too, within its 4 s cap
    # The window excludes it (prefill seconds are rounded to 0.01 s in the summary).
    assert summary["load_start_seconds"] >= prefill["seconds"] - 0.01
    report_dir = Path(summary["reports_dir"])
    for name in ("memory.csv", "memory.png", "locust_stats.csv", "locust.html", "server.log"):
        assert (report_dir / name).stat().st_size > 0, name
    assert f"VERDICT: {summary['result']} (exit {code})" in out
    assert re.search(r"loadtest: +\d+/15 s .* req/s .* total RSS .* slope", out), out
    if summary["result"] == "INCONCLUSIVE":
        assert "make loadtest DURATION=" in out


def test_a_leaking_server_fails_on_memory_alone(tmp_path: Path) -> None:
    # No prefill: at 64 KiB per request its ~10k requests alone would blow the peak-RSS budget,
    # and here the point is that the slope and growth criteria catch a leak.
    # A 15 s window (20 s, a quarter of warm-up) holds enough requests for the growth criterion.
    leak = ["--app", "loadtests.leaky_app:app", "--no-prefill", "--duration", "20",
            "--warmup-fraction", "0.25"]  # fmt: skip
    for item in [*NO_RECYCLING, "LEAKY_APP_KIB_PER_REQUEST=64"]:
        leak += ["--server-env", item]
    code, summary, out = _run(tmp_path, *leak)
    assert code == 1, out
    assert summary["passed"] is False
    # Requests all succeeded: what failed is memory growth, measured two ways.
    assert _failed(summary) == {"RSS slope after warm-up (Theil-Sen)", "RSS growth per 1k requests"}
    growth = next(c for c in summary["criteria"] if c["name"] == "RSS growth per 1k requests")
    assert 40 < growth["value"] < 120  # 64 KiB kept per request is 62.5 MB per 1k requests
    assert "VERDICT: FAIL (exit 1)" in out
    assert summary["result"] == "FAIL"


def test_a_server_death_stops_the_run_at_once(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "loadtests.run", "--smoke", "--duration", "40",
        "--reports-dir", str(tmp_path / "reports"),
        "--server-env", f"APP_STORE__PATH={tmp_path / 'app.sqlite3'}",
    ]  # fmt: skip
    runner = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert runner.stdout is not None
    try:
        master = 0
        for line in runner.stdout:
            if match := re.search(r"server ready in .* \(pid (\d+)\)", line):
                master = int(match.group(1))
                break
        assert master, "the runner never reported the server's pid"
        time.sleep(4)  # let the load start
        os.kill(master, signal.SIGKILL)
        killed_at = time.monotonic()
        out = runner.stdout.read()
        code = runner.wait(timeout=60)
        stopped_after = time.monotonic() - killed_at
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        runner.stdout.close()
    assert code == 1, out
    assert stopped_after < 25  # well before the 40 s run would have ended
    summary = json.loads(next((tmp_path / "reports").glob("loadtest-*/summary.json")).read_text())
    assert "server died" in summary["fatal_reason"]
    assert "VERDICT: FAIL" in out
