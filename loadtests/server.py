"""The server under test: its env and settings, started in a plan, and its caches read back."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from app.core.config import CONFIG_ENV_VAR, DEFAULT_CONFIG_PATH, Settings, load_settings
from loadtests.emulate import Emulation
from loadtests.launcher import REPO_ROOT, GunicornServer, http_get

HEALTH_PROBES = 24  # /health calls at the end, to reach every worker for its cache stats


def server_env(profile: str, extra: Sequence[str]) -> dict[str, str]:
    """The server's env: this process's, config/<profile>.yaml, then each KEY=VALUE of extra.

    Raises:
        ValueError: an item of extra is not KEY=VALUE.
    """
    env = {**os.environ, "APP_CONFIG": f"config/{profile}.yaml"}
    env.pop("WEB_CONCURRENCY", None)  # the profile decides the worker count in a load test
    # The prefill and the cache report read pid and cache stats from /health, which the
    # Render profiles show only with health.details (or the admin token).
    env.setdefault("APP_HEALTH__DETAILS", "true")
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            msg = f"--server-env must be KEY=VALUE, got {item!r}"
            raise ValueError(msg)
        env[key] = value
    return env


def server_settings(env: Mapping[str, str]) -> Settings:
    """The settings a server started with `env` reads, from the app's own loader.

    Precedence is the app's: APP_* and WEB_CONCURRENCY in env > the YAML profile named by env's
    APP_CONFIG (relative to the repository, where the server runs) > the defaults.

    Raises:
        SettingsError: the loader's message (file or env var, key, value, what is allowed).
    """
    profile = Path(env.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)
    return load_settings(profile if profile.is_absolute() else REPO_ROOT / profile, environ=env)


def start_server(
    emulation: Emulation,
    *,
    env: Mapping[str, str],
    app: str,
    port: int,
    out_dir: Path,
) -> GunicornServer:
    """Start gunicorn with env on 127.0.0.1:port inside the emulated plan (not yet ready).

    The server leads its own process group: Ctrl-C reaches the runner alone, which then stops
    the server in order.
    """
    server = GunicornServer(
        app,
        env=env,
        port=port,
        log_path=out_dir / "server.log",
        is_group=True,
        command_prefix=emulation.command_prefix,
        preexec_fn=emulation.preexec,
    )
    return server.start()


@dataclass(frozen=True)
class CacheReport:
    """The server's caches at the end, summed over the workers /health reached."""

    hit_rate: float | None = None
    fill: float | None = None  # entries / max entries: below 1, caches were still filling
    workers: int = 0
    # pid -> (hits, misses) as /health reported them, to take one report from another.
    counts: Mapping[int, tuple[int, int]] = field(default_factory=dict)

    def since(self, baseline: CacheReport) -> CacheReport:
        """This report with hits and misses counted only after `baseline` (e.g. the prefill).

        A worker seen in both is taken as the difference; a worker that appeared since (a
        recycle) counts whole; a worker the baseline saw but this report did not is left out.
        """
        hits = misses = 0
        for pid, (pid_hits, pid_misses) in self.counts.items():
            base_hits, base_misses = baseline.counts.get(pid, (0, 0))
            hits += max(0, pid_hits - base_hits)
            misses += max(0, pid_misses - base_misses)
        rate = hits / (hits + misses) if hits + misses else None
        return replace(self, hit_rate=rate)

    def merged(self, newer: CacheReport) -> CacheReport:
        """`newer`, also counting the workers only this report saw (e.g. since recycled)."""
        counts = {**self.counts, **newer.counts}
        hits = sum(h for h, _ in counts.values())
        misses = sum(m for _, m in counts.values())
        rate = hits / (hits + misses) if hits + misses else None
        return replace(newer, counts=counts, hit_rate=rate)


class CacheWatcher:
    """Polls the workers' cache counts during the load, so recycled workers still count.

    A worker replaced by a recycle takes its counters with it; the last counts seen of it
    stay in the report. Thread safety: one background thread writes `report`; read it after
    stop().
    """

    def __init__(self, port: int, *, interval_seconds: float = 5.0, probes: int = 6) -> None:
        self._port = port
        self._interval_seconds = interval_seconds
        self._probes = probes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cache-watcher", daemon=True)
        self.report = CacheReport()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> CacheReport:
        """Stop polling, take one last full report, and return everything seen."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval_seconds + 30)
        self.report = self.report.merged(cache_report(self._port))
        return self.report

    def _run(self) -> None:
        while not self._stop.wait(self._interval_seconds):
            self.report = self.report.merged(cache_report(self._port, probes=self._probes))


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
        counts={pid: (v[0], v[1]) for pid, v in per_pid.items()},
    )
