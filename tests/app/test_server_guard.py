"""ConnectionGuard and connection_cap: the cap, who is shed first, the one-line refusal log."""

from __future__ import annotations

import logging
import resource

import pytest

from app.server.guard import (
    FD_RESERVE,
    HEAD_TIMEOUT,
    REFUSED,
    SHED,
    ConnectionGuard,
    connection_cap,
)


class FakeConnection:
    def __init__(self, name: str) -> None:
        self.name = name
        self.is_shed = False

    def shed(self) -> None:
        self.is_shed = True


def test_under_the_cap_every_connection_is_admitted() -> None:
    guard = ConnectionGuard(cap=2, head_timeout_seconds=1.0)
    assert guard.admit(FakeConnection("a"))
    assert guard.admit(FakeConnection("b"))
    assert guard.open == 2


def test_at_the_cap_the_longest_waiting_connection_is_shed() -> None:
    guard = ConnectionGuard(cap=2, head_timeout_seconds=1.0)
    old, young, new = FakeConnection("old"), FakeConnection("young"), FakeConnection("new")
    for conn in (old, young):
        guard.admit(conn)
        guard.waiting(conn)
    assert guard.admit(new)
    assert old.is_shed
    assert not young.is_shed
    assert guard.open == 2
    assert guard.totals[SHED] == 1


def test_idle_again_moves_a_connection_to_the_back_of_the_queue() -> None:
    guard = ConnectionGuard(cap=2, head_timeout_seconds=1.0)
    first, second = FakeConnection("first"), FakeConnection("second")
    for conn in (first, second):
        guard.admit(conn)
        guard.waiting(conn)
    guard.busy(first)
    guard.waiting(first)  # served a request, idle on keep-alive now: younger than `second`
    guard.admit(FakeConnection("new"))
    assert second.is_shed
    assert not first.is_shed


def test_busy_connections_are_never_shed_and_the_new_one_is_refused() -> None:
    guard = ConnectionGuard(cap=1, head_timeout_seconds=1.0)
    busy = FakeConnection("busy")
    guard.admit(busy)
    guard.waiting(busy)
    guard.busy(busy)
    assert not guard.admit(FakeConnection("new"))
    assert not busy.is_shed
    assert guard.open == 1
    assert guard.totals[REFUSED] == 1


def test_forget_is_idempotent_and_frees_the_slot() -> None:
    guard = ConnectionGuard(cap=1, head_timeout_seconds=1.0)
    conn = FakeConnection("a")
    guard.admit(conn)
    guard.forget(conn)
    guard.forget(conn)
    guard.waiting(conn)  # a closed connection does not come back into the queue
    assert guard.open == 0
    assert guard.admit(FakeConnection("b"))


def test_flush_logs_one_line_per_interval_with_the_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = ConnectionGuard(cap=1, head_timeout_seconds=1.0)
    for _ in range(1000):
        guard.count(HEAD_TIMEOUT)
    guard.count(REFUSED)
    with caplog.at_level(logging.WARNING, logger="app.server.guard"):
        guard.flush()
        guard.flush()  # nothing new: no line
    assert len(caplog.records) == 1
    assert "refused 1, shed 0, head_timeout 1000, accept_error 0" in caplog.records[0].message
    assert guard.totals[HEAD_TIMEOUT] == 1000


@pytest.mark.parametrize(("cap", "timeout"), [(0, 1.0), (1, 0.0)])
def test_guard_rejects_bad_bounds(cap: int, timeout: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        ConnectionGuard(cap=cap, head_timeout_seconds=timeout)


def _fake_rlimit(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, *, can_raise: bool = True
) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []

    def setrlimit(which: int, limits: tuple[int, int]) -> None:
        if not can_raise:
            raise ValueError("not allowed")
        calls.append(limits)

    monkeypatch.setattr(resource, "getrlimit", lambda which: (soft, hard))
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    return calls


def test_cap_is_the_setting_when_the_fd_limit_allows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_rlimit(monkeypatch, 65536, 65536)
    assert connection_cap(768) == (768, None)
    assert calls == []


def test_soft_fd_limit_is_raised_toward_the_hard_one(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_rlimit(monkeypatch, 1024, 4096)
    assert connection_cap(2000) == (2000, None)
    assert calls == [(2000 + FD_RESERVE, 4096)]


def test_cap_is_lowered_below_a_low_hard_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_rlimit(monkeypatch, 1024, 1024)
    cap, why = connection_cap(2000)
    assert cap == 1024 - FD_RESERVE
    assert why is not None
    assert "server.max_connections=2000 lowered to 864" in why


def test_cap_is_lowered_when_the_soft_limit_cannot_be_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_rlimit(monkeypatch, 1024, 8192, can_raise=False)
    assert connection_cap(2000)[0] == 1024 - FD_RESERVE


def test_an_fd_limit_below_the_reserve_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_rlimit(monkeypatch, 100, 100)
    with pytest.raises(ValueError, match="RLIMIT_NOFILE 100"):
        connection_cap(10)
    with pytest.raises(ValueError, match="max_connections must be >= 1"):
        connection_cap(0)
