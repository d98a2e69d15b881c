"""The runner's pieces: Locust CSV parsing, reports, server env, cache report, process stop."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.chart import render_chart
from loadtests.guard import MemorySample
from loadtests.launcher import stop_process
from loadtests.locust_io import read_locust_results
from loadtests.report import write_memory_csv
from loadtests.run import build_parser
from loadtests.server import cache_report, server_env
from loadtests.thresholds import LoadSettings, Plan
from loadtests.verdict import MIB, RunFacts, judge
from tests.loadtests.fakes import JSONHandler, serving

STATS_HEADER = ["Type", "Name", "Request Count", "Failure Count", "Max Response Time",
                "Requests/s", "50%", "95%", "99%"]  # fmt: skip
HISTORY_HEADER = ["Timestamp", "User Count", "Type", "Name", "Total Request Count"]


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_locust_csvs_give_totals_percentiles_health_and_history(tmp_path: Path) -> None:
    _write(tmp_path / "locust_stats.csv", STATS_HEADER, [
        ["GET", "/users/{id} [hot]", 900, 0, 40, 90.0, 2, 8, 20],
        ["GET", "health poller", 20, 1, 1200, 0.2, 2, 3, 1200],
        ["", "Aggregated", 1000, 1, 1200, 100.5, 2, 9, 25],
    ])  # fmt: skip
    _write(tmp_path / "locust_stats_history.csv", HISTORY_HEADER, [
        [100, 2, "GET", "/users/{id} [hot]", 5],
        [100, 2, "", "Aggregated", 10],
        [101, 3, "", "Aggregated", 120],
        [102, 3, "", "Aggregated", "N/A"],
    ])  # fmt: skip
    got = read_locust_results(tmp_path / "locust")
    assert (got.requests, got.failures, got.rps) == (1000, 1, 100.5)
    assert (got.p50_ms, got.p95_ms, got.p99_ms) == (2.0, 9.0, 25.0)
    assert (got.health_checks, got.health_failures, got.health_max_ms) == (20, 1, 1200.0)
    assert got.history == ((100.0, 10), (101.0, 120))


def test_missing_locust_csvs_read_as_nothing_measured(tmp_path: Path) -> None:
    got = read_locust_results(tmp_path / "locust")
    assert (got.requests, got.p95_ms, got.health_checks, got.history) == (0, None, 0, ())


def _sample(t: float, mb: float, recycles: int = 0) -> MemorySample:
    return MemorySample(t, 1e9 + t, int(mb * MIB), int(50 * MIB), {7: int((mb - 50) * MIB)},
                        None if t else int(mb * MIB / 2), int(mb * MIB), recycles)  # fmt: skip


def test_memory_csv_has_one_row_per_sample(tmp_path: Path) -> None:
    samples = [_sample(0, 150), _sample(1, 151, recycles=1)]
    write_memory_csv(tmp_path / "memory.csv", samples, [0.0, 42.0])
    with (tmp_path / "memory.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["total_rss_mb"] for r in rows] == ["150.00", "151.00"]
    assert rows[0]["total_uss_mb"] == "75.00"
    assert rows[1]["total_uss_mb"] == ""
    assert (rows[1]["requests"], rows[1]["recycles"], rows[1]["worker_rss_mb"]) == (
        "42",
        "1",
        "7:101.0",
    )


def test_chart_is_a_png_with_the_plan_limit(tmp_path: Path) -> None:
    samples = [_sample(t, 150 + (t % 7), recycles=t // 10) for t in range(40)]
    facts = RunFacts(samples, 40, 100, 0, 1.0, 2.0, 3.0, 10.0, 8, 0, 5.0,
                     request_counts=[(0.0, 0), (40.0, 4000)])  # fmt: skip
    settings = LoadSettings(duration_seconds=40)
    verdict = judge(facts, settings)
    path = render_chart(tmp_path / "memory.png", samples, verdict, settings,
                        plan=Plan("starter", 50_000, 100_000, 512),
                        request_counts=[(float(t), 100 * t) for t in range(40)])  # fmt: skip
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_server_env_sets_profile_and_drops_web_concurrency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    env = server_env("starter", ["APP_SERVER__MAX_REQUESTS=0", "X=a=b"])
    assert env["APP_CONFIG"] == "config/starter.yaml"
    assert (env["APP_SERVER__MAX_REQUESTS"], env["X"]) == ("0", "a=b")
    assert "WEB_CONCURRENCY" not in env
    with pytest.raises(ValueError, match="KEY=VALUE"):
        server_env("starter", ["novalue"])


def test_cli_flags_match_the_makefile_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFILE", "standard")
    monkeypatch.delenv("PLAN", raising=False)
    args = build_parser().parse_args(
        ["--duration", "10m", "--users", "20", "--max-rss-mb", "350", "--plan", "starter"]
    )
    assert (args.profile, args.plan, args.duration) == ("standard", "starter", "10m")
    assert (args.users, args.max_rss_mb, args.max_p95_ms) == (20, 350.0, None)


class _Health(JSONHandler):
    pids = itertools.cycle([11, 22])

    def do_GET(self) -> None:
        pid = next(self.pids)
        body = json.dumps({
            "pid": pid,
            "caches": {
                "caches": {"users": {"size": 50 if pid == 11 else 100, "max_size": 100}},
                "totals": {"hits": 90 if pid == 11 else 30, "misses": 10 if pid == 11 else 70},
            },
        }).encode()  # fmt: skip
        self.send_json(body)


@pytest.fixture
def health_server() -> Iterator[int]:
    with serving(_Health) as port:
        yield port


@pytest.mark.slow
def test_cache_report_sums_every_worker_reached(health_server: int) -> None:
    report = cache_report(health_server, probes=4)
    assert report.workers == 2
    assert report.hit_rate == pytest.approx(120 / 200)
    assert report.fill == pytest.approx(150 / 200)


@pytest.mark.slow
def test_cache_report_without_a_server_reports_nothing() -> None:
    assert cache_report(1, probes=2).workers == 0


@pytest.mark.slow
def test_stop_process_ends_the_whole_group() -> None:
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"], start_new_session=True)
    assert stop_process(shell, timeout=5) != 0
    assert stop_process(shell, timeout=5) == shell.returncode  # already gone: no error
