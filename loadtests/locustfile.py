"""Locust scenarios: hot users (Zipf), cold scan, large payloads and a Render-like health poller.

Run by `python -m loadtests.run`, which passes the store size and the payload bound through env:
LOADTEST_USER_IDS (ids 1..N, default 10000), LOADTEST_PAYLOAD_MAX_KIB (the profile's
payload.max_size_kib), LOADTEST_MAX_HEALTH_MS and LOADTEST_HEALTH_INTERVAL_SECONDS.
The shape reads -u (peak users), -r (spawn rate) and -t (run time) from Locust's own options.

Writes scenario (off unless LOADTEST_WRITES=1; needs ADMIN_TOKEN, the server's): a writer
PATCHes hot users (about 5 % of all requests), then after LOADTEST_STALE_BOUND_MS (100)
reads each one back on fresh connections from the target and from every other instance in
LOADTEST_OTHER_HOSTS (comma-separated base URLs). A read that still shows an
older value is a failure named "stale after write"; at the end each host's /health tiers
(per-worker and Key Value hit rates) are printed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locust import FastHttpUser, LoadTestShape, between, constant_pacing, events, task

# Locust puts only this file's directory on sys.path; the repo root makes `loadtests` importable.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from loadtests.scenario_hits import (  # noqa: E402  (needs sys.path above)
    CACHE_HEADER,
    HEALTH_NAME,
    CacheTally,
)
from loadtests.shape import ColdScan, ZipfIds, users_at  # noqa: E402  (needs sys.path above)

logger = logging.getLogger(__name__)

USER_IDS = int(os.environ.get("LOADTEST_USER_IDS", "10000"))
PAYLOAD_MAX_KIB = int(os.environ.get("LOADTEST_PAYLOAD_MAX_KIB", "256"))
MAX_HEALTH_MS = float(os.environ.get("LOADTEST_MAX_HEALTH_MS", "1000"))
HEALTH_INTERVAL_SECONDS = float(os.environ.get("LOADTEST_HEALTH_INTERVAL_SECONDS", "5"))
CACHE_TALLY_PATH = os.environ.get("LOADTEST_CACHE_TALLY_PATH")  # where hits per scenario go
OVERSIZE_SHARE = 0.05  # share of /payload requests sent over the bound, expecting 422
DEFAULT_RUN_TIME_SECONDS = 120.0
DEFAULT_PEAK_USERS = 50
DEFAULT_SPAWN_RATE = 10.0

WRITES = os.environ.get("LOADTEST_WRITES", "") == "1"
STALE_BOUND_SECONDS = float(os.environ.get("LOADTEST_STALE_BOUND_MS", "100")) / 1000
OTHER_HOSTS = [h for h in os.environ.get("LOADTEST_OTHER_HOSTS", "").split(",") if h]
READS_PER_HOST = 2  # fresh connections per host after each write: they land on any worker
STALE_NAME = "/users/{id} [stale after write]"
_writing: set[int] = set()  # ids a writer is checking: two writers never race on one id

_zipf = ZipfIds(USER_IDS)
_cold = ColdScan(USER_IDS)  # shared by every cold-scan user of this Locust process
_tally = CacheTally()  # X-Cache answers per scenario ([hot], [cold]) and second


class HotUser(FastHttpUser):
    """Reads popular users again and again: the cache should serve most of them."""

    weight = 6
    wait_time = between(0.02, 0.2)

    @task
    def read_hot_user(self) -> None:
        self.client.get(f"/users/{_zipf.draw()}", name="/users/{id} [hot]")


class ColdScanUser(FastHttpUser):
    """Reads every user once in turn: all misses, so caches must evict to stay bounded."""

    weight = 2
    wait_time = between(0.02, 0.2)

    @task
    def read_cold_user(self) -> None:
        self.client.get(f"/users/{_cold.next_id()}", name="/users/{id} [cold]")


class PayloadUser(FastHttpUser):
    """Asks for large responses within the bound, sometimes over it (422 is the right answer)."""

    weight = 1
    wait_time = between(0.1, 0.5)

    @task
    def read_payload(self) -> None:
        if random.random() < OVERSIZE_SHARE:
            size = PAYLOAD_MAX_KIB + random.randint(1, PAYLOAD_MAX_KIB)
            with self.client.get(
                f"/payload?size_kib={size}", name="/payload [over bound]", catch_response=True
            ) as response:
                if response.status_code == 422:
                    response.success()
                else:
                    response.failure(f"expected 422 over the bound, got {response.status_code}")
            return
        size = random.randint(1, PAYLOAD_MAX_KIB)
        self.client.get(f"/payload?size_kib={size}", name="/payload [in bound]")


class HealthPoller(FastHttpUser):
    """Polls /health every few seconds like Render; a failure or a slow answer fails the run."""

    fixed_count = 1
    wait_time = constant_pacing(HEALTH_INTERVAL_SECONDS)

    @task
    def poll_health(self) -> None:
        with self.client.get("/health", name=HEALTH_NAME, catch_response=True) as response:
            elapsed_ms = response.request_meta["response_time"]
            if response.status_code != 200:
                response.failure(f"health returned {response.status_code}")
            elif elapsed_ms > MAX_HEALTH_MS:
                response.failure(f"health took {elapsed_ms:.0f} ms > {MAX_HEALTH_MS:.0f} ms")


if WRITES:

    class WriterUser(FastHttpUser):
        """PATCHes hot users, then checks no worker of any host serves the old value after
        the bound. Weight 2 against 9 for the other users: PATCH is ~5 % of all requests."""

        weight = 2
        wait_time = between(0.05, 0.2)

        @task
        def write_then_read_everywhere(self) -> None:
            user_id = _zipf.draw()
            while user_id in _writing:  # another writer's newer value is not a stale read
                user_id = _zipf.draw()
            _writing.add(user_id)
            try:
                self._write_then_read(user_id)
            finally:
                _writing.discard(user_id)

        def _write_then_read(self, user_id: int) -> None:
            city = f"w{random.getrandbits(40):x}"
            headers = {"Authorization": f"Bearer {os.environ.get('ADMIN_TOKEN', '')}"}
            with self.client.patch(
                f"/users/{user_id}", json={"city": city}, headers=headers,
                name="/users/{id} [patch]", catch_response=True,
            ) as response:  # fmt: skip
                if response.status_code != 200:
                    response.failure(f"PATCH returned {response.status_code}")
                    return
            time.sleep(STALE_BOUND_SECONDS)
            for host in [self.host, *OTHER_HOSTS]:
                for _ in range(READS_PER_HOST):
                    with self.client.get(
                        f"{host}/users/{user_id}", headers={"Connection": "close"},
                        name=STALE_NAME, catch_response=True,
                    ) as read:  # fmt: skip
                        if read.status_code == 200 and read.json()["city"] != city:
                            read.failure(f"user {user_id} still stale {STALE_BOUND_SECONDS}s after")


def _print_tiers(environment: Any, **_kwargs: Any) -> None:
    if not WRITES:
        return
    for host in [environment.host, *OTHER_HOSTS]:
        seen: dict[int, dict[str, Any]] = {}
        for _ in range(12):  # several probes reach several workers
            try:
                with urllib.request.urlopen(f"{host}/health", timeout=2) as answer:
                    body = json.load(answer)
            except OSError:
                continue
            if "pid" in body and body.get("tiers"):
                seen[body["pid"]] = body["tiers"]
        for pid, tiers in sorted(seen.items()):
            print(
                f"tiers {host} pid {pid}: l1_hit_rate={tiers['l1_hit_rate']} "
                f"l2_hit_rate={tiers['l2_hit_rate']} l2_hits={tiers['l2_hits']} "
                f"invalidations={tiers['invalidations']} degraded={tiers['is_degraded']}"
            )


class RampSteadySpikeIdle(LoadTestShape):
    """Ramp, steady (half the peak), spike (the peak), steady, then idle (only the poller)."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        run_time = float(getattr(options, "run_time", None) or DEFAULT_RUN_TIME_SECONDS)
        peak = int(getattr(options, "num_users", None) or DEFAULT_PEAK_USERS)
        spawn_rate = float(getattr(options, "spawn_rate", None) or DEFAULT_SPAWN_RATE)
        count = users_at((time.perf_counter() - self.start_time) / run_time, peak)
        return None if count is None else (count, spawn_rate)


def _fail_on_health(environment: Any, **_kwargs: Any) -> None:
    # Only ever raise the exit code: setting 0 would hide Locust's own request failures.
    entry = environment.stats.entries.get((HEALTH_NAME, "GET"))
    if entry is None or entry.num_requests == 0 or entry.num_failures > 0:
        failures = entry.num_failures if entry else 0
        logger.error("health poller: %d failure(s) (or no check ran); exit code 1", failures)
        environment.process_exit_code = 1


def _count_cache_answer(name: str, response: Any = None, **_kwargs: Any) -> None:
    headers = getattr(response, "headers", None)
    if headers is not None:
        _tally.record(name, headers.get(CACHE_HEADER), time.time())


def _write_tally(environment: Any, **_kwargs: Any) -> None:
    del environment
    if CACHE_TALLY_PATH:
        _tally.write(Path(CACHE_TALLY_PATH))


# Registered by a call, not a decorator: locust's add_listener is untyped.
_add_quitting_listener: Callable[[Callable[..., None]], object] = events.quitting.add_listener
_add_quitting_listener(_fail_on_health)
_add_quitting_listener(_write_tally)
_add_request_listener: Callable[[Callable[..., None]], object] = events.request.add_listener
_add_request_listener(_count_cache_answer)
_add_quitting_listener(_print_tiers)
