"""Admin actions on every worker: app.core.commands.CommandBus and POST /admin/memory/trace."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from app.core import commands
from app.core.commands import BusyError, CommandBus, UnknownWorkerError
from app.core.shared_snapshots import SharedSnapshots
from tests.app.conftest import TestClient


async def _echo(params: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(float(params.get("sleep", 0)))
    return {"echo": params.get("value")}


async def _boom(params: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("broken")


def _shared(tmp_path: Path) -> SharedSnapshots:
    shared = SharedSnapshots(tmp_path / "shared", max_age_seconds=60)
    shared.ensure_directory()
    return shared


def test_alone_the_action_runs_here() -> None:
    bus = CommandBus(None, {"echo": _echo, "boom": _boom})
    assert asyncio.run(bus.run("echo", {"value": 3})) == [{"pid": os.getpid(), "echo": 3}]
    (failed,) = asyncio.run(bus.run("boom", {}))
    assert failed == {"pid": os.getpid(), "error": "ValueError: broken"}
    (unknown,) = asyncio.run(bus.run("nope", {}))
    assert "unknown action 'nope'" in unknown["error"]


def test_alone_an_exclusive_action_runs_once_at_a_time() -> None:
    bus = CommandBus(None, {"echo": _echo})

    async def race() -> None:
        first = asyncio.ensure_future(bus.run("echo", {"sleep": 0.2}, exclusive=True))
        await asyncio.sleep(0.05)
        with pytest.raises(BusyError, match="already running"):
            await bus.run("echo", {}, exclusive=True)
        await first
        await bus.run("echo", {}, exclusive=True)  # free again

    asyncio.run(race())


def test_shared_the_worker_answers_its_own_command_file(tmp_path: Path) -> None:
    shared = _shared(tmp_path)

    async def scenario() -> list[dict[str, Any]]:
        bus = CommandBus(shared, {"echo": _echo})
        bus.start()
        try:
            return await bus.run("echo", {"value": "hi"})
        finally:
            await bus.stop()

    assert asyncio.run(scenario()) == [{"pid": os.getpid(), "echo": "hi"}]
    assert sorted(p.name for p in shared.directory.iterdir()) == []  # nothing left behind


def test_shared_a_silent_sibling_is_reported_not_waited_for_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commands, "REPLY_MARGIN_SECONDS", 0.5)
    shared = _shared(tmp_path)
    sibling = os.getppid()  # alive, but runs no bus
    shared.publish({"pid": sibling})

    async def scenario() -> list[dict[str, Any]]:
        bus = CommandBus(shared, {"echo": _echo})
        bus.start()
        try:
            assert bus.worker_pids() == [os.getpid(), sibling]
            with pytest.raises(UnknownWorkerError, match=str(sibling)):
                await bus.run("echo", {}, pid=1)
            return await bus.run("echo", {"value": 1})
        finally:
            await bus.stop()

    started = time.monotonic()
    mine, theirs = asyncio.run(scenario())
    assert mine == {"pid": os.getpid(), "echo": 1}
    assert theirs == {"pid": sibling, "error": "no answer before the deadline"}
    assert time.monotonic() - started < 3


def test_shared_lock_of_a_dead_trace_is_taken_over(tmp_path: Path) -> None:
    shared = _shared(tmp_path)
    lock = shared.directory / "lock-echo"
    lock.write_text(repr(time.time() + 60))
    bus = CommandBus(shared, {"echo": _echo})
    with pytest.raises(BusyError):
        asyncio.run(bus.run("echo", {}, exclusive=True))
    lock.write_text(repr(time.time() - 1))  # its deadline passed: the holder died

    async def scenario() -> list[dict[str, Any]]:
        bus.start()
        try:
            return await bus.run("echo", {"value": 2}, exclusive=True)
        finally:
            await bus.stop()

    assert asyncio.run(scenario())[0]["echo"] == 2
    assert not lock.exists()


def test_expired_commands_and_stale_replies_are_removed(tmp_path: Path) -> None:
    shared = _shared(tmp_path)
    old = shared.directory / "cmd-old.json"
    old.write_text(json.dumps({"id": "old", "action": "echo", "deadline": time.time() - 1}))
    reply = shared.directory / "reply-x-1.json"
    reply.write_text("{}")
    os.utime(reply, (time.time() - 3600, time.time() - 3600))
    bus = CommandBus(shared, {"echo": _echo})
    bus._poll_once()
    assert not old.exists() and not reply.exists()


def test_trace_endpoint_reports_sites_and_routes(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.post("/admin/memory/trace", params={"seconds": 0.2}, headers=admin_headers)
    assert response.status_code == 200, response.text
    (worker,) = response.json()["workers"]
    assert worker["pid"] == os.getpid()
    assert {"top", "routes", "traced_bytes", "tracemalloc_overhead_bytes"} <= set(worker)


@pytest.mark.parametrize("seconds", ["0", "-1", "61", "abc"])
def test_trace_seconds_outside_the_bound_is_422(
    client: TestClient, admin_headers: dict[str, str], seconds: str
) -> None:
    response = client.post(
        "/admin/memory/trace", params={"seconds": seconds}, headers=admin_headers
    )
    assert response.status_code == 422


def test_trace_of_a_pid_that_is_no_worker_is_404(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.post(
        "/admin/memory/trace", params={"seconds": 0.1, "pid": 1}, headers=admin_headers
    )
    assert response.status_code == 404 and "allowed" in response.json()["detail"]
