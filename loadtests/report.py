"""Run reports: the per-second memory CSV and summary.json."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtests.guard import MemorySample
from loadtests.thresholds import LoadSettings, Plan
from loadtests.verdict import MIB, RunFacts, Verdict


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


def _finite(data: dict[str, Any]) -> dict[str, Any]:
    """JSON has no infinity: an unbounded side of an interval is written as null."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in data.items()
    }


def read_memory_csv(path: Path) -> tuple[list[MemorySample], list[tuple[float, int]]]:
    """memory.csv back into samples and (t_seconds, cumulative requests): to judge again."""
    samples: list[MemorySample] = []
    counts: list[tuple[float, int]] = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            workers = {}
            for item in row["worker_rss_mb"].split():
                pid, _, rss = item.partition(":")
                workers[int(pid)] = int(float(rss) * MIB)
            samples.append(
                MemorySample(
                    t_seconds=float(row["t_seconds"]),
                    epoch_seconds=float(row["epoch_seconds"]),
                    total_rss_bytes=int(float(row["total_rss_mb"]) * MIB),
                    master_rss_bytes=int(float(row["master_rss_mb"]) * MIB),
                    worker_rss_bytes=workers,
                    total_uss_bytes=int(float(row["total_uss_mb"]) * MIB)
                    if row["total_uss_mb"]
                    else None,
                    cgroup_usage_bytes=int(float(row["cgroup_usage_mb"]) * MIB)
                    if row["cgroup_usage_mb"]
                    else None,
                    recycles=int(row["recycles"]),
                )
            )
            counts.append((float(row["t_seconds"]), int(float(row["requests"]))))
    return samples, counts


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
    trends = {
        name: {
            "result": t.result,
            "reason": t.reason,
            "growth_mb": t.growth_mb,
            "noise_floor_mb": t.noise_floor_mb,
            "interval": _finite(asdict(t.interval)) if t.interval else None,
        }
        for name, t in verdict.trends.items()
    }
    return {
        "result": verdict.result,
        "passed": verdict.passed,
        "exit_code": verdict.exit_code,
        "suggested_duration_seconds": verdict.suggested_duration_seconds,
        **run,
        "plan": asdict(plan) if plan else None,
        "settings": asdict(settings),
        "criteria": [{**asdict(c), "passed": c.passed} for c in verdict.criteria],
        "trends": trends,
        "reported": verdict.info,
        "slope_fit": asdict(verdict.slope_fit) if verdict.slope_fit else None,
        "growth_fit": asdict(verdict.growth_fit) if verdict.growth_fit else None,
        "window_start_seconds": verdict.window_start_seconds,
        "samples": len(facts.samples),
        "fatal_reason": facts.fatal_reason,
        "locust_exit_code": facts.locust_exit_code,
        **extra,
    }
