"""The real service under the real gunicorn: routes, RSS recycling under traffic, SIGTERM."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from loadtests.launcher import REPO_ROOT, free_port, isolated_env
from tests.e2e.conftest import ServerFactory

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
MIB = 1024 * 1024


def test_routes_answer_over_http(start_server: ServerFactory) -> None:
    server = start_server({"ADMIN_TOKEN": "e2e-admin-token-0123"})
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert client.get("/users/1").status_code == 200
        assert client.get("/users/10000").status_code == 200
        assert client.get("/users/10001").status_code == 404
        assert client.get("/users/abc").status_code == 422
        assert client.get("/payload", params={"size_kib": 4}).content == bytes(4096)
        assert client.get("/admin/caches").status_code == 401
        assert client.get(
            "/admin/caches", headers={"Authorization": "Bearer e2e-admin-token-0123"}
        ).is_success
        assert "x-request-id" in health.headers
        # Whichever worker answers, /metrics reports both workers (labelled by pid).
        deadline = time.monotonic() + 10
        pids: set[str] = set()
        while len(pids) < 2 and time.monotonic() < deadline:
            text = client.get("/metrics").text
            pids = set(re.findall(r'app_process_rss_bytes\{pid="(\d+)"\}', text))
            time.sleep(0.1)
        assert len(pids) == 2, pids


def test_uvicorn_worker_is_selectable(start_server: ServerFactory) -> None:
    server = start_server({"APP_SERVER__WORKER_CLASS": "uvicorn"}, workers=1)
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        assert client.get("/users/3").status_code == 200
    assert "uvicorn_worker.UvicornWorker" in server.log()


def _worker_rss_mb(server_url: str) -> float:
    with httpx.Client(base_url=server_url, timeout=5.0) as client:
        samples = [int(client.get("/health").json()["rss_bytes"]) for _ in range(4)]
    return max(samples) / MIB


def _profile_without_memory_limits(tmp_path: Path) -> Path:
    """config/local.yaml with the cleaner's MiB limits unset (they must sit below the RSS cap)."""
    data = yaml.safe_load((REPO_ROOT / "config" / "local.yaml").read_text())
    for level in ("soft", "hard", "recycle"):
        data["memory"][f"{level}_limit_mb"] = None
    path = tmp_path / "no-memory-limits.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_worker_recycled_on_rss_under_traffic_without_failed_requests(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    probe = start_server(workers=1)
    boot_mb = _worker_rss_mb(probe.url)
    probe.stop()
    # A cap a few MiB above a fresh worker: filling the users cache crosses it. Reading all
    # 10,000 users grows one worker by about 8 MiB; with two workers each sees about half
    # the ids, so the cap must sit below ~4 MiB of growth to trip reliably on a busy machine.
    cap_mb = int(boot_mb) + 3
    server = start_server(
        {
            # The cap is far below local.yaml's cleaner limits, which settings reject
            # (a worker recycled before the cleaner acts); this test is about the cap alone.
            "APP_CONFIG": str(_profile_without_memory_limits(tmp_path)),
            "APP_SERVER__MAX_WORKER_RSS_MB": str(cap_mb),
            # Either the check before each response's headers or the watchdog thread trips;
            # both go through memsafe.drain (Connection: close first, then exit).
            "APP_SERVER__RSS_CHECK_INTERVAL_SECONDS": "0.5",
            "APP_MONITOR__ALERT_RSS_MB": str(cap_mb + 100),
        }
    )
    failures: list[str] = []
    done = threading.Event()
    workers_before = {child.pid for child in psutil.Process(server.process.pid).children()}

    def traffic(offset: int) -> None:
        user_id = offset
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            while not done.is_set():
                try:
                    response = client.get(f"/users/{user_id % 10_000 + 1}")
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:100]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                user_id += 7

    threads = [threading.Thread(target=traffic, args=(i * 2500,)) for i in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 45.0
    while time.monotonic() < deadline and "recycled on RSS" not in server.log():
        time.sleep(0.2)
    time.sleep(1.5)  # traffic continues while the replacement worker boots
    done.set()
    for thread in threads:
        thread.join(15)
    log = server.log()
    assert "recycled on RSS" in log, log[-3000:]
    assert failures == [], failures[:5]
    workers_after = {child.pid for child in psutil.Process(server.process.pid).children()}
    assert workers_after - workers_before, "no replacement worker was forked"
    answered: set[int] = set()
    for _ in range(40):  # fresh connections spread over the workers, replacements included
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            answered.add(client.get("/health").json()["pid"])
    assert answered & (workers_after - workers_before), (answered, workers_after)


def test_sigterm_exits_cleanly_within_graceful_timeout(start_server: ServerFactory) -> None:
    server = start_server({"APP_SERVER__GRACEFUL_TIMEOUT_SECONDS": "5"})
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        assert client.get("/users/1").status_code == 200
    started = time.monotonic()
    assert server.stop(timeout_seconds=10) == 0
    assert time.monotonic() - started < 5.0
    log = server.log()
    assert log.count("worker stopped: cleanup, caches and store closed") == 2
    assert "Traceback" not in log


def test_a_stray_app_variable_is_warned_about_once_in_the_app_format(
    start_server: ServerFactory,
) -> None:
    """The settings check, gunicorn.conf.py and each worker load the settings too: one line."""
    server = start_server({"APP_NOT_A_SETTING": "1"})
    assert server.stop() == 0
    warning = "env APP_NOT_A_SETTING matches no settings key and is ignored"
    lines = [line for line in server.log().splitlines() if warning in line]
    assert len(lines) == 1, server.log()
    assert " WARNING pid=" in lines[0]  # the app's formatter, not logging's last resort


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"APP_CONFIG": "config/nope.yaml"}, "config/nope.yaml' (from APP_CONFIG) not found"),
        ({"APP_SERVER__WORKERS": "0"}, "env APP_SERVER__WORKERS: key 'server.workers'"),
        ({"PORT": "http"}, "env PORT='http' is not a port"),
    ],
)
def test_invalid_settings_stop_the_start_command_with_one_message(
    env: dict[str, str], expected: str
) -> None:
    """The image's and the launcher's start command: the settings check or gunicorn.conf.py."""
    full_env = isolated_env({"APP_CONFIG": "config/local.yaml", "PORT": str(free_port()), **env})
    result = subprocess.run(
        [sys.executable, "-m", "app.server.serve"],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
