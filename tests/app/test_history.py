"""The per-worker history as shared files and as the /admin/ page's SVG charts."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from app.core.admin_charts import MAX_POINTS, _downsample, page
from app.core.shared_snapshots import SharedSnapshots

MIB = 1024 * 1024


def _worker(pid: int, samples: int, *, alive: bool = True) -> dict[str, Any]:
    now = time.time()
    times = [now - (samples - i) * 10 for i in range(samples)]
    return {
        "pid": pid,
        "is_alive": alive,
        "wall_time": times,
        "rss_bytes": [(60 + i % 50) * MIB for i in range(samples)],
        "container_usage_bytes": [None] * samples,
        "container_limit_bytes": None,
        "level": ["normal"] * samples,
        "caches": {
            "users": {
                "entries": list(range(samples)),
                "bytes": [i * 200 for i in range(samples)],
                "hit_rate": [0.9] * samples,
            }
        },
        "events": [{"wall_time": times[0], "kind": "start", "detail": "<ready> & up"}],
    }


def _data(*workers: dict[str, Any]) -> dict[str, Any]:
    return {
        "interval_seconds": 10.0,
        "max_samples": 360,
        "thresholds_mb": {"soft_limit_mb": 120, "hard_limit_mb": 140, "recycle_limit_mb": None},
        "workers": list(workers),
    }


def test_a_full_hour_of_two_workers_is_a_few_kib() -> None:
    html = page(_data(_worker(1, 360), _worker(2, 360, alive=False)))
    assert len(html.encode()) < 16 * 1024
    assert html.count('data-series="rss"') == 2
    drawn = [int(n) for n in re.findall(r'data-points="(\d+)"', html)]
    assert drawn and all(100 <= n <= MAX_POINTS for n in drawn), drawn
    assert "worker 2 (exited)" in html
    assert "&lt;ready&gt; &amp; up" in html  # event details are escaped
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count('class="threshold"') == 4  # two limits on each worker's chart


def test_downsampling_keeps_each_buckets_peak() -> None:
    times = [float(i) for i in range(1000)]
    values: list[float | None] = [1.0] * 1000
    values[517] = 99.0
    values[3] = None
    points = _downsample(times, values)
    assert len(points) <= MAX_POINTS
    assert (517.0, 99.0) in points


def test_no_samples_yet_is_said_plainly() -> None:
    assert "No samples yet." in page(_data())


def test_history_files_of_exited_workers_stay_until_stale_and_are_bounded(
    tmp_path: Path,
) -> None:
    shared = SharedSnapshots(tmp_path / "s", max_age_seconds=60, prefix="history", keep_exited=True)
    metrics = SharedSnapshots(tmp_path / "s", max_age_seconds=60)
    shared.ensure_directory()
    dead = 2**22 + 12345  # above any pid this machine hands out
    alive = os.getppid()
    shared.publish({"pid": dead})
    shared.publish({"pid": alive})
    metrics.publish({"pid": dead})
    assert metrics.others(os.getpid()) == []  # metrics drop the dead worker at once
    others = shared.others(os.getpid())
    assert {(s["pid"], s["is_alive"]) for s in others} == {(dead, False), (alive, True)}
    old = shared.directory / f"history-{dead}.json"
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert [s["pid"] for s in shared.others(os.getpid())] == [alive]
    assert not old.exists()
    for pid in range(dead + 1, dead + 6):
        shared.publish({"pid": pid})
    assert len(shared.others(os.getpid(), max_files=3)) == 3
    assert len(list(shared.directory.glob("history-*.json"))) == 3  # older ones deleted
