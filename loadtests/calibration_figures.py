"""The figures of a calibration: each recorded run judged again by the current verdict code."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.locust_io import read_locust_results
from loadtests.report import read_memory_csv, relative_history
from loadtests.server import server_env, server_settings
from loadtests.stats import theil_sen
from loadtests.thresholds import DEFAULT_THRESHOLDS_PATH, read_config, resolve_settings
from loadtests.trend import FAIL, INCONCLUSIVE, PASS
from loadtests.verdict import MIB, MIN_WINDOW_SAMPLES, SLOPE_CRITERION, RunFacts, Verdict, judge


@dataclass(frozen=True)
class JudgedRun:
    """One recorded run and its verdict under the current code."""

    case: str
    duration: float
    verdict: Verdict
    recorded_exit_code: int
    wall_seconds: float
    loadavg: tuple[float, ...]
    window_minutes: float
    by_scenario: Mapping[str, Any]  # summary.json's cache_by_scenario (X-Cache hit rates)
    policy: str
    old_slope: float | None = None  # the old point estimate, for comparison

    @property
    def detectable_mb_per_min(self) -> float:
        """The smallest linear leak this run would have FAILed had it been added to it.

        Theil-Sen is equivariant: adding r MB/min to every sample shifts every pairwise slope,
        so the slope and both bounds, by exactly r and leaves the residuals alone. FAIL needs
        low + r > limit and (slope + r) * window > noise floor.
        """
        trend = self.verdict.trends[SLOPE_CRITERION]
        limit = _limit(self.verdict)
        if trend.interval is None or not math.isfinite(trend.interval.low):
            return math.inf
        known = self.known_leak_mb_per_min  # taken out first: the run as if healthy
        by_interval = limit - (trend.interval.low - known)
        span = trend.span or self.window_minutes
        by_floor = trend.noise_floor_mb / span - (trend.interval.slope - known)
        return max(by_interval, by_floor, 0.0)

    @property
    def known_leak_mb_per_min(self) -> float:
        """The leak a slow-leak case injected on purpose (0 for the others), from its name."""
        match = re.match(r"slow-leak-([\d.]+)MBmin", self.case)
        return float(match[1]) if match else 0.0

    @property
    def interval_above_limit(self) -> bool:
        """The slope's whole interval is above the limit (FAIL unless within the noise floor)."""
        interval = self.verdict.trends[SLOPE_CRITERION].interval
        return interval is not None and interval.low > _limit(self.verdict)

    @property
    def old_rule_fails(self) -> bool:
        """The verdict before INCONCLUSIVE: FAIL when the point slope over the window (one
        Theil-Sen over every sample, recycles included) exceeded the limit, or when the window
        was too short to fit one."""
        return self.old_slope is None or self.old_slope > _limit(self.verdict)


def _limit(verdict: Verdict) -> float:
    criterion = next(c for c in verdict.criteria if c.name == SLOPE_CRITERION)
    return criterion.limit or 0.0


def old_point_slope(verdict: Verdict, run_dir: Path) -> float | None:
    """Theil-Sen over every window sample, ignoring recycles: what the old verdict compared."""
    samples, _ = read_memory_csv(run_dir / "memory.csv")
    window = [s for s in samples if s.t_seconds >= verdict.window_start_seconds]
    if len(window) < MIN_WINDOW_SAMPLES:
        return None
    return theil_sen([s.t_seconds / 60 for s in window],
                     [s.total_rss_bytes / MIB for s in window]).slope  # fmt: skip


def judge_run_dir(run_dir: Path, config: Mapping[str, Any]) -> tuple[Verdict, float]:
    """Judge one report directory again from memory.csv, the Locust CSVs and summary.json."""
    summary = json.loads((run_dir / "summary.json").read_text())
    samples, _ = read_memory_csv(run_dir / "memory.csv")
    results = read_locust_results(run_dir / "locust")
    counts = relative_history(results.history, samples)
    old = summary["settings"]
    settings = resolve_settings(
        config, profile=_profile(summary),
        cli={"duration_seconds": old["duration_seconds"], "users": old["users"],
             "spawn_rate": old["spawn_rate"], "warmup_fraction": old["warmup_fraction"]},
    )  # fmt: skip
    oom = next((c["value"] for c in summary["criteria"] if c["name"].startswith("server alive")), 0)
    facts = RunFacts.from_locust(
        results,
        samples,
        duration_seconds=settings.duration_seconds,
        load_start_seconds=float(summary.get("load_start_seconds") or 0.0),
        request_counts=counts,
        oom_kills=int(oom or 0),
        fatal_reason=summary.get("fatal_reason"),
        locust_exit_code=summary.get("locust_exit_code"),
        recycles=int(summary["reported"].get("recycles") or 0),
        hit_rate=summary["reported"].get("hit_rate"),
    )
    window = settings.duration_seconds * (1 - settings.warmup_fraction) / 60
    return judge(facts, settings), window


def _profile(summary: Mapping[str, Any]) -> str:
    """The profile the run served (loadtests.run's --profile, default starter)."""
    return str(summary.get("profile") or "starter")


def _users_cache_policy(summary: Mapping[str, Any]) -> str:
    """The users cache policy the run's summary reports, else the one its profile sets.

    Summaries written before the policy was reported lack it; the app's own loader then
    reads it from the profile (with this shell's env, as loadtests.run would start it).
    """
    reported = summary["reported"].get("users_cache_policy")
    if reported:
        return str(reported)
    return server_settings(server_env(_profile(summary), [])).caches.users.policy


def load_runs(calibration_dir: Path) -> list[JudgedRun]:
    """Every run listed in runs.jsonl that left a summary, judged again."""
    config = read_config(DEFAULT_THRESHOLDS_PATH)
    runs: list[JudgedRun] = []
    for line in (calibration_dir / "runs.jsonl").read_text().splitlines():
        record = json.loads(line)
        run_dir = Path(record["run_dir"]) if record.get("run_dir") else None
        if run_dir is None or not (run_dir / "summary.json").exists():
            print(f"calibrate: {record['case']}: no report (exit {record['exit_code']})")
            continue
        verdict, window = judge_run_dir(run_dir, config)
        summary = json.loads((run_dir / "summary.json").read_text())
        runs.append(
            JudgedRun(
                case=record["case"], duration=float(record["duration"]), verdict=verdict,
                recorded_exit_code=int(record["exit_code"]),
                wall_seconds=float(record["wall_seconds"]),
                loadavg=tuple(record.get("loadavg_after") or ()), window_minutes=window,
                by_scenario=summary.get("cache_by_scenario") or {},
                policy=_users_cache_policy(summary),
                old_slope=old_point_slope(verdict, run_dir),
            )
        )  # fmt: skip
    return runs


def _interval_text(run: JudgedRun) -> str:
    trend = run.verdict.trends[SLOPE_CRITERION]
    if trend.interval is None:
        return "n/a"
    i = trend.interval
    return f"{i.slope:+.2f} [{i.low:+.2f},{i.high:+.2f}]"


def print_figures(calibration_dir: Path) -> int:
    """Print per-case verdict counts, intervals, detectable leak rates and machine load."""
    runs = load_runs(calibration_dir)
    by_case: dict[str, list[JudgedRun]] = defaultdict(list)
    for run in runs:
        by_case[run.case].append(run)
    print(f"\ncalibration {calibration_dir}: {len(runs)} runs judged by the current verdict")
    header = (
        f"{'case':<28} {'runs':>4} {'PASS':>4} {'FAIL':>4} {'INCONC':>6}  slope MB/min [95% CI]"
    )
    print(header)
    print("-" * len(header))
    for case, items in by_case.items():
        tally = {
            r: sum(1 for x in items if x.verdict.result == r) for r in (PASS, FAIL, INCONCLUSIVE)
        }
        intervals = "; ".join(_interval_text(x) for x in items)
        intervals = "; ".join(_interval_text(x) for x in items)
        print(f"{case:<28} {len(items):>4} {tally[PASS]:>4} {tally[FAIL]:>4} "
              f"{tally[INCONCLUSIVE]:>6}  {intervals}")  # fmt: skip
        above = [x for x in items if x.interval_above_limit]
        growths = ", ".join(f"{x.verdict.trends[SLOPE_CRITERION].growth_mb:.1f}" for x in above)
        note = f" (growth MB: {growths}; FAIL needs > noise floor)" if above else ""
        print(f"{'':<28} interval above the limit: {len(above)} of {len(items)}{note}")
        old = sum(x.old_rule_fails for x in items)
        print(f"{'':<28} old rule (point slope <= limit, no interval): FAIL {old} of {len(items)}")
        failed = sorted({c.name for x in items for c in x.verdict.criteria if c.result == FAIL})
        if failed:
            print(f"{'':<28} criteria that FAILed: {', '.join(failed)}")
        suggested = [
            x.verdict.suggested_duration_seconds
            for x in items
            if x.verdict.result == INCONCLUSIVE and x.verdict.suggested_duration_seconds
        ]
        if suggested:
            print(f"{'':<28} INCONCLUSIVE runs were told to run "
                  f"{', '.join(f'{(s or 0) / 60:.0f}' for s in suggested)} min")  # fmt: skip
    print("\nminimum detectable leak (whole tree, MB/min) that FAILs a healthy run, by duration")
    print("(slow-leak cases: their known leak taken out first, then the same computation):")
    for case, items in by_case.items():
        if not case.startswith(("healthy", "slow-leak")):
            continue
        rates = sorted(x.detectable_mb_per_min for x in items)
        worst = rates[-1]
        print(f"  {case:<14} median {statistics.median(rates):.2f}, "
              f"in all {len(rates)} runs {worst:.2f}  (per run: "
              + ", ".join(f"{r:.2f}" for r in rates) + ")")  # fmt: skip
    _print_hit_rates(by_case)
    loads = [x.loadavg[0] for x in runs if x.loadavg]
    if loads:
        print(f"\nmachine load (1-min load average after each run, 2 cores): median "
              f"{statistics.median(loads):.2f}, max {max(loads):.2f}")  # fmt: skip
    return 0


def _print_hit_rates(by_case: Mapping[str, list[JudgedRun]]) -> None:
    """Hot-set and cold-scan hit rates (X-Cache answers) per case: mean, spread, each run."""
    for case, items in by_case.items():
        tagged = [x for x in items if x.by_scenario.get("hot_hit_rate_load") is not None]
        if not tagged:
            continue
        policies = ", ".join(sorted({x.policy for x in tagged}))
        print(f"\ncache hit rate by scenario, {case} ({len(tagged)} runs, policy {policies}):")
        for key, label in (
            ("hot_hit_rate_load", "hot set, whole load (scan running)"),
            ("hot_hit_rate_window", "hot set, after warm-up"),
            ("cold_hit_rate_load", "cold scan, whole load"),
            ("cold_hit_rate_window", "cold scan, after warm-up"),
        ):
            values = [
                float(x.by_scenario[key]) for x in tagged if x.by_scenario.get(key) is not None
            ]
            if values:
                spread = max(values) - min(values)
                print(f"  {label:<36} mean {statistics.mean(values):.3f}  spread (max-min) "
                      f"{spread:.3f}  runs: {', '.join(f'{v:.3f}' for v in values)}")  # fmt: skip
