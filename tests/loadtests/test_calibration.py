"""Calibration: a recorded run judged again from its files; detectable leak by equivariance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loadtests.calibrate import _case_commands as case_commands
from loadtests.calibrate import build_parser
from loadtests.calibration_figures import JudgedRun, judge_run_dir, load_runs
from loadtests.guard import MemorySample
from loadtests.report import read_memory_csv, write_memory_csv
from loadtests.server import server_env, server_settings
from loadtests.thresholds import DEFAULT_THRESHOLDS_PATH, read_config
from loadtests.verdict import MIB

STATS = ("Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
         "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
         "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%")  # fmt: skip


def _samples(rss_mb: list[float], recycle_at: int | None = None) -> list[MemorySample]:
    return [
        MemorySample(
            t_seconds=float(t), epoch_seconds=1_000.0 + t, total_rss_bytes=int(mb * MIB),
            master_rss_bytes=50 * MIB,
            worker_rss_bytes={7 if recycle_at is None or t < recycle_at else 8: int(mb * MIB)},
            total_uss_bytes=None, cgroup_usage_bytes=None, recycles=0,
        )
        for t, mb in enumerate(rss_mb)
    ]  # fmt: skip


def _record(run_dir: Path, rss_mb: list[float], duration: float) -> None:
    run_dir.mkdir(parents=True)
    samples = _samples(rss_mb, recycle_at=len(rss_mb) - 20)
    write_memory_csv(run_dir / "memory.csv", samples, [100.0 * t for t in range(len(samples))])
    (run_dir / "locust_stats.csv").write_text(
        STATS + "\n,health poller,20,0,5,5,1,30,10,0.2,0,5,5,5,5,5,5,5,5,5,5,5\n"
        ",Aggregated,9000,0,5,5,1,40,10,75,0,5,5,6,7,8,9,12,14,30,40,40\n"
    )
    rows = ["Timestamp,User Count,Type,Name,Requests/s,Failures/s,Total Request Count,"
            "Total Failure Count"]  # fmt: skip
    rows += [f"{1000 + t},10,,Aggregated,100,0,{100 * t},0" for t in range(len(rss_mb))]
    (run_dir / "locust_stats_history.csv").write_text("\n".join(rows) + "\n")
    summary = {
        "profile": "starter", "load_start_seconds": 0.0, "fatal_reason": None,
        "locust_exit_code": 0, "settings": {"duration_seconds": duration, "users": 50,
        "spawn_rate": 10, "warmup_fraction": 0.5},
        "criteria": [{"name": "server alive, no OOM kill", "value": 0.0}],
        "reported": {"recycles": 1, "hit_rate": 0.8},
    }  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_memory_csv_round_trips_into_samples(tmp_path: Path) -> None:
    samples = _samples([150.0, 151.5, 149.25], recycle_at=2)
    write_memory_csv(tmp_path / "m.csv", samples, [0.0, 10.0, 20.0])
    back, counts = read_memory_csv(tmp_path / "m.csv")
    assert [s.total_rss_bytes // 10_000 for s in back] == [
        s.total_rss_bytes // 10_000 for s in samples
    ]
    assert [set(s.worker_rss_bytes) for s in back] == [{7}, {7}, {8}]
    assert counts == [(0.0, 0), (1.0, 10), (2.0, 20)]


@pytest.mark.parametrize(("leak_mb_per_min", "expected"), [(0.0, "PASS"), (12.0, "FAIL")])
def test_a_recorded_run_is_judged_again(
    tmp_path: Path, leak_mb_per_min: float, expected: str
) -> None:
    rng = np.random.default_rng(4)
    rss = [160.0 + leak_mb_per_min * t / 60 + rng.normal(0, 0.2) for t in range(121)]
    _record(tmp_path / "run", rss, duration=120.0)
    verdict, window_minutes = judge_run_dir(tmp_path / "run", read_config(DEFAULT_THRESHOLDS_PATH))
    assert verdict.result == expected
    assert window_minutes == pytest.approx(1.0)
    assert verdict.info["window_segments"] == 2  # the recycle 20 s before the end


def test_the_detectable_rate_is_the_rate_that_would_fail_the_run(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    base = [160.0 + rng.normal(0, 0.3) for _ in range(121)]
    _record(tmp_path / "base", base, duration=120.0)
    config = read_config(DEFAULT_THRESHOLDS_PATH)
    verdict, window = judge_run_dir(tmp_path / "base", config)
    run = JudgedRun("healthy-120s", 120.0, verdict, 0, 130.0, (1.0,), window, {}, "lru")
    rate = run.detectable_mb_per_min
    assert 1.0 < rate < 10.0
    for extra, expected in ((rate * 1.1, "FAIL"), (rate * 0.9, "PASS_OR_INCONCLUSIVE")):
        leaky = [y + extra * t / 60 for t, y in enumerate(base)]
        _record(tmp_path / f"leak-{extra:.3f}", leaky, duration=120.0)
        result = judge_run_dir(tmp_path / f"leak-{extra:.3f}", config)[0].result
        assert result == expected if expected == "FAIL" else result != "FAIL"


def test_calibration_cases_cover_the_issue_figures() -> None:
    args = build_parser().parse_args([])
    cases = case_commands(args)
    names = [name for name, _, _ in cases]
    for duration in ("30", "60", "120"):
        assert names.count(f"healthy-{duration}s") == 10
    assert names.count("leaky-64KiB-60s") == 10
    slow = [c for c in cases if c[0].startswith("slow-leak")]
    assert [(name, duration) for name, duration, _ in slow] == [("slow-leak-2MBmin-600s", 600.0)]
    argv = slow[0][2]
    assert "LEAKY_APP_BYTES_PER_SECOND=17476" in argv  # 2 MiB/min over two workers
    assert argv[argv.index("--plan") + 1] == "starter"


def _runs_jsonl(calibration_dir: Path, run_dir: Path) -> None:
    record = {"case": "healthy-120s", "duration": 120.0, "exit_code": 0, "wall_seconds": 130.0,
              "run_dir": str(run_dir), "loadavg_after": [1.0]}  # fmt: skip
    (calibration_dir / "runs.jsonl").write_text(json.dumps(record) + "\n")


def test_a_run_without_a_reported_policy_takes_its_profiles(tmp_path: Path) -> None:
    _record(tmp_path / "run", [160.0] * 121, duration=120.0)  # summary: no users_cache_policy
    _runs_jsonl(tmp_path, tmp_path / "run")
    (run,) = load_runs(tmp_path)
    # What the app's loader reads from config/starter.yaml (tinylfu today), never a default
    # of this module's own.
    assert run.policy == server_settings(server_env("starter", [])).caches.users.policy
    assert run.policy != "lru"


def test_the_reported_policy_wins(tmp_path: Path) -> None:
    _record(tmp_path / "run", [160.0] * 121, duration=120.0)
    summary_path = tmp_path / "run" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["reported"]["users_cache_policy"] = "slru"
    summary_path.write_text(json.dumps(summary))
    _runs_jsonl(tmp_path, tmp_path / "run")
    assert [run.policy for run in load_runs(tmp_path)] == ["slru"]
