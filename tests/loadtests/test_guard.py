"""The memory guard's verdict math, its cgroup readers and its report table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from loadtests.cgroups import CgroupFiles, cgroup_of
from loadtests.guard import MemorySample
from loadtests.thresholds import LoadSettings
from loadtests.verdict import (
    MIB,
    MIN_WINDOW_SAMPLES,
    Criterion,
    RunFacts,
    format_table,
    judge,
    per_worker_slopes,
    requests_at,
    worker_segments,
)

LIMITS = LoadSettings(duration_seconds=100, warmup_fraction=0.5, max_rss_mb=400)


def _samples(rss_mb: Callable[[float], float], seconds: int = 100) -> list[MemorySample]:
    return [
        MemorySample(
            t_seconds=float(t),
            epoch_seconds=1_000_000.0 + t,
            total_rss_bytes=int(rss_mb(t) * MIB),
            master_rss_bytes=50 * MIB,
            worker_rss_bytes={101: int((rss_mb(t) - 50) * MIB)},
            total_uss_bytes=int(rss_mb(t) * MIB / 2) if t % 5 == 0 else None,
            cgroup_usage_bytes=None,
            recycles=0,
        )
        for t in range(seconds + 1)
    ]


def _facts(samples: list[MemorySample], **overrides: object) -> RunFacts:
    facts = RunFacts(
        samples=samples,
        duration_seconds=100,
        requests=10_000,
        failures=0,
        p50_ms=5.0,
        p95_ms=40.0,
        p99_ms=90.0,
        rps=100.0,
        health_checks=20,
        health_failures=0,
        health_max_ms=30.0,
        request_counts=[(float(t), 100 * t) for t in range(101)],
        hit_rate=0.9,
    )
    return replace(facts, **overrides)  # type: ignore[arg-type]  # test overrides by name


def _by_name(criteria: tuple[Criterion, ...]) -> dict[str, Criterion]:
    return {c.name: c for c in criteria}


def test_a_flat_healthy_run_passes_every_criterion() -> None:
    verdict = judge(_facts(_samples(lambda t: 150.0)), LIMITS)
    assert verdict.passed, format_table(verdict)
    got = _by_name(verdict.criteria)
    assert got["peak total RSS"].value == pytest.approx(150.0)
    assert got["RSS slope after warm-up (Theil-Sen)"].value == pytest.approx(0.0)
    assert got["RSS growth per 1k requests"].value == pytest.approx(0.0)
    assert verdict.info["peak_uss_mb"] == pytest.approx(75.0)
    assert verdict.info["hit_rate"] == 0.9


def test_a_leak_fails_slope_and_growth_with_the_true_rates() -> None:
    # 0.1 MB/s = 6 MB/min; 100 requests/s, so 1 MB per 1k requests.
    verdict = judge(_facts(_samples(lambda t: 150.0 + 0.1 * t)), LIMITS)
    got = _by_name(verdict.criteria)
    assert not verdict.passed
    assert got["RSS slope after warm-up (Theil-Sen)"].value == pytest.approx(6.0)
    assert got["RSS growth per 1k requests"].value == pytest.approx(1.0)
    assert got["RSS slope after warm-up (Theil-Sen)"].result == "FAIL"
    # Exactly at its 1 MB/1k limit: neither above nor below it with confidence.
    assert got["RSS growth per 1k requests"].result == "INCONCLUSIVE"
    assert got["peak total RSS"].passed
    assert (verdict.result, verdict.exit_code) == ("FAIL", 1)


def test_warm_up_growth_is_ignored_but_counted_in_the_peak() -> None:
    # Caches fill during the first half, then memory is flat: bounded, so it passes.
    verdict = judge(_facts(_samples(lambda t: 100.0 + min(t, 50) * 2)), LIMITS)
    assert verdict.passed, format_table(verdict)
    assert _by_name(verdict.criteria)["peak total RSS"].value == pytest.approx(200.0)
    assert verdict.window_start_seconds == 50


def test_the_window_starts_when_load_starts() -> None:
    verdict = judge(_facts(_samples(lambda t: 150.0), load_start_seconds=3.0), LIMITS)
    assert verdict.window_start_seconds == 53


def test_a_sawtooth_of_recycles_does_not_fool_the_slope() -> None:
    # A worker recycle every 20 s drops 30 MB; between them memory is flat.
    verdict = judge(_facts(_samples(lambda t: 180.0 - (30 if t % 20 < 2 else 0))), LIMITS)
    slope = _by_name(verdict.criteria)["RSS slope after warm-up (Theil-Sen)"]
    assert slope.passed
    assert slope.value == pytest.approx(0.0)


def test_over_budget_peak_fails() -> None:
    verdict = judge(_facts(_samples(lambda t: 450.0 if t == 10 else 150.0)), LIMITS)
    assert not _by_name(verdict.criteria)["peak total RSS"].passed


@pytest.mark.parametrize(
    ("overrides", "failing"),
    [
        ({"failures": 1}, "error ratio"),
        ({"p95_ms": 1500.0}, "p95 latency"),
        ({"health_failures": 1}, "health poller failures"),
        ({"health_checks": 0}, "health poller failures"),
        ({"health_max_ms": 1200.0}, "slowest health check"),
        ({"health_max_ms": None}, "slowest health check"),
        ({"locust_exit_code": 1}, "Locust exit code"),
        ({"locust_exit_code": None}, "Locust exit code"),
        ({"oom_kills": 1}, "server alive, no OOM kill"),
        ({"fatal_reason": "server died"}, "server alive, no OOM kill"),
        ({"requests": 0, "failures": 0}, "error ratio"),
    ],
)
def test_each_criterion_can_fail_on_its_own(overrides: dict[str, object], failing: str) -> None:
    verdict = judge(_facts(_samples(lambda t: 150.0), **overrides), LIMITS)
    failed = [c.name for c in verdict.criteria if not c.passed]
    assert failed == [failing]


def test_too_few_samples_or_requests_are_inconclusive_never_pass() -> None:
    short = _samples(lambda t: 150.0, seconds=MIN_WINDOW_SAMPLES)
    verdict = judge(_facts(short), LIMITS)
    got = _by_name(verdict.criteria)
    assert got["RSS slope after warm-up (Theil-Sen)"].result == "INCONCLUSIVE"
    assert "need >=" in got["RSS slope after warm-up (Theil-Sen)"].detail
    assert (verdict.result, verdict.exit_code) == ("INCONCLUSIVE", 3)
    assert verdict.suggested_duration_seconds is not None
    assert verdict.suggested_duration_seconds > LIMITS.duration_seconds
    table = format_table(verdict)
    assert "VERDICT: INCONCLUSIVE (exit 3)" in table
    assert table.splitlines()[-1].startswith("next: run about ")
    idle = judge(_facts(_samples(lambda t: 150.0), request_counts=[(0.0, 0), (100.0, 50)]), LIMITS)
    growth = _by_name(idle.criteria)["RSS growth per 1k requests"]
    assert growth.result == "INCONCLUSIVE"
    assert growth.value is None


def test_a_hard_failure_wins_over_an_inconclusive_trend() -> None:
    short = _samples(lambda t: 150.0, seconds=MIN_WINDOW_SAMPLES)
    verdict = judge(_facts(short, p95_ms=5000.0), LIMITS)
    assert (verdict.result, verdict.exit_code) == ("FAIL", 1)


def test_a_recycle_step_inside_the_window_adds_no_slope() -> None:
    # One worker replaced at t=70: total RSS drops 8 MB for good (a max_requests recycle).
    samples = _samples(lambda t: 150.0 if t < 70 else 142.0)
    samples = [replace(s, worker_rss_bytes={101 if s.t_seconds < 70 else 202: 0}) for s in samples]
    verdict = judge(_facts(samples), LIMITS)
    slope = _by_name(verdict.criteria)["RSS slope after warm-up (Theil-Sen)"]
    assert slope.value == pytest.approx(0.0)
    assert verdict.passed, format_table(verdict)
    assert verdict.info["window_segments"] == 2


def test_no_samples_at_all_fails() -> None:
    verdict = judge(_facts([]), LIMITS)
    assert not verdict.passed
    assert _by_name(verdict.criteria)["peak total RSS"].value is None


def test_requests_at_interpolates_between_locust_counts() -> None:
    counts = [(10.0, 0), (11.0, 100), (13.0, 100), (14.0, 400)]
    assert requests_at(counts, 5.0) == 0.0
    assert requests_at(counts, 10.0) == 0.0
    assert requests_at(counts, 10.5) == 50.0
    assert requests_at(counts, 12.0) == 100.0
    assert requests_at(counts, 13.5) == 250.0
    assert requests_at(counts, 99.0) == 400.0
    assert requests_at([], 3.0) == 0.0
    assert requests_at([(1.0, 7), (1.0, 9)], 1.0) == 7.0


def test_table_lists_every_criterion_and_the_verdict() -> None:
    verdict = judge(_facts(_samples(lambda t: 150.0), p95_ms=2500.0, rps=1234.5), LIMITS)
    table = format_table(verdict)
    for criterion in verdict.criteria:
        assert criterion.name in table
    assert "FAIL" in table.splitlines()[-1]
    assert "p95 latency                          2500" in table
    assert "rps=1.23e+03" in table
    passing = format_table(judge(_facts(_samples(lambda t: 150.0)), LIMITS))
    assert passing.splitlines()[-1].startswith("VERDICT: PASS (exit 0)")


def test_cgroup_v1_counters_are_read_from_their_files(tmp_path: Path) -> None:
    (tmp_path / "memory.usage_in_bytes").write_text("1048576\n")
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (tmp_path / "memory.failcnt").write_text("7\n")
    files = CgroupFiles(1, tmp_path)
    assert (files.usage_bytes(), files.oom_kills(), files.limit_hits()) == (1048576, 2, 7)


def test_cgroup_v2_counters_are_read_from_their_files(tmp_path: Path) -> None:
    (tmp_path / "memory.current").write_text("4096\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    files = CgroupFiles(2, tmp_path)
    assert (files.usage_bytes(), files.oom_kills(), files.limit_hits()) == (4096, 1, 3)


def test_missing_cgroup_files_read_as_none(tmp_path: Path) -> None:
    files = CgroupFiles(1, tmp_path / "gone")
    assert (files.usage_bytes(), files.oom_kills(), files.limit_hits()) == (None, None, None)


def test_cgroup_of_finds_v1_memory_then_falls_back_to_v2(tmp_path: Path) -> None:
    proc, root = tmp_path / "proc", tmp_path / "cg"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text("4:memory:/a/b\n1:cpu:/\n0::/u\n")
    (root / "memory" / "a" / "b").mkdir(parents=True)
    (root / "memory" / "a" / "b" / "memory.usage_in_bytes").write_text("1\n")
    assert cgroup_of(42, proc_root=proc, root=root) == CgroupFiles(1, root / "memory" / "a" / "b")
    (root / "memory" / "a" / "b" / "memory.usage_in_bytes").unlink()
    assert cgroup_of(42, proc_root=proc, root=root) is None
    (root / "unified" / "u").mkdir(parents=True)
    (root / "unified" / "u" / "memory.current").write_text("1\n")
    assert cgroup_of(42, proc_root=proc, root=root) == CgroupFiles(2, root / "unified" / "u")
    assert cgroup_of(43, proc_root=proc, root=root) is None


def test_each_worker_gets_its_own_slope_and_a_recycled_one_ends() -> None:
    samples = [
        MemorySample(
            t_seconds=float(t), epoch_seconds=float(t), total_rss_bytes=0, master_rss_bytes=0,
            worker_rss_bytes={1: int((60 + t / 60) * MIB), 2 if t < 50 else 3: 70 * MIB},
            total_uss_bytes=None, cgroup_usage_bytes=None, recycles=0,
        )
        for t in range(100)
    ]  # fmt: skip
    slopes = per_worker_slopes(samples, since=20.0)
    assert slopes == {1: pytest.approx(1.0, abs=0.01), 2: 0.0, 3: 0.0}


def test_a_worker_missing_for_one_tick_is_left_out_not_a_new_segment() -> None:
    samples = _samples(lambda t: 150.0)
    glitch = {60: {}, 61: {101: 100 * MIB}}  # t=60: the worker unreadable for one tick
    samples = [replace(s, worker_rss_bytes=glitch.get(int(s.t_seconds), s.worker_rss_bytes))
               for s in samples]  # fmt: skip
    labels = worker_segments(samples)
    assert labels[60] is None
    assert set(labels) == {0, None}


def test_a_recycle_settles_before_its_samples_count() -> None:
    # A fresh worker at t=70 refills its cache for 20 s (+10 MB), then stays flat.
    samples = [
        replace(s, worker_rss_bytes={101 if s.t_seconds < 70 else 202: 0},
                total_rss_bytes=int((150 + (min(s.t_seconds, 90) - 70) / 2
                                     if s.t_seconds >= 70 else 150) * MIB))
        for s in _samples(lambda t: 150.0)
    ]  # fmt: skip
    settled = judge(_facts(samples), replace(LIMITS, recycle_settle_seconds=25))
    assert _by_name(settled.criteria)["RSS slope after warm-up (Theil-Sen)"].value == 0.0
    unsettled = judge(_facts(samples), LIMITS)
    assert _by_name(unsettled.criteria)["RSS slope after warm-up (Theil-Sen)"].value != 0.0
