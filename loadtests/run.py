"""`python -m loadtests.run`: start the real server, load it with Locust, guard memory, judge.

Example: `python -m loadtests.run --profile starter --duration 2m --users 50 --plan starter`.
Exit code 0 only when every criterion of the verdict passed. Reports go to
reports/loadtest-<UTC timestamp>/: summary.json, memory.csv, locust_*.csv, locust.html,
memory.png, server.log and locust.log.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from loadtests.emulate import Emulation, emulate
from loadtests.guard import (
    MIB,
    MemorySample,
    RunFacts,
    TreeSampler,
    Verdict,
    format_table,
    judge,
    requests_at,
)
from loadtests.thresholds import (
    DEFAULT_THRESHOLDS_PATH,
    LoadSettings,
    Plan,
    parse_duration,
    read_config,
    resolve_plan,
    resolve_settings,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only: the load never leaves this machine
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
LOCUST_GRACE_SECONDS = 60.0  # beyond --run-time before the runner stops Locust itself
HEALTH_PROBES = 24  # /health calls at the end, to reach every worker for its cache stats
DEFAULT_APP = "app.main:app"
HEALTH_NAME = "health poller"  # the poller's request name in loadtests/locustfile.py
CLI_THRESHOLDS = (
    "users",
    "spawn_rate",
    "warmup_fraction",
    "max_rss_mb",
    "max_slope_mb_per_min",
    "max_growth_mb_per_1k_requests",
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
    for name in CLI_THRESHOLDS:
        kind = int if name == "users" else float
        add(f"--{name.replace('_', '-')}", type=kind, default=None, dest=name)
    return parser


@dataclass(frozen=True)
class Server:
    """A started gunicorn and where it listens."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _server_env(profile: str, port: int, extra: Sequence[str]) -> dict[str, str]:
    env = {**os.environ, "APP_CONFIG": f"config/{profile}.yaml", "PORT": str(port)}
    env.pop("WEB_CONCURRENCY", None)  # the profile decides the worker count in a load test
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            msg = f"--server-env must be KEY=VALUE, got {item!r}"
            raise ValueError(msg)
        env[key] = value
    return env


def start_server(
    emulation: Emulation,
    *,
    profile: str,
    app: str,
    port: int,
    out_dir: Path,
    extra_env: Sequence[str],
) -> Server:
    """Start gunicorn with the profile, bound to 127.0.0.1 only, inside the emulated plan."""
    bin_dir = Path(sys.executable).parent
    command = [
        *emulation.command_prefix,
        str(bin_dir / "gunicorn"),
        "-c", "config/gunicorn.conf.py",
        "--bind", f"{HOST}:{port}",  # overrides the config's 0.0.0.0: loopback only
        app,
    ]  # fmt: skip
    log_path = out_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=_server_env(profile, port, extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the runner, which stops the server in order
            preexec_fn=emulation.preexec,
        )
    return Server(process, port, log_path)


def http_get(port: int, path: str, *, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET http://127.0.0.1:port/path on a fresh connection; (status, body)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(server: Server, *, timeout: float = READY_TIMEOUT_SECONDS) -> float:
    """Poll /health until 200; return seconds taken.

    Raises:
        RuntimeError: the server exited or did not answer within timeout.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.process.poll() is not None:
            code = server.process.returncode
            msg = f"server exited with {code} before it was ready; see {server.log_path}"
            raise RuntimeError(msg)
        try:
            status, _ = http_get(server.port, "/health", timeout=1.0)
            if status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    msg = f"server not ready on port {server.port} after {timeout:.0f} s; see {server.log_path}"
    raise RuntimeError(msg)


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
    """SIGTERM the process group (graceful), SIGKILL it after timeout; return the exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group too
    return process.wait()


@dataclass(frozen=True)
class CacheReport:
    """The server's caches at the end, summed over the workers /health reached."""

    hit_rate: float | None = None
    fill: float | None = None  # entries / max entries: below 1, caches were still filling
    workers: int = 0


def cache_report(port: int, *, probes: int = HEALTH_PROBES) -> CacheReport:
    """Hit rate and fill over every worker's caches, from /health (one worker answers a call)."""
    per_pid: dict[int, tuple[int, int, int, int]] = {}
    for _ in range(probes):
        try:
            status, body = http_get(port, "/health")
            data = json.loads(body) if status == 200 else {}
        except (OSError, ValueError):
            continue
        caches = data.get("caches") or {}
        totals = caches.get("totals") or {}
        if "pid" not in data or "hits" not in totals:
            continue
        each = (caches.get("caches") or {}).values()
        per_pid[int(data["pid"])] = (
            int(totals["hits"]),
            int(totals.get("misses", 0)),
            sum(int(c.get("size", 0)) for c in each),
            sum(int(c.get("max_size", 0)) for c in each),
        )
    hits, misses, size, capacity = (sum(v[i] for v in per_pid.values()) for i in range(4))
    return CacheReport(
        hit_rate=hits / (hits + misses) if hits + misses else None,
        fill=size / capacity if capacity else None,
        workers=len(per_pid),
    )


def payload_bound_kib(profile: str, env: Mapping[str, str]) -> int:
    """payload.max_size_kib of the profile (env APP_PAYLOAD__MAX_SIZE_KIB wins), default 1024."""
    if env.get("APP_PAYLOAD__MAX_SIZE_KIB"):
        return int(env["APP_PAYLOAD__MAX_SIZE_KIB"])
    try:
        data = yaml.safe_load((REPO_ROOT / "config" / f"{profile}.yaml").read_text()) or {}
        return int((data.get("payload") or {}).get("max_size_kib", 1024))
    except (OSError, ValueError, AttributeError):
        return 1024


def _default_sigint() -> None:
    # A runner started in the background (`cmd &`) inherits SIGINT ignored; Locust needs it back
    # because SIGINT is how it is told to stop *and* write its HTML report.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_locust(
    settings: LoadSettings, *, port: int, out_dir: Path, payload_kib: int
) -> subprocess.Popen[bytes]:
    """Locust headless against 127.0.0.1:port, stopping after the run time by itself."""
    bin_dir = Path(sys.executable).parent
    command = [
        str(bin_dir / "locust"),
        "-f", "loadtests/locustfile.py",
        "--headless",
        "--host", f"http://{HOST}:{port}",
        "--users", str(settings.users),
        "--spawn-rate", f"{settings.spawn_rate:g}",
        "--run-time", f"{settings.duration_seconds:.0f}s",
        "--stop-timeout", "5",
        "--csv", str(out_dir / "locust"),
        "--html", str(out_dir / "locust.html"),
        "--only-summary",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    env = {
        **os.environ,
        "LOADTEST_PAYLOAD_MAX_KIB": str(payload_kib),
        "LOADTEST_MAX_HEALTH_MS": f"{settings.max_health_ms:g}",
        "LOADTEST_HEALTH_INTERVAL_SECONDS": f"{settings.health_interval_seconds:g}",
    }
    with (out_dir / "locust.log").open("wb") as log:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_default_sigint,
        )  # fmt: skip


def wait_locust(
    locust: subprocess.Popen[bytes], sampler: TreeSampler, fatal: threading.Event, timeout: float
) -> int | None:
    """Wait for Locust; stop it at once when the guard reports a fatal event. None if stopped."""
    deadline = time.monotonic() + timeout
    while locust.poll() is None:
        if fatal.is_set() or time.monotonic() > deadline:
            reason = sampler.fatal_reason or f"Locust still running after {timeout:.0f} s"
            print(f"guard: stopping Locust now: {reason}", flush=True)
            os.killpg(locust.pid, signal.SIGINT)  # Locust writes its reports on SIGINT
            try:
                locust.wait(timeout=15)
            except subprocess.TimeoutExpired:
                stop_process(locust, timeout=5)
            return None if fatal.is_set() else locust.returncode
        fatal.wait(0.2)
    return locust.returncode


@dataclass(frozen=True)
class LocustResults:
    """Locust's aggregated figures and the health poller's, from its CSV files."""

    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    health_checks: int = 0
    health_failures: int = 0
    health_max_ms: float | None = None
    history: tuple[tuple[float, int], ...] = ()  # (epoch seconds, cumulative requests)


def _number(row: Mapping[str, str], key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


def read_locust_results(prefix: Path) -> LocustResults:
    """Parse <prefix>_stats.csv and <prefix>_stats_history.csv (missing files give zeros)."""
    rows: list[dict[str, str]] = []
    stats_path = Path(f"{prefix}_stats.csv")
    if stats_path.exists():
        with stats_path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    total = next((r for r in rows if r.get("Name") == "Aggregated"), {})
    health = next((r for r in rows if r.get("Name") == HEALTH_NAME), {})
    history: list[tuple[float, int]] = []
    history_path = Path(f"{prefix}_stats_history.csv")
    if history_path.exists():
        with history_path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                stamp, count = _number(row, "Timestamp"), _number(row, "Total Request Count")
                if row.get("Name") == "Aggregated" and stamp is not None and count is not None:
                    history.append((stamp, int(count)))
    return LocustResults(
        requests=int(_number(total, "Request Count") or 0),
        failures=int(_number(total, "Failure Count") or 0),
        rps=_number(total, "Requests/s") or 0.0,
        p50_ms=_number(total, "50%"),
        p95_ms=_number(total, "95%"),
        p99_ms=_number(total, "99%"),
        health_checks=int(_number(health, "Request Count") or 0),
        health_failures=int(_number(health, "Failure Count") or 0),
        health_max_ms=_number(health, "Max Response Time"),
        history=tuple(history),
    )


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


def _relative_history(
    history: Sequence[tuple[float, int]], samples: Sequence[MemorySample]
) -> list[tuple[float, int]]:
    if not samples:
        return []
    epoch_zero = samples[0].epoch_seconds - samples[0].t_seconds
    return [(stamp - epoch_zero, count) for stamp, count in history]


def _summary(
    verdict: Verdict,
    settings: LoadSettings,
    facts: RunFacts,
    *,
    args: argparse.Namespace,
    plan: Plan | None,
    emulation: str,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "passed": verdict.passed,
        "profile": args.profile,
        "app": args.app,
        "plan": asdict(plan) if plan else None,
        "emulation": emulation,
        "smoke": args.smoke,
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


def _raise_on_sigterm() -> None:
    def _handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through every finally: cgroup, server, Locust

    signal.signal(signal.SIGTERM, _handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one load test and return the process exit code (0 = memory bounded, all passed)."""
    args = build_parser().parse_args(argv)
    os.chdir(REPO_ROOT)
    config = read_config(args.config)
    cli: dict[str, object] = {name: getattr(args, name) for name in CLI_THRESHOLDS}
    if args.duration is not None:
        cli["duration_seconds"] = parse_duration(str(args.duration))
    settings = resolve_settings(
        config, profile=args.profile, is_smoke=args.smoke, env=os.environ, cli=cli,
        source=str(args.config),
    )  # fmt: skip
    plan_name = None if (args.plan or "").lower() in ("", "none") else args.plan
    plan = resolve_plan(config, plan_name, source=str(args.config)) if plan_name else None
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = args.reports_dir / f"loadtest-{stamp}"
    suffix = 1
    while out_dir.exists():
        suffix += 1
        out_dir = args.reports_dir / f"loadtest-{stamp}-{suffix}"
    out_dir.mkdir(parents=True)
    port = args.port or free_port()
    payload_kib = payload_bound_kib(args.profile, _server_env(args.profile, port, args.server_env))
    _raise_on_sigterm()
    print(
        f"loadtest: profile={args.profile} app={args.app} duration={settings.duration_seconds:g}s "
        f"users={settings.users} spawn_rate={settings.spawn_rate:g} port={port} -> {out_dir}",
        flush=True,
    )
    started = time.monotonic()
    fatal = threading.Event()
    sampler: TreeSampler | None = None
    locust_code: int | None = None
    caches = CacheReport()
    interrupted: str | None = None
    server_exit: int | None = None
    with emulate(plan) as emulation:
        server = start_server(
            emulation, profile=args.profile, app=args.app, port=port, out_dir=out_dir,
            extra_env=args.server_env,
        )  # fmt: skip
        try:
            ready_seconds = wait_ready(server)
            pid = server.process.pid
            print(f"loadtest: server ready in {ready_seconds:.1f} s (pid {pid})", flush=True)
            sampler = TreeSampler(
                server.process.pid,
                is_alive=lambda: server.process.poll() is None,
                cgroup=emulation.memory_files(server.process.pid),
                on_fatal=lambda _reason: fatal.set(),
            )
            sampler.sample()
            sampler.start()
            locust = start_locust(settings, port=port, out_dir=out_dir, payload_kib=payload_kib)
            try:
                timeout = settings.duration_seconds + LOCUST_GRACE_SECONDS
                locust_code = wait_locust(locust, sampler, fatal, timeout)
            except KeyboardInterrupt:
                signal.signal(
                    signal.SIGINT, signal.SIG_IGN
                )  # a second Ctrl-C must not skip cleanup
                interrupted = "interrupted by Ctrl-C: the run is incomplete"
                print(f"loadtest: {interrupted}; stopping Locust and the server", flush=True)
                with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(locust.pid, signal.SIGINT)  # Locust writes its reports on SIGINT
                    locust.wait(timeout=15)
            finally:
                if locust.poll() is None:
                    stop_process(locust, timeout=10)
            sampler.stop()
            if not fatal.is_set() and interrupted is None:
                caches = cache_report(port)
        finally:
            if sampler is not None:
                sampler.stop()
            server_exit = stop_process(server.process)
    elapsed = time.monotonic() - started
    samples = sampler.samples if sampler else []
    results = read_locust_results(out_dir / "locust")
    counts = _relative_history(results.history, samples)
    facts = RunFacts(
        samples=samples,
        duration_seconds=settings.duration_seconds,
        load_start_seconds=counts[0][0] if counts else 0.0,
        requests=results.requests,
        failures=results.failures,
        p50_ms=results.p50_ms,
        p95_ms=results.p95_ms,
        p99_ms=results.p99_ms,
        rps=results.rps,
        health_checks=results.health_checks,
        health_failures=results.health_failures,
        health_max_ms=results.health_max_ms,
        request_counts=counts,
        oom_kills=sampler.oom_kills if sampler else 0,
        fatal_reason=(sampler.fatal_reason if sampler else "the guard never started")
        or interrupted,
        locust_exit_code=locust_code,
        recycles=sampler.recycles if sampler else 0,
        hit_rate=caches.hit_rate,
    )
    verdict = judge(facts, settings)
    verdict.info["cache_fill"] = caches.fill
    verdict.info["server_exit_code"] = server_exit
    write_memory_csv(
        out_dir / "memory.csv", samples, [requests_at(counts, s.t_seconds) for s in samples]
    )
    summary = _summary(
        verdict, settings, facts, args=args, plan=emulation.plan, emulation=emulation.description,
        extra={
            "elapsed_seconds": round(elapsed, 1),
            "cache_workers_reached": caches.workers,
            "cache_fill": caches.fill,
            "limit_hits": sampler.limit_hits if sampler else 0,
            "sampler_max_seconds": sampler.sample_seconds_max if sampler else None,
            "reports_dir": str(out_dir),
        },
    )  # fmt: skip
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not args.no_chart:
        from loadtests.chart import render_chart  # matplotlib is slow to import: only when needed

        render_chart(out_dir / "memory.png", samples, verdict, settings, plan=emulation.plan)
    print(format_table(verdict))
    slope_failed = any(not c.passed and c.name.startswith("RSS slope") for c in verdict.criteria)
    if slope_failed and caches.fill is not None and caches.fill < 0.95:
        print(
            f"hint: the caches were {caches.fill:.0%} full at the end, so part of the slope is "
            "caches filling up to their bound; a longer run (DURATION=10m) judges steady state."
        )
    print(f"loadtest: reports in {out_dir} ({elapsed:.0f} s)", flush=True)
    if interrupted is not None:
        return 130
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
