"""Admin actions on every worker: app.core.commands.CommandBus and POST /admin/memory/trace."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app.core import commands
from app.core.commands import BusyError, CommandBus, UnknownWorkerError, Window
from app.core.shared_snapshots import SharedSnapshots
from tests.app.conftest import TestClient


async def _echo(params: dict[str, Any], window: Window) -> dict[str, Any]:
    await asyncio.sleep(float(params.get("sleep", 0)))
    return {"echo": params.get("value")}


async def _boom(params: dict[str, Any], window: Window) -> dict[str, Any]:
    raise ValueError("broken")


async def _hold(params: dict[str, Any], window: Window) -> dict[str, Any]:
    """An action with a window, like a trace: it runs until the window ends."""
    started = time.time()
    await window.wait()
    return {"held_seconds": time.time() - started, "is_cut_short": window.is_cut_short}


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


def test_shared_a_worker_that_stops_mid_window_answers_with_its_window_so_far(
    tmp_path: Path,
) -> None:
    # A leaking worker is recycled every few seconds, often in a trace window: it must answer
    # on its way out, not leave its sender waiting until the deadline for nothing.
    shared = _shared(tmp_path)

    async def scenario() -> list[dict[str, Any]]:
        bus = CommandBus(shared, {"hold": _hold})
        bus.start()
        sending = asyncio.ensure_future(bus.run("hold", {}, seconds=30))
        await asyncio.sleep(2 * commands.POLL_SECONDS)  # the poller took it up
        await bus.stop()
        return await asyncio.wait_for(sending, 5)

    (answer,) = asyncio.run(scenario())
    assert answer["pid"] == os.getpid() and answer["is_cut_short"] is True, answer
    assert answer["held_seconds"] < 5
    assert list(shared.directory.iterdir()) == []


def test_shared_a_command_sent_while_the_worker_drained_is_answered_as_it_stops(
    tmp_path: Path,
) -> None:
    shared = _shared(tmp_path)
    bus = CommandBus(shared, {"hold": _hold})
    now = time.time()
    command = {"id": "late", "action": "hold", "sent_at": now, "ends_at": now + 30}
    (shared.directory / "cmd-late.json").write_text(json.dumps({**command, "deadline": now + 35}))
    asyncio.run(bus.stop())  # never polled before: its last poll takes the command up
    reply = json.loads((shared.directory / f"reply-late-{os.getpid()}.json").read_text())
    assert reply["is_cut_short"] is True and reply["held_seconds"] < 1, reply


def test_shared_a_window_ends_when_its_sender_said_however_late_it_was_seen(
    tmp_path: Path,
) -> None:
    shared = _shared(tmp_path)
    now = time.time()
    for ident, sent_ago, ends_in in (("open", 4.0, 0.3), ("closed", 4.0, -1.0)):
        command = {"id": ident, "action": "hold", "sent_at": now - sent_ago}
        command |= {"ends_at": now + ends_in, "deadline": now + ends_in + 5}
        (shared.directory / f"cmd-{ident}.json").write_text(json.dumps(command))

    async def scenario() -> None:
        bus = CommandBus(shared, {"hold": _hold})
        bus._poll_once()
        await asyncio.gather(*bus._running)

    asyncio.run(scenario())
    reply = json.loads((shared.directory / f"reply-open-{os.getpid()}.json").read_text())
    assert 0.1 < reply["held_seconds"] < 1.0 and reply["is_cut_short"] is False, reply
    # A window that closed before this worker (forked since) saw it is not started at all.
    assert not list(shared.directory.glob("reply-closed-*"))


def test_shared_a_worker_forked_during_the_window_is_waited_for_and_listed(
    tmp_path: Path,
) -> None:
    shared = _shared(tmp_path)
    newcomer = os.getppid()  # alive; it plays a worker forked after the command was sent

    async def newcomer_answers() -> None:
        while not (commands_seen := list(shared.directory.glob("cmd-*.json"))):
            await asyncio.sleep(0.05)
        ident = commands_seen[0].stem.removeprefix("cmd-")
        reply = shared.directory / f"reply-{ident}-{newcomer}.json"
        reply.write_text(json.dumps({"pid": newcomer, "is_running": True}))
        await asyncio.sleep(1.5)  # longer than the sender's own answer takes
        reply.write_text(json.dumps({"pid": newcomer, "echo": "late"}))

    async def scenario() -> list[dict[str, Any]]:
        bus = CommandBus(shared, {"echo": _echo})
        bus.start()
        try:
            newcomer_task = asyncio.ensure_future(newcomer_answers())
            answers = await bus.run("echo", {"value": 1})
            await newcomer_task
            return answers
        finally:
            await bus.stop()

    assert asyncio.run(scenario()) == [
        {"pid": os.getpid(), "echo": 1},
        {"pid": newcomer, "echo": "late"},
    ]


def test_shared_a_sibling_that_exits_without_answering_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commands, "REPLY_MARGIN_SECONDS", 30.0)
    shared = _shared(tmp_path)
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    reaper = threading.Thread(target=sibling.wait)  # reaped, as gunicorn reaps its workers
    reaper.start()
    shared.publish({"pid": sibling.pid})

    async def scenario() -> list[dict[str, Any]]:
        bus = CommandBus(shared, {"echo": _echo})
        bus.start()
        try:
            return await bus.run("echo", {"value": 1})
        finally:
            await bus.stop()

    started = time.monotonic()
    try:
        mine, theirs = asyncio.run(scenario())
    finally:
        reaper.join()
    assert mine == {"pid": os.getpid(), "echo": 1}
    assert theirs == {"pid": sibling.pid, "error": "exited before it saw the command"}
    assert time.monotonic() - started < 10


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
