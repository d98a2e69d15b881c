"""`python -m loadtests.run`: start the real server, load it with Locust, guard memory, judge.

Example: `python -m loadtests.run --profile starter --duration 2m --users 50 --plan starter`.
Exit codes: 0 PASS (every criterion held with confidence), 1 FAIL (a hard limit broken or
growth established), 3 INCONCLUSIVE (no limit broken, too short or noisy to tell; the last line
says how long to run instead), 130 interrupted, 2 bad arguments. Reports go to
reports/loadtest-<UTC timestamp>/: summary.json, memory.csv, locust_*.csv, locust.html,
memory.png, server.log and locust.log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from app.core.config import Settings, SettingsError
from loadtests.emulate import Emulation, emulate
from loadtests.guard import MemorySample, TreeSampler
from loadtests.launcher import REPO_ROOT, exit_on_sigterm, free_port, stop_process
from loadtests.locust_io import (
    CACHE_TALLY_FILE,
    read_live_counts,
    read_locust_results,
    start_locust,
    wait_locust,
)
from loadtests.prefill import PrefillResult, run_prefill, store_user_ids
from loadtests.report import build_summary, relative_history, write_memory_csv
from loadtests.scenario_hits import read_tally, scenario_rates
from loadtests.server import (
    CacheReport,
    CacheWatcher,
    cache_report,
    server_env,
    server_settings,
    start_server,
)
from loadtests.stats import theil_sen
from loadtests.thresholds import (
    DEFAULT_THRESHOLDS_PATH,
    LoadSettings,
    Plan,
    parse_duration,
    read_config,
    resolve_plan,
    resolve_settings,
)
from loadtests.verdict import (
    EXIT_INTERRUPTED,
    MIB,
    SLOPE_CRITERION,
    RunFacts,
    format_table,
    judge,
    per_worker_slopes,
    requests_at,
)

EXIT_BAD_ARGUMENTS = 2  # as argparse exits on a bad flag
LOCUST_GRACE_SECONDS = 60.0  # beyond --run-time before the runner stops Locust itself
DEFAULT_APP = "app.main:app"
CLI_THRESHOLDS = (
    "users",
    "spawn_rate",
    "warmup_fraction",
    "max_rss_mb",
    "max_slope_mb_per_min",
    "max_growth_mb_per_1k_requests",
    "confidence",
    "min_growth_mb",
    "recycle_settle_seconds",
    "max_error_ratio",
    "max_p95_ms",
    "max_health_ms",
    "health_interval_seconds",
)


def build_parser() -> argparse.ArgumentParser:
    """The CLI; every threshold flag defaults to None so config/env decide unless given."""
    parser = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__)
    add = parser.add_argument
    add("--profile", default=os.environ.get("PROFILE") or "starter", help="config/<profile>.yaml")
    add("--plan", default=os.environ.get("PLAN") or None, help="emulate a Render plan (starter)")
    add("--duration", default=None, help="run time: 120, 90s, 2m (env DURATION; default 2m)")
    add("--smoke", action="store_true", help="short CI run (<= 45 s) through the same code path")
    add("--port", type=int, default=0, help="server port on 127.0.0.1 (default: a free one)")
    add("--app", default=DEFAULT_APP, help="ASGI app for gunicorn (tests use the leaky one)")
    add("--config", type=Path, default=DEFAULT_THRESHOLDS_PATH, help="thresholds YAML")
    add("--reports-dir", type=Path, default=Path("reports"), help="parent of the run's directory")
    add("--server-env", action="append", default=[], metavar="KEY=VALUE", help="server env extra")
    add("--no-chart", action="store_true", help="skip memory.png")
    add("--no-prefill", action="store_true", help="skip filling the caches before the load")
    for name in CLI_THRESHOLDS:
        kind = int if name == "users" else float
        add(f"--{name.replace('_', '-')}", type=kind, default=None, dest=name)
    return parser


@dataclass
class Outcome:
    """What one run produced, before it is judged."""

    server: Settings  # what the server read: its profile, APP_* env and --server-env
    sampler: TreeSampler | None = None
    locust_code: int | None = None
    caches: CacheReport = field(default_factory=CacheReport)
    interrupted: str | None = None
    server_exit: int | None = None
    emulation: str = ""
    plan: Plan | None = None
    prefill: PrefillResult | None = None
    load_start_seconds: float | None = None  # Locust's start on the sampler's clock


def _out_dir(parent: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir, suffix = parent / f"loadtest-{stamp}", 1
    while out_dir.exists():
        suffix += 1
        out_dir = parent / f"loadtest-{stamp}-{suffix}"
    out_dir.mkdir(parents=True)
    return out_dir


def _load(
    settings: LoadSettings,
    emulation: Emulation,
    out: Outcome,
    *,
    args: argparse.Namespace,
    env: Mapping[str, str],
    port: int,
    out_dir: Path,
) -> None:
    """Start the server with env in the plan, guard it, run Locust until done or fatal; stop."""
    fatal = threading.Event()
    server = start_server(emulation, env=env, app=args.app, port=port, out_dir=out_dir)
    try:
        ready_seconds = server.wait_ready()
        pid = server.pid
        print(f"loadtest: server ready in {ready_seconds:.1f} s (pid {pid})", flush=True)
        out.sampler = sampler = TreeSampler(
            pid,
            is_alive=lambda: server.process.poll() is None,
            cgroup=emulation.memory_files(pid),
            on_fatal=lambda _reason: fatal.set(),
        )
        sampler.sample()
        sampler.start()  # before the prefill: its memory counts towards the peak-RSS check
        if settings.prefill:
            user_ids = store_user_ids(out.server)
            out.prefill = _prefill(settings, sampler, fatal, user_ids=user_ids, port=port)
        if fatal.is_set():
            return  # the server died during the prefill: no load, the verdict says why
        # The hit rate is reported for the load alone: the prefill's misses are by design.
        baseline = cache_report(port) if settings.prefill else CacheReport()
        out.load_start_seconds = load_start = sampler.elapsed_seconds()
        payload_kib = out.server.payload.max_size_kib
        locust = start_locust(settings, port=port, out_dir=out_dir, payload_kib=payload_kib)
        watcher = CacheWatcher(port)
        watcher.start()
        try:
            timeout = settings.duration_seconds + LOCUST_GRACE_SECONDS
            progress = _progress_line(settings, sampler, out_dir, load_start)
            out.locust_code = wait_locust(locust, sampler, fatal, timeout, progress=progress)
        except KeyboardInterrupt:
            # A second Ctrl-C must not skip the cleanup below.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            out.interrupted = "interrupted by Ctrl-C: the run is incomplete"
            print(f"loadtest: {out.interrupted}; stopping Locust and the server", flush=True)
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(locust.pid, signal.SIGINT)  # Locust writes its reports on SIGINT
                locust.wait(timeout=15)
        finally:
            if locust.poll() is None:
                stop_process(locust, timeout=10)
            seen = watcher.stop()
        sampler.stop()
        if not fatal.is_set() and out.interrupted is None:
            out.caches = seen.since(baseline)
    finally:
        if out.sampler is not None:
            out.sampler.stop()
        out.server_exit = server.stop()


def _progress_line(
    settings: LoadSettings, sampler: TreeSampler, out_dir: Path, load_start: float
) -> Callable[[], str]:
    """A callable printing: elapsed, req/s, errors, total RSS and the RSS slope so far."""
    window_start = load_start + settings.warmup_fraction * settings.duration_seconds

    def line() -> str:
        live = read_live_counts(out_dir / "locust")
        samples = [s for s in sampler.samples if s.t_seconds >= load_start]
        rss = f"{samples[-1].total_rss_bytes / MIB:.1f} MB" if samples else "n/a"
        in_window = [s for s in samples if s.t_seconds >= window_start]
        shown, label = (in_window, "window") if len(in_window) >= 8 else (samples, "since start")
        slope = "n/a"
        if len(shown) >= 3:
            fit = theil_sen([s.t_seconds / 60 for s in shown],
                            [s.total_rss_bytes / MIB for s in shown])  # fmt: skip
            slope = f"{fit.slope:+.2f} MB/min ({label}, limit {settings.max_slope_mb_per_min:g})"
        elapsed = sampler.elapsed_seconds() - load_start
        return (
            f"loadtest: {elapsed:5.0f}/{settings.duration_seconds:.0f} s  {live.rps:6.1f} req/s  "
            f"errors {live.failures}/{live.requests}  total RSS {rss}  slope {slope}"
        )

    return line


def _prefill(
    settings: LoadSettings,
    sampler: TreeSampler,
    fatal: threading.Event,
    *,
    user_ids: int,
    port: int,
) -> PrefillResult:
    """Fill ids 1..user_ids into every worker's users cache before Locust, outside the run."""

    def worker_pids() -> set[int]:
        samples = sampler.samples
        return set(samples[-1].worker_rss_bytes) if samples else set()

    result = run_prefill(
        port, user_ids=user_ids, worker_pids=worker_pids,
        max_passes=settings.prefill_max_passes, max_seconds=settings.prefill_max_seconds,
        is_fatal=fatal.is_set,
    )  # fmt: skip
    print(
        f"loadtest: prefill {result.requests} requests over {user_ids} ids in "
        f"{result.seconds:.1f} s ({result.passes:.2f} passes, stop: {result.stop_reason}); "
        f"users cache fill {result.fill_text()}",
        flush=True,
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run one load test and return the process exit code (0 = memory bounded, all passed)."""
    args = build_parser().parse_args(argv)
    os.chdir(REPO_ROOT)
    config = read_config(args.config)
    cli: dict[str, object] = {name: getattr(args, name) for name in CLI_THRESHOLDS}
    if args.no_prefill:
        cli["prefill"] = False
    if args.duration is not None:
        cli["duration_seconds"] = parse_duration(str(args.duration))
    settings = resolve_settings(
        config, profile=args.profile, is_smoke=args.smoke, env=os.environ, cli=cli,
        source=str(args.config),
    )  # fmt: skip
    plan_name = None if (args.plan or "").lower() in ("", "none") else args.plan
    plan = resolve_plan(config, plan_name, source=str(args.config)) if plan_name else None
    try:
        # The app's own loader, on the server's env: what the server will read, or why not.
        env = server_env(args.profile, args.server_env)
        server = server_settings(env)
    except (SettingsError, ValueError) as exc:
        print(f"loadtest: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_ARGUMENTS
    out_dir = _out_dir(args.reports_dir)
    port = args.port or free_port()
    exit_on_sigterm()  # SIGTERM unwinds every finally: Locust, the server, the cgroup
    print(
        f"loadtest: profile={args.profile} app={args.app} duration={settings.duration_seconds:g}s "
        f"users={settings.users} spawn_rate={settings.spawn_rate:g} port={port} -> {out_dir}",
        flush=True,
    )
    started = time.monotonic()
    out = Outcome(server)
    with emulate(plan) as emulation:
        out.emulation, out.plan = emulation.description, emulation.plan
        _load(settings, emulation, out, args=args, env=env, port=port, out_dir=out_dir)
    return _judge_and_report(settings, out, args=args, out_dir=out_dir, started=started)


def _scenario_hit_rates(
    out_dir: Path, samples: Sequence[MemorySample], load_start: float, window_start: float
) -> dict[str, float | int | None]:
    """Hot and cold hit rates from the X-Cache answers: whole load and after warm-up."""
    tally = read_tally(out_dir / CACHE_TALLY_FILE)
    if not tally or not samples:
        return {}
    epoch_zero = samples[0].epoch_seconds - samples[0].t_seconds
    figures: dict[str, float | int | None] = {}
    for label, since in (("load", load_start), ("window", window_start)):
        for scenario, rate in scenario_rates(tally, since_epoch=epoch_zero + since).items():
            figures[f"{scenario}_hit_rate_{label}"] = rate.rate
            figures[f"{scenario}_answers_{label}"] = rate.hits + rate.misses
    return figures


def _scenario_line(figures: dict[str, float | int | None], policy: str, total: float | None) -> str:
    def rate(key: str) -> str:
        value = figures.get(key)
        return "n/a" if not isinstance(value, float) else f"{value:.3f}"

    return (
        f"cache hit rate by scenario (X-Cache, users cache policy={policy}): "
        f"hot {rate('hot_hit_rate_load')} / cold scan {rate('cold_hit_rate_load')} over the load; "
        f"hot {rate('hot_hit_rate_window')} / cold {rate('cold_hit_rate_window')} after warm-up; "
        f"server counters, all requests: {'n/a' if total is None else f'{total:.3f}'}"
    )


def _judge_and_report(
    settings: LoadSettings,
    out: Outcome,
    *,
    args: argparse.Namespace,
    out_dir: Path,
    started: float,
) -> int:
    elapsed = time.monotonic() - started
    sampler = out.sampler
    samples = sampler.samples if sampler else []
    results = read_locust_results(out_dir / "locust")
    counts = relative_history(results.history, samples)
    fatal_reason = sampler.fatal_reason if sampler else "the guard never started"
    # The slope window starts from Locust's start, which follows the prefill: the prefill's
    # samples count towards the peak but never towards the slope or the growth per request.
    # Locust's history stamps are whole seconds (floored), so its first one can fall before
    # the moment Locust was started: the later of the two is the load's start.
    started_at = out.load_start_seconds or 0.0
    load_start = max(counts[0][0], started_at) if counts else started_at
    facts = RunFacts.from_locust(
        results,
        samples,
        duration_seconds=settings.duration_seconds,
        load_start_seconds=load_start,
        request_counts=counts,
        oom_kills=sampler.oom_kills if sampler else 0,
        fatal_reason=fatal_reason or out.interrupted,
        locust_exit_code=out.locust_code,
        recycles=sampler.recycles if sampler else 0,
        hit_rate=out.caches.hit_rate,
    )
    verdict = judge(facts, settings)
    verdict.info["cache_fill"] = out.caches.fill
    by_scenario = _scenario_hit_rates(out_dir, samples, load_start, verdict.window_start_seconds)
    policy = out.server.caches.users.policy
    verdict.info["users_cache_policy"] = policy
    for key, value in by_scenario.items():
        verdict.info[key] = value
    verdict.info["server_exit_code"] = out.server_exit
    if out.prefill is not None:
        verdict.info["prefill_requests"] = out.prefill.requests
        verdict.info["prefill_seconds"] = round(out.prefill.seconds, 1)
    write_memory_csv(
        out_dir / "memory.csv", samples, [requests_at(counts, s.t_seconds) for s in samples]
    )
    summary = build_summary(
        verdict, settings, facts, plan=out.plan,
        run={"profile": args.profile, "app": args.app, "smoke": args.smoke,
             "emulation": out.emulation},
        extra={
            "elapsed_seconds": round(elapsed, 1),
            "cache_workers_reached": out.caches.workers,
            "cache_fill": out.caches.fill,
            "cache_by_scenario": by_scenario,
            "worker_slopes_mb_per_min": per_worker_slopes(samples, verdict.window_start_seconds),
            "prefill": out.prefill.as_summary() if out.prefill else None,
            "load_start_seconds": load_start,
            "limit_hits": sampler.limit_hits if sampler else 0,
            "sampler_max_seconds": sampler.sample_seconds_max if sampler else None,
            "reports_dir": str(out_dir),
        },
    )  # fmt: skip
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not args.no_chart:
        from loadtests.chart import render_chart  # matplotlib is slow to import: only when needed

        render_chart(
            out_dir / "memory.png", samples, verdict, settings, plan=out.plan, request_counts=counts
        )
    print(format_table(verdict))
    print(_scenario_line(by_scenario, policy, out.caches.hit_rate))
    slope_failed = any(c.result != "PASS" and c.name == SLOPE_CRITERION for c in verdict.criteria)
    fill = out.caches.fill
    if slope_failed and fill is not None and fill < 0.95:
        print(
            f"hint: the caches were {fill:.0%} full at the end, so part of the slope is "
            "caches filling up to their bound; a longer run (DURATION=10m) judges steady state"
            + ("." if out.prefill else ", and so does a run with the prefill (no --no-prefill).")
        )
    print(f"loadtest: reports in {out_dir} ({elapsed:.0f} s)", flush=True)
    if out.interrupted is not None:
        return EXIT_INTERRUPTED
    return verdict.exit_code


if __name__ == "__main__":
    sys.exit(main())
