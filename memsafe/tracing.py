"""A tracemalloc window: trace allocations for N seconds, then name the lines that grew most."""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import TypedDict

DEFAULT_TOP_N = 15
DEFAULT_NFRAMES = 1
MAX_TOP_N = 1000
# Allocations made by the tracer's own machinery, not by the code under observation.
_IGNORED_FILES = (tracemalloc.__file__, "<frozen importlib._bootstrap>", "<unknown>", __file__)


class TraceBusyError(RuntimeError):
    """A trace window is already open in this process.

    Thread safety: an exception value, immutable once raised.
    """


class AllocationSite(TypedDict):
    """One source line and what it allocated (and kept) during the window."""

    file: str
    line: int
    size_bytes: int
    count: int
    size_diff_bytes: int
    count_diff: int


class TraceReport(TypedDict):
    """What one window found: the top sites by growth and tracemalloc's own totals."""

    seconds: float
    top: list[AllocationSite]
    traced_bytes: int
    traced_peak_bytes: int
    tracemalloc_overhead_bytes: int
    was_already_tracing: bool


class AllocationTracer:
    """Opens one tracemalloc window at a time and reports the source lines that grew most.

    ``start()`` turns tracemalloc on (unless something else already had it on) and takes a
    baseline snapshot; ``stop()`` takes a second one, compares them by line and turns
    tracemalloc off again, so its cost (several times slower allocation, and the traces'
    memory) is paid only inside the window. Memory allocated and freed within the window
    does not show; memory kept does: what a leak looks like. ``run(seconds)`` does both around
    an ``asyncio.sleep``. A second start while a window is open raises TraceBusyError.

    Thread safety: start/stop hold one lock; a second concurrent start raises TraceBusyError.
    """

    def __init__(
        self,
        *,
        top_n: int = DEFAULT_TOP_N,
        nframes: int = DEFAULT_NFRAMES,
        ignore: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(top_n, bool) or not isinstance(top_n, int) or not 1 <= top_n <= MAX_TOP_N:
            msg = f"top_n must be an int in [1, {MAX_TOP_N}], got {top_n!r}"
            raise ValueError(msg)
        if isinstance(nframes, bool) or not isinstance(nframes, int) or not 1 <= nframes <= 100:
            msg = f"nframes must be an int in [1, 100], got {nframes!r}"
            raise ValueError(msg)
        self.top_n = top_n
        self.nframes = nframes
        self._ignore = (*_IGNORED_FILES, *ignore)
        self._clock = clock
        self._lock = threading.Lock()
        self._baseline: tracemalloc.Snapshot | None = None
        self._started_at = 0.0
        self._was_tracing = False

    @property
    def is_running(self) -> bool:
        """True while a window is open."""
        return self._baseline is not None

    def start(self) -> None:
        """Open a window now.

        Raises:
            TraceBusyError: a window is already open.
        """
        with self._lock:
            if self._baseline is not None:
                msg = "an allocation trace is already running; allowed: one at a time"
                raise TraceBusyError(msg)
            self._was_tracing = tracemalloc.is_tracing()
            if not self._was_tracing:
                tracemalloc.start(self.nframes)
            tracemalloc.reset_peak()
            self._baseline = self._filtered(tracemalloc.take_snapshot())
            self._started_at = self._clock()

    def stop(self) -> TraceReport:
        """Close the window and report the top ``top_n`` lines by bytes grown.

        Raises:
            RuntimeError: no window is open.
        """
        with self._lock:
            baseline = self._baseline
            if baseline is None:
                msg = "no allocation trace is running; call start() first"
                raise RuntimeError(msg)
            try:
                final = self._filtered(tracemalloc.take_snapshot())
                traced, peak = tracemalloc.get_traced_memory()
                overhead = tracemalloc.get_tracemalloc_memory()
            finally:
                if not self._was_tracing:
                    tracemalloc.stop()
                self._baseline = None
            seconds = self._clock() - self._started_at
        stats = final.compare_to(baseline, "lineno")
        grown = [s for s in stats if s.size_diff > 0]
        grown.sort(key=lambda s: (s.size_diff, s.count_diff), reverse=True)
        top = [
            AllocationSite(
                file=s.traceback[0].filename,
                line=s.traceback[0].lineno,
                size_bytes=s.size,
                count=s.count,
                size_diff_bytes=s.size_diff,
                count_diff=s.count_diff,
            )
            for s in grown[: self.top_n]
        ]
        return TraceReport(
            seconds=round(seconds, 3),
            top=top,
            traced_bytes=traced,
            traced_peak_bytes=peak,
            tracemalloc_overhead_bytes=overhead,
            was_already_tracing=self._was_tracing,
        )

    async def run(self, seconds: float) -> TraceReport:
        """Open a window, wait ``seconds`` (the loop keeps serving), close it and report."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            msg = f"seconds must be a number > 0, got {seconds!r}"
            raise ValueError(msg)
        self.start()
        try:
            await asyncio.sleep(seconds)
        finally:
            report = self.stop()
        return report

    def _filtered(self, snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
        return snapshot.filter_traces(
            [tracemalloc.Filter(False, pattern) for pattern in self._ignore if pattern]
        )
