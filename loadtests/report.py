"""Run reports: the per-second memory CSV and summary.json."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtests.guard import MIB, MemorySample, RunFacts, Verdict
from loadtests.thresholds import LoadSettings, Plan


def write_memory_csv(path: Path, samples: Sequence[MemorySample], counts: Sequence[float]) -> None:
    """One row per second: totals in MB, workers, recycles, cumulative requests, per-pid RSS."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["t_seconds", "epoch_seconds", "total_rss_mb", "master_rss_mb", "workers_rss_mb",
             "total_uss_mb", "cgroup_usage_mb", "workers", "recycles", "requests", "worker_rss_mb"]
        )  # fmt: skip
        for sample, count in zip(samples, counts, strict=True):
            writer.writerow(
                [
                    f"{sample.t_seconds:.2f}",
                    f"{sample.epoch_seconds:.2f}",
                    f"{sample.total_rss_bytes / MIB:.2f}",
                    f"{sample.master_rss_bytes / MIB:.2f}",
                    f"{sum(sample.worker_rss_bytes.values()) / MIB:.2f}",
                    _mb(sample.total_uss_bytes),
                    _mb(sample.cgroup_usage_bytes),
                    sample.workers,
                    sample.recycles,
                    f"{count:.0f}",
                    " ".join(
                        f"{pid}:{rss / MIB:.1f}" for pid, rss in sample.worker_rss_bytes.items()
                    ),
                ]
            )


def _mb(value: int | None) -> str:
    return "" if value is None else f"{value / MIB:.2f}"


def relative_history(
    history: Sequence[tuple[float, int]], samples: Sequence[MemorySample]
) -> list[tuple[float, int]]:
    """Locust's (epoch, count) pairs moved onto the samples' clock (seconds since guard start)."""
    if not samples:
        return []
    epoch_zero = samples[0].epoch_seconds - samples[0].t_seconds
    return [(stamp - epoch_zero, count) for stamp, count in history]


def build_summary(
    verdict: Verdict,
    settings: LoadSettings,
    facts: RunFacts,
    *,
    run: Mapping[str, Any],
    plan: Plan | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """summary.json's content: the run's identity, settings, every criterion and the fits."""
    return {
        "passed": verdict.passed,
        **run,
        "plan": asdict(plan) if plan else None,
        "settings": asdict(settings),
        "criteria": [asdict(c) for c in verdict.criteria],
        "reported": verdict.info,
        "slope_fit": asdict(verdict.slope_fit) if verdict.slope_fit else None,
        "growth_fit": asdict(verdict.growth_fit) if verdict.growth_fit else None,
        "window_start_seconds": verdict.window_start_seconds,
        "samples": len(facts.samples),
        "fatal_reason": facts.fatal_reason,
        "locust_exit_code": facts.locust_exit_code,
        **extra,
    }
