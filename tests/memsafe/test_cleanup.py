"""MemoryCleanupService: config checks, levels, hysteresis, gc gap, events, loop, real trim."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import pytest

from memsafe import _default_cleanup as default_cleanup
from memsafe._types import CleanupStats
from memsafe.cleanup import CleanupConfig, CleanupEvent, Level, MemoryCleanupService
from memsafe.manager import cache_manager
from memsafe.probes import ContainerMemory, ReleaseResult
from memsafe.recycle import recycle_worker
from tests.conftest import FakeClock

MIB = 1024 * 1024


class FakeManager:
    """Counts expire_all / shrink_all calls; can be told to fail."""

    def __init__(self, expired: int = 0) -> None:
        self.expired = expired
        self.expire_calls = 0
        self.shrink_calls: list[float] = []
        self.fail_times = 0

    def expire_all(self) -> int:
        self.expire_calls += 1
        if self.fail_times > 0:
            self.fail_times -= 1
            msg = "cache backend exploded"
            raise RuntimeError(msg)
        return self.expired

    def shrink_all(self, fraction: float) -> int:
        self.shrink_calls.append(fraction)
        return 7


class FakeRelease:
    """Records the generations asked for; answers a fixed ReleaseResult."""

    def __init__(self) -> None:
        self.generations: list[int | None] = []

    async def __call__(self, generation: int | None = 2, *, trim: bool = True) -> ReleaseResult:
        self.generations.append(generation)
        return ReleaseResult(
            rss_before_bytes=0,
            rss_after_bytes=0,
            freed_bytes=0,
            collected=3,
            trimmed=trim,
            seconds=0.001,
        )


class Memory:
    """A settable RSS probe and container probe."""

    def __init__(self, rss_mb: float = 50, container: ContainerMemory | None = None) -> None:
        self.rss_mb = rss_mb
        self.container = container or ContainerMemory(None, None, None, None)

    def rss(self) -> int:
        return int(self.rss_mb * MIB)

    def probe_container(self) -> ContainerMemory:
        return self.container


class Harness:
    """A service wired to fakes, plus the fakes."""

    def __init__(self, clock: FakeClock, **config: Any) -> None:
        self.clock = clock
        self.memory = Memory()
        self.manager = FakeManager()
        self.release = FakeRelease()
        self.recycles: list[str] = []
        self.config = CleanupConfig(**config)
        self.service = MemoryCleanupService(
            self.config,
            manager=self.manager,
            rss_probe=self.memory.rss,
            container_probe=self.memory.probe_container,
            clock=clock,
            recycle=self.recycles.append,
            release=self.release,
            wall_clock=lambda: 1_700_000_000.0,
        )

    def run(self, rss_mb: float | None = None, force_level: Level | None = None) -> CleanupEvent:
        if rss_mb is not None:
            self.memory.rss_mb = rss_mb
        return asyncio.run(self.service.run_once(force_level))


LIMITS = {"soft_limit_mb": 100, "hard_limit_mb": 200, "recycle_limit_mb": 300}


@pytest.fixture
def harness(fake_clock: FakeClock) -> Harness:
    return Harness(fake_clock, hysteresis_mb=16, min_full_gc_gap_seconds=60, **LIMITS)


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("interval_seconds", 0, "(0, 86400]"),
        ("soft_limit_mb", -1, "(0, 1.04858e+06]"),
        ("hard_fraction", 1.5, "(0, 1]"),
        ("hysteresis_mb", -0.5, "[0, 1.04858e+06]"),
        ("min_full_gc_gap_seconds", float("nan"), "[0, 86400]"),
        ("periodic_gc_seconds", 0, "(0, 86400]"),
        ("shrink_fraction", 0, "(0, 1]"),
        ("max_events", 0, "[1, 1e+06]"),
        ("shutdown_timeout_seconds", 0, "(0, 3600]"),
    ],
)
def test_config_rejects_out_of_range_values_naming_field_value_and_range(
    field: str, value: float, allowed: str
) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=r"must be in") as info:
        CleanupConfig(**kwargs)
    message = str(info.value)
    assert field in message
    assert repr(value) in message
    assert allowed in message


@pytest.mark.parametrize(("field", "value"), [("interval_seconds", "30"), ("max_events", 2.5)])
def test_config_rejects_wrong_types(field: str, value: object) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(TypeError, match=field):
        CleanupConfig(**kwargs)


def test_config_needs_soft_below_hard_below_recycle() -> None:
    with pytest.raises(ValueError, match=r"hard_limit_mb=100 must be > soft_limit_mb=200"):
        CleanupConfig(soft_limit_mb=200, hard_limit_mb=100)
    with pytest.raises(ValueError, match=r"recycle_fraction=0.8 must be > hard_fraction=0.9"):
        CleanupConfig(hard_fraction=0.9, recycle_fraction=0.8)
    with pytest.raises(ValueError, match=r"recycle_limit_mb=100 must be > soft_limit_mb=100"):
        CleanupConfig(soft_limit_mb=100, recycle_limit_mb=100)


def test_config_defaults_are_valid_and_thresholds_off() -> None:
    config = CleanupConfig()
    assert config.interval_seconds == 30
    assert config.soft_limit_mb is None
    assert config.periodic_gc_seconds is None


# --- levels ---------------------------------------------------------------------------------


def test_levels_follow_rss_thresholds(harness: Harness) -> None:
    assert harness.run(50).level == "normal"
    assert harness.run(150).level == "soft"
    assert harness.run(250).level == "hard"
    assert harness.run(350).level == "recycle"
    assert harness.service.level == "recycle"


def test_soft_level_expires_collects_young_generation_and_trims(harness: Harness) -> None:
    event = harness.run(150)
    assert harness.manager.expire_calls == 1
    assert harness.manager.shrink_calls == []
    assert harness.release.generations == [1]
    assert any(action.startswith("gc gen 1") for action in event.actions)
    assert "trim done" in " ".join(event.actions)


def test_hard_level_shrinks_caches_and_runs_a_full_collection(harness: Harness) -> None:
    event = harness.run(250)
    assert harness.manager.shrink_calls == [0.5]
    assert harness.release.generations == [2]
    assert harness.service.stats()["full_gcs"] == 1
    assert "shrank caches by 0.5: 7" in event.actions


def test_level_drops_only_below_threshold_minus_hysteresis(harness: Harness) -> None:
    assert harness.run(250).level == "hard"
    assert harness.run(190).level == "hard"  # below 200 but within 16 MiB: stays
    assert harness.run(184).level == "hard"  # at 200 - 16 = 184: still hard
    assert harness.run(183).level == "soft"
    assert harness.run(90).level == "soft"
    assert harness.run(83).level == "normal"


def test_hysteresis_never_raises_a_level(harness: Harness) -> None:
    assert harness.run(95).level == "normal"  # within 16 MiB under soft, but rising: normal


def test_level_jumps_straight_up_and_can_fall_several_levels(harness: Harness) -> None:
    assert harness.run(350).level == "recycle"
    assert harness.run(10).level == "normal"


def test_level_changes_are_logged(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="memsafe.cleanup"):
        harness.run(250)
        harness.run(10)
    messages = [r.getMessage() for r in caplog.records]
    assert any("normal -> hard" in m for m in messages)
    assert any("hard -> normal" in m for m in messages)
    assert caplog.records[0].levelno == logging.WARNING


def test_full_collections_keep_a_minimum_gap(harness: Harness) -> None:
    harness.run(250)
    harness.clock.advance(30)
    second = harness.run(250)
    assert harness.release.generations == [2, 1]
    assert any("full gc skipped" in action for action in second.actions)
    harness.clock.advance(30)
    harness.run(250)
    assert harness.release.generations == [2, 1, 2]
    assert harness.service.stats()["full_gcs"] == 2


def test_fraction_thresholds_use_container_usage_over_limit(fake_clock: FakeClock) -> None:
    h = Harness(fake_clock, soft_fraction=0.7, hard_fraction=0.85, recycle_fraction=0.95)
    h.memory.container = ContainerMemory(512 * MIB, 300 * MIB, 2, "/sys/fs/cgroup")
    assert h.run(10).level == "normal"
    h.memory.container = ContainerMemory(512 * MIB, 450 * MIB, 2, "/sys/fs/cgroup")
    event = h.run(10)
    assert event.level == "hard"  # 450 >= 0.85 * 512 = 435.2
    assert event.container_limit_bytes == 512 * MIB
    assert event.container_usage_bytes == 450 * MIB


def test_fraction_thresholds_fall_back_to_rss_when_usage_is_unknown(fake_clock: FakeClock) -> None:
    h = Harness(fake_clock, soft_fraction=0.5)
    h.memory.container = ContainerMemory(512 * MIB, None, 1, "/sys/fs/cgroup/memory")
    assert h.run(300).level == "soft"


def test_fraction_thresholds_are_ignored_without_a_container_limit(fake_clock: FakeClock) -> None:
    h = Harness(fake_clock, soft_fraction=0.1, hard_fraction=0.2)
    assert h.run(4000).level == "normal"


def test_either_mb_or_fraction_threshold_raises_the_level(fake_clock: FakeClock) -> None:
    h = Harness(fake_clock, hard_limit_mb=1000, soft_fraction=0.5)
    h.memory.container = ContainerMemory(512 * MIB, 400 * MIB, 2, "/")
    assert h.run(100).level == "soft"


def test_without_a_container_probe_only_rss_counts(fake_clock: FakeClock) -> None:
    service = MemoryCleanupService(
        CleanupConfig(soft_limit_mb=10, soft_fraction=0.1),
        manager=FakeManager(),
        rss_probe=lambda: 20 * MIB,
        container_probe=None,
        clock=fake_clock,
        recycle=lambda reason: None,
        release=FakeRelease(),
    )
    event = asyncio.run(service.run_once())
    assert event.level == "soft"
    assert event.container_limit_bytes is None


# --- actions at every level --------------------------------------------------------------


def test_expired_entries_are_swept_at_normal_level(harness: Harness) -> None:
    harness.manager.expired = 5
    event = harness.run(10)
    assert event.level == "normal"
    assert harness.manager.expire_calls == 1
    assert event.actions == ("expired 5 entries",)
    assert harness.release.generations == []
    assert len(harness.service.stats()["events"]) == 1


def test_quiet_normal_passes_leave_no_event(harness: Harness) -> None:
    harness.run(10)
    harness.run(10)
    stats = harness.service.stats()
    assert stats["passes"] == 2
    assert stats["events"] == []
    assert harness.manager.expire_calls == 2


def test_periodic_gc_is_off_by_default_while_normal(harness: Harness) -> None:
    for _ in range(3):
        harness.clock.advance(3600)
        harness.run(10)
    assert harness.release.generations == []


def test_periodic_gc_runs_a_full_collection_when_due(fake_clock: FakeClock) -> None:
    h = Harness(fake_clock, periodic_gc_seconds=120, min_full_gc_gap_seconds=60)
    h.run(10)
    assert h.release.generations == []
    fake_clock.advance(120)
    event = h.run(10)
    assert h.release.generations == [2]
    assert event.level == "normal"
    fake_clock.advance(60)
    h.run(10)
    assert h.release.generations == [2]
    fake_clock.advance(60)
    h.run(10)
    assert h.release.generations == [2, 2]


def test_periodic_gc_at_soft_level_is_full_when_due(fake_clock: FakeClock) -> None:
    h = Harness(fake_clock, periodic_gc_seconds=10, soft_limit_mb=100)
    fake_clock.advance(10)
    h.run(150)
    assert h.release.generations == [2]


def test_recycle_level_asks_for_a_worker_exit_once(harness: Harness) -> None:
    first = harness.run(350)
    harness.clock.advance(100)
    harness.run(360)
    assert len(harness.recycles) == 1
    assert "350.0 MiB" in harness.recycles[0]
    assert "recycle requested" in first.actions
    assert harness.manager.shrink_calls == [0.5, 0.5]
    assert harness.service.stats()["is_recycle_requested"] is True


def test_forced_level_acts_without_changing_the_measured_level(harness: Harness) -> None:
    event = harness.run(10, force_level="hard")
    assert event.level == "hard"
    assert harness.service.level == "normal"
    assert harness.manager.shrink_calls == [0.5]
    assert len(harness.service.stats()["events"]) == 1


def test_forced_normal_pass_is_always_recorded(harness: Harness) -> None:
    harness.run(10, force_level="normal")
    assert len(harness.service.stats()["events"]) == 1


def test_unknown_forced_level_is_rejected(harness: Harness) -> None:
    with pytest.raises(ValueError, match=r"force_level must be one of .* got 'panic'"):
        harness.run(10, force_level="panic")  # type: ignore[arg-type]  # deliberately invalid


# --- events and stats ---------------------------------------------------------------------


def test_event_records_rss_before_after_and_freed(harness: Harness) -> None:
    readings = iter([250 * MIB, 180 * MIB])
    harness.service._rss_probe = lambda: next(readings)
    event = harness.run()
    assert event.rss_before_bytes == 250 * MIB
    assert event.rss_after_bytes == 180 * MIB
    assert event.freed_bytes == 70 * MIB
    assert event.wall_time == 1_700_000_000.0
    assert event.error is None
    assert event.duration_seconds == 0.0  # the fake clock did not move


def test_event_log_is_bounded_by_max_events(fake_clock: FakeClock) -> None:
    h = Harness(fake_clock, max_events=3, soft_limit_mb=100)
    for rss in range(150, 160):
        h.run(rss)
    events = h.service.stats()["events"]
    assert len(events) == 3
    assert [e["rss_before_bytes"] for e in events] == [157 * MIB, 158 * MIB, 159 * MIB]
    assert h.service.stats()["passes"] == 10


def test_stats_are_json_ready(harness: Harness) -> None:
    harness.run(250)
    stats = harness.service.stats()
    decoded = json.loads(json.dumps(stats))
    assert decoded["level"] == "hard"
    assert decoded["events"][0]["actions"][0] == "expired 0 entries"
    assert decoded["config"]["hard_limit_mb"] == 200
    assert decoded["is_running"] is False
    assert decoded["last_rss_bytes"] == 250 * MIB


def test_failing_pass_is_logged_counted_and_recorded(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.manager.fail_times = 1
    with caplog.at_level(logging.ERROR, logger="memsafe.cleanup"):
        event = harness.run(150)
    assert event.error == "RuntimeError: cache backend exploded"
    assert harness.service.stats()["failures"] == 1
    assert caplog.records[0].exc_info is not None
    assert "pass failed" in caplog.records[0].getMessage()
    assert harness.run(150).error is None
    assert len(harness.service.stats()["events"]) == 2


def test_failing_probe_still_yields_an_event(harness: Harness) -> None:
    def broken() -> int:
        msg = "statm unreadable"
        raise OSError(msg)

    harness.service._rss_probe = broken
    event = harness.run()
    assert event.error == "OSError: statm unreadable"
    assert event.rss_before_bytes == 0


def test_defaults_are_the_process_wide_manager_and_worker_exit(fake_clock: FakeClock) -> None:
    service = MemoryCleanupService(clock=fake_clock)
    assert service.config == CleanupConfig()
    assert service._manager is cache_manager
    assert service._recycle is recycle_worker


# --- the task -----------------------------------------------------------------------------


def _fast_service(
    manager: FakeManager, release: Callable[..., Any] | None = None, **config: Any
) -> MemoryCleanupService:
    return MemoryCleanupService(
        CleanupConfig(interval_seconds=0.01, **config),
        manager=manager,
        rss_probe=lambda: 150 * MIB,
        container_probe=None,
        recycle=lambda reason: None,
        release=release or FakeRelease(),
    )


def test_start_needs_a_running_loop() -> None:
    service = _fast_service(FakeManager())
    with pytest.raises(RuntimeError, match="running event loop"):
        service.start()


@pytest.mark.slow
def test_loop_goes_on_after_failing_passes() -> None:
    manager = FakeManager()
    manager.fail_times = 2
    service = _fast_service(manager, soft_limit_mb=100)

    async def scenario() -> tuple[CleanupStats, asyncio.Task[None] | None]:
        service.start()
        task = service._task
        service.start()  # a second start is a no-op
        assert service._task is task
        assert service.is_running
        for _ in range(500):
            if service.stats()["passes"] >= 4:
                break
            await asyncio.sleep(0.01)
        await service.stop()
        await service.stop()  # stopping twice is harmless
        return service.stats(), task

    stats, task = asyncio.run(scenario())
    assert task is not None
    assert task.done()
    assert stats["failures"] == 2
    assert stats["passes"] >= 4
    assert stats["is_running"] is False
    assert stats["level"] == "soft"


@pytest.mark.slow
def test_stop_returns_within_the_timeout_even_mid_pass() -> None:
    entered = asyncio.Event()

    async def stuck_release(generation: int | None = 2, *, trim: bool = True) -> ReleaseResult:
        entered.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    service = _fast_service(
        FakeManager(), release=stuck_release, soft_limit_mb=100, shutdown_timeout_seconds=0.2
    )

    async def scenario() -> tuple[float, asyncio.Task[None] | None, bool]:
        service.start()
        task = service._task
        await asyncio.wait_for(entered.wait(), timeout=10)
        started = time.monotonic()
        await service.stop()
        return time.monotonic() - started, task, service.is_running

    elapsed, task, is_running = asyncio.run(scenario())
    assert elapsed < 0.2 + 0.3  # shutdown_timeout_seconds plus scheduling slack
    assert task is not None
    assert task.cancelled()
    assert is_running is False


@pytest.mark.slow
def test_a_pass_ignoring_cancellation_keeps_is_running_true_and_blocks_a_second_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entered = asyncio.Event()
    may_finish = asyncio.Event()

    async def stubborn_release(generation: int | None = 2, *, trim: bool = True) -> ReleaseResult:
        entered.set()
        while not may_finish.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # swallows stop()'s cancel
                await may_finish.wait()
        raise RuntimeError("released")

    async def scenario() -> tuple[float, asyncio.Task[None] | None]:
        try:
            return await stop_then_restart()
        finally:
            may_finish.set()  # else asyncio.run would wait forever on the stubborn task

    async def stop_then_restart() -> tuple[float, asyncio.Task[None] | None]:
        service = await default_cleanup.start_memory_cleanup(
            interval_seconds=0.01,
            soft_limit_mb=100,
            shutdown_timeout_seconds=0.2,
            manager=FakeManager(),
            rss_probe=lambda: 150 * MIB,
            container_probe=None,
            recycle=lambda reason: None,
            release=stubborn_release,
        )
        task = service._task
        assert task is not None
        await asyncio.wait_for(entered.wait(), timeout=10)
        started = time.monotonic()
        await default_cleanup.stop_memory_cleanup()
        elapsed = time.monotonic() - started
        assert service.is_running  # the abandoned task is still alive
        assert service.stats()["is_running"] is True
        assert default_cleanup.default_cleanup_service() is service
        with pytest.raises(RuntimeError, match="still running"):
            service.start()
        with pytest.raises(RuntimeError, match="still running"):
            await default_cleanup.start_memory_cleanup()
        assert service._task is task
        may_finish.set()
        await asyncio.wait_for(asyncio.wait({task}), timeout=10)
        assert not service.is_running
        service.start()  # the old loop has ended: a new one may start
        assert service._task is not task
        await default_cleanup.stop_memory_cleanup()
        assert not service.is_running
        assert default_cleanup.default_cleanup_service() is None
        return elapsed, task

    with caplog.at_level(logging.ERROR, logger="memsafe.cleanup"):
        elapsed, task = asyncio.run(scenario())
    assert elapsed < 0.2 + 0.3  # shutdown_timeout_seconds plus scheduling slack
    assert task is not None
    assert task.done()
    assert "ignored cancellation" in caplog.text


def test_seed_functions_start_and_stop_one_default_service(fake_clock: FakeClock) -> None:
    manager = FakeManager()

    async def scenario() -> None:
        service = await default_cleanup.start_memory_cleanup(
            interval_seconds=60,
            max_events=5,
            manager=manager,
            recycle=lambda reason: None,
            clock=fake_clock,
        )
        assert service.config.max_events == 5
        assert service.is_running
        assert await default_cleanup.start_memory_cleanup() is service
        assert default_cleanup.default_cleanup_service() is service
        await default_cleanup.stop_memory_cleanup()
        assert not service.is_running
        assert default_cleanup.default_cleanup_service() is None
        await default_cleanup.stop_memory_cleanup()  # nothing to stop

    asyncio.run(scenario())


def test_seed_start_accepts_a_config(fake_clock: FakeClock) -> None:
    async def scenario() -> CleanupConfig:
        service = await default_cleanup.start_memory_cleanup(
            CleanupConfig(interval_seconds=60), manager=FakeManager(), recycle=lambda r: None
        )
        await default_cleanup.stop_memory_cleanup()
        return service.config

    assert asyncio.run(scenario()).interval_seconds == 60


# --- for real -----------------------------------------------------------------------------

_FRAGMENT_AND_CLEAN = textwrap.dedent(
    """
    import asyncio, json
    from memsafe.cleanup import CleanupConfig, MemoryCleanupService
    from memsafe.probes import process_rss_bytes

    class NoCaches:
        def expire_all(self): return 0
        def shrink_all(self, fraction): return 0

    base = process_rss_bytes()
    # ~200 MiB of 2 KiB objects: above pymalloc's 512 B, so they live in glibc's heap.
    blocks = [bytes(2048) for _ in range(100_000)]
    peak = process_rss_bytes()
    kept = blocks[::64]  # every 64th survives and pins the heap: free() cannot shrink it
    del blocks
    fragmented = process_rss_bytes()
    service = MemoryCleanupService(
        CleanupConfig(hard_limit_mb=1), manager=NoCaches(), recycle=lambda reason: None
    )
    event = asyncio.run(service.run_once())
    print(json.dumps({
        "base": base, "peak": peak, "fragmented": fragmented, "kept": len(kept),
        "level": event.level, "before": event.rss_before_bytes, "after": event.rss_after_bytes,
        "freed": event.freed_bytes, "actions": list(event.actions), "error": event.error,
    }))
    """
)


@pytest.mark.slow
def test_hard_level_really_returns_a_fragmented_heap_to_the_os() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _FRAGMENT_AND_CLEAN],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(completed.stdout)
    assert report["error"] is None
    assert report["level"] == "hard"
    assert report["peak"] - report["base"] > 150 * MIB
    # free() left most of the heap resident: the fragmentation is real.
    assert report["fragmented"] - report["base"] > 100 * MIB
    assert report["freed"] > 100 * MIB, report
