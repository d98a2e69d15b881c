"""memsafe.AllocationTracer: one tracemalloc window at a time, naming the lines that grew."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from memsafe import AllocationTracer, TraceBusyError

KEPT: list[bytes] = []


def _leak(n: int) -> None:
    for _ in range(n):
        KEPT.append(b"x" * 10_000)  # the line the report must name


LEAK_LINE = _leak.__code__.co_firstlineno + 2


def test_report_names_the_line_that_kept_memory() -> None:
    tracer = AllocationTracer(top_n=3)
    tracer.start()
    assert tracer.is_running and tracemalloc.is_tracing()
    _leak(50)
    transient = [bytes(10_000) for _ in range(50)]  # allocated and freed: not growth
    del transient
    report = tracer.stop()
    KEPT.clear()
    assert not tracer.is_running and not tracemalloc.is_tracing()
    top = report["top"][0]
    assert (top["file"], top["line"]) == (__file__, LEAK_LINE)
    assert top["size_diff_bytes"] >= 50 * 10_000 and top["count_diff"] >= 50
    assert len(report["top"]) <= 3
    assert report["traced_peak_bytes"] >= report["traced_bytes"] > 0
    assert report["tracemalloc_overhead_bytes"] > 0
    assert report["was_already_tracing"] is False


def test_a_second_window_is_refused_while_one_is_open() -> None:
    tracer = AllocationTracer()
    tracer.start()
    try:
        with pytest.raises(TraceBusyError, match="already running"):
            tracer.start()
    finally:
        tracer.stop()
    tracer.start()  # and allowed again once closed
    tracer.stop()


def test_stop_without_start_raises() -> None:
    with pytest.raises(RuntimeError, match="no allocation trace is running"):
        AllocationTracer().stop()


def test_tracing_started_by_someone_else_is_left_on() -> None:
    tracemalloc.start()
    try:
        tracer = AllocationTracer()
        tracer.start()
        report = tracer.stop()
        assert report["was_already_tracing"] is True
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()


def test_run_waits_then_reports_and_always_closes() -> None:
    ticks = iter([10.0, 12.5])
    tracer = AllocationTracer(clock=lambda: next(ticks))
    report = asyncio.run(tracer.run(0.01))
    assert report["seconds"] == 2.5 and not tracer.is_running

    async def cancelled() -> None:
        task = asyncio.ensure_future(tracer.run(10))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    tracer = AllocationTracer()
    asyncio.run(cancelled())
    assert not tracer.is_running and not tracemalloc.is_tracing()


@pytest.mark.parametrize("seconds", [0, -1, True, "5"])
def test_run_refuses_bad_seconds(seconds: object) -> None:
    with pytest.raises(ValueError, match="seconds must be a number > 0"):
        asyncio.run(AllocationTracer().run(seconds))  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "value"), [("top_n", 0), ("top_n", True), ("nframes", 101)])
def test_bad_arguments_name_the_value(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        AllocationTracer(**{name: value})  # type: ignore[arg-type]
