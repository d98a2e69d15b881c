"""The reported hit rate covers the load window, not the prefill before it."""

from __future__ import annotations

import itertools
import time

import pytest

from loadtests import server
from loadtests.server import CacheReport


def test_since_counts_only_what_happened_after_the_baseline() -> None:
    baseline = CacheReport(counts={10: (100, 5000), 11: (80, 5000)})
    end = CacheReport(fill=1.0, workers=2, counts={10: (1000, 5100), 11: (880, 5100)})
    window = end.since(baseline)
    assert window.hit_rate == pytest.approx(1700 / (1700 + 200))
    assert (window.fill, window.workers) == (1.0, 2)


def test_a_worker_born_after_the_baseline_counts_whole() -> None:
    baseline = CacheReport(counts={10: (0, 5000)})
    end = CacheReport(counts={10: (90, 5010), 12: (30, 70)})
    assert end.since(baseline).hit_rate == pytest.approx(120 / (120 + 80))


def test_without_a_baseline_the_whole_count_is_reported() -> None:
    end = CacheReport(counts={10: (3, 1)})
    assert end.since(CacheReport()).hit_rate == pytest.approx(0.75)


def test_no_traffic_after_the_baseline_gives_no_hit_rate() -> None:
    counts = {10: (5, 5)}
    assert CacheReport(counts=counts).since(CacheReport(counts=counts)).hit_rate is None


def test_merged_keeps_workers_that_were_recycled_since() -> None:
    early = CacheReport(counts={10: (50, 50), 11: (10, 30)})
    late = CacheReport(fill=0.2, workers=2, counts={11: (40, 40), 12: (8, 2)})
    merged = early.merged(late)
    assert merged.counts == {10: (50, 50), 11: (40, 40), 12: (8, 2)}
    assert merged.hit_rate == pytest.approx(98 / 190)
    assert (merged.fill, merged.workers) == (0.2, 2)


def test_watcher_sums_every_worker_it_saw(monkeypatch: pytest.MonkeyPatch) -> None:
    # /health answers: worker 10 before its recycle, then worker 12 that replaced it.
    answers = itertools.chain(
        [CacheReport(counts={10: (5, 5)}), CacheReport(counts={12: (7, 3)})],
        itertools.repeat(CacheReport(counts={12: (9, 3)})),
    )
    monkeypatch.setattr(server, "cache_report", lambda _port, probes=0: next(answers))
    watcher = server.CacheWatcher(1, interval_seconds=0.01)
    watcher.start()
    deadline = time.monotonic() + 5
    while 12 not in watcher.report.counts and time.monotonic() < deadline:
        time.sleep(0.01)
    report = watcher.stop()
    assert report.counts[10] == (5, 5)
    assert report.counts[12] == (9, 3)
