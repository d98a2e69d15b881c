"""RSSRecycler and request_worker_exit against fake gunicorn workers and a real SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.workers.gasgi import ASGIWorker
from uvicorn_worker import UvicornWorker

import memsafe.testing
from memsafe import _worker, recycle
from memsafe.drain import DrainMiddleware
from memsafe.recycle import RSSRecycler, request_worker_exit
from tests.conftest import FakeClock

MIB = 1024 * 1024


class GunicornLikeWorker:
    """Stands for one of gunicorn's own workers: it polls ``alive``."""

    def __init__(self) -> None:
        self.alive = True


GunicornLikeWorker.__module__ = "gunicorn.workers.fake"


class UvicornLikeWorker:
    """Stands for uvicorn_worker.UvicornWorker: ``alive`` is never read."""

    def __init__(self) -> None:
        self.alive = True
        self.sockets: list[socket.socket] = []


UvicornLikeWorker.__module__ = "uvicorn_worker._workers"


class Rss:
    """A settable RSS probe in MiB."""

    def __init__(self, mb: float = 100) -> None:
        self.mb = mb
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return int(self.mb * MIB)


@pytest.fixture(autouse=True)
def _clean_recycle_state() -> Iterator[None]:
    memsafe.testing.reset()
    yield
    memsafe.testing.reset()


@pytest.fixture
def sigterms() -> Iterator[list[int]]:
    """Catch SIGTERM sent to this process instead of dying of it."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    yield received
    signal.signal(signal.SIGTERM, previous)


def _forked(recycler: RSSRecycler, worker: Any) -> RSSRecycler:
    recycler.post_fork(object(), worker)
    return recycler


# --- construction -------------------------------------------------------------------------


@pytest.mark.parametrize("cap", [0, -5, 2_000_000])
def test_cap_out_of_range_is_rejected(cap: float) -> None:
    with pytest.raises(
        ValueError, match=rf"max_worker_rss_mb must be in \(0, 1048576\] MiB, got {cap}"
    ):
        RSSRecycler(cap)


@pytest.mark.parametrize("cap", ["512", True])
def test_cap_of_wrong_type_is_rejected(cap: Any) -> None:
    with pytest.raises(TypeError, match="max_worker_rss_mb must be None or a number"):
        RSSRecycler(cap)


@pytest.mark.parametrize("interval", [0, -1, 7200])
def test_check_interval_out_of_range_is_rejected(interval: Any) -> None:
    with pytest.raises(ValueError, match=r"check_interval_seconds must be None or in \(0, 3600\]"):
        RSSRecycler(256, interval)


@pytest.mark.parametrize("interval", ["1", True])
def test_check_interval_of_wrong_type_is_rejected(interval: Any) -> None:
    with pytest.raises(TypeError, match="check_interval_seconds must be None or a number"):
        RSSRecycler(256, interval)


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_bad_overlap_max_workers_is_rejected(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="overlap_max_workers must be"):
        RSSRecycler(256, overlap_max_workers=value)


def test_without_a_cap_nothing_is_probed_but_recycle_still_drains(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rss = Rss(10_000)
    reasons: list[str] = []
    worker = GunicornLikeWorker()
    recycler = _forked(RSSRecycler(None, 0.01, rss_probe=rss, exit_request=reasons.append), worker)
    recycler.post_worker_init(worker)
    assert recycler._watchdog is None
    assert recycler.check() is False
    assert rss.reads == 0
    assert recycle.recycle_worker("cleaner says so") is True
    assert reasons == ["cleaner says so"]  # no loop bound: the drain exits at once
    with caplog.at_level(logging.WARNING, logger="memsafe.recycle"):
        recycler.worker_exit(object(), worker)
    assert "exits, recycled on request (last 0.0 MiB, cap none MiB" in caplog.text


def test_hooks_pass_gunicorn_setting_validation() -> None:
    recycler = RSSRecycler(256)
    cfg = Config()
    for name, hook in recycler.hooks().items():
        cfg.set(name, hook)
    assert set(recycler.hooks()) == {
        "post_fork",
        "post_worker_init",
        "worker_exit",
        "child_exit",
        "on_exit",
    }
    cfg.set("pre_request", recycler.pre_request)  # for is_wrapping_app=False
    assert cfg.post_fork == recycler.post_fork


# --- worker classes -----------------------------------------------------------------------


def test_gunicorn_workers_honour_alive_and_uvicorn_worker_does_not() -> None:
    assert _worker._honours_alive_flag(ASGIWorker.__new__(ASGIWorker))
    assert not _worker._honours_alive_flag(UvicornWorker.__new__(UvicornWorker))
    assert not _worker._honours_alive_flag(object())


def test_a_subclass_of_a_gunicorn_worker_honours_alive() -> None:
    # As the template's app.server.worker.GuardedASGIWorker is: defined outside gunicorn.
    class GuardedLikeWorker(ASGIWorker):  # type: ignore[misc]  # gunicorn has no type hints
        pass

    GuardedLikeWorker.__module__ = "app.server.worker"
    assert _worker._honours_alive_flag(object.__new__(GuardedLikeWorker))


def test_exit_of_a_gunicorn_worker_clears_alive(caplog: pytest.LogCaptureFixture) -> None:
    worker = GunicornLikeWorker()
    recycle.record_worker(worker)
    assert recycle.current_worker() is worker
    with caplog.at_level(logging.WARNING, logger="memsafe.recycle"):
        request_worker_exit("test", kill=_no_kill)
    assert worker.alive is False
    assert recycle.is_exit_requested()
    assert f"recycling worker pid {os.getpid()} (test): worker.alive = False" in caplog.text


def test_exit_of_a_uvicorn_worker_sends_sigterm_to_itself(sigterms: list[int]) -> None:
    worker = UvicornLikeWorker()
    recycle.record_worker(worker)
    request_worker_exit("test")
    assert sigterms == [signal.SIGTERM]
    assert worker.alive is True


def test_exit_without_a_recorded_worker_sends_sigterm() -> None:
    kills: list[tuple[int, int]] = []
    request_worker_exit("no gunicorn", kill=lambda pid, sig: kills.append((pid, sig)))
    assert kills == [(os.getpid(), signal.SIGTERM)]


def test_exit_is_requested_once(caplog: pytest.LogCaptureFixture) -> None:
    kills: list[tuple[int, int]] = []
    with caplog.at_level(logging.DEBUG, logger="memsafe.recycle"):
        request_worker_exit("first", kill=lambda pid, sig: kills.append((pid, sig)))
        request_worker_exit("second", kill=lambda pid, sig: kills.append((pid, sig)))
    assert len(kills) == 1
    assert "already requested (first); ignoring 'second'" in caplog.text


def test_recording_a_worker_clears_an_old_exit_request() -> None:
    request_worker_exit("before fork", kill=lambda pid, sig: None)
    recycle.record_worker(GunicornLikeWorker())
    assert not recycle.is_exit_requested()


def _no_kill(pid: int, sig: int) -> None:
    raise AssertionError("no signal expected")


# --- RSSRecycler ---------------------------------------------------------------------------


def test_pre_request_under_the_cap_does_nothing() -> None:
    rss = Rss(100)
    worker = GunicornLikeWorker()
    recycler = _forked(RSSRecycler(256, rss_probe=rss), worker)
    recycler.pre_request(worker, None)
    assert worker.alive is True
    assert recycler.stats()["requests"] == 1
    assert recycler.stats()["checks"] == 1
    assert rss.reads == 1


def test_pre_request_over_the_cap_recycles_the_worker_once(
    caplog: pytest.LogCaptureFixture, fake_clock: FakeClock
) -> None:
    rss = Rss(300)
    worker = GunicornLikeWorker()
    recycler = _forked(RSSRecycler(256, rss_probe=rss, clock=fake_clock), worker)
    fake_clock.advance(42)
    with caplog.at_level(logging.WARNING, logger="memsafe.recycle"):
        recycler.pre_request(worker, None)
        recycler.pre_request(worker, None)
    assert worker.alive is False
    assert recycler.is_recycling
    assert rss.reads == 1  # once recycling, no more probing
    line = next(r.getMessage() for r in caplog.records if "over its RSS cap" in r.getMessage())
    assert f"worker pid {os.getpid()}" in line
    assert "rss 300.0 MiB >= max_worker_rss_mb 256 after 1 requests, 42s" in line


def test_check_uses_the_given_rss_and_an_injected_exit_request() -> None:
    reasons: list[str] = []
    rss = Rss()
    recycler = RSSRecycler(64, None, rss_probe=rss, exit_request=reasons.append)
    assert recycler.check(10 * MIB) is False
    assert recycler.check(64 * MIB) is True
    assert recycler.check(1) is True
    assert rss.reads == 0
    assert len(reasons) == 1
    assert "rss 64.0 MiB" in reasons[0]


def test_check_worker_rss_feeds_the_active_recycler(sigterms: list[int]) -> None:
    recycle.check_worker_rss(10**12)  # no recycler: nothing happens
    worker = UvicornLikeWorker()
    recycler = _forked(RSSRecycler(128, None, rss_probe=Rss(50)), worker)
    assert recycle.active_recycler() is recycler
    recycle.check_worker_rss(100 * MIB)
    assert sigterms == []
    recycle.check_worker_rss(200 * MIB)
    assert sigterms == [signal.SIGTERM]
    assert recycler.stats()["requests"] == 2


def test_worker_booting_over_the_cap_is_never_recycled(caplog: pytest.LogCaptureFixture) -> None:
    worker = GunicornLikeWorker()
    recycler = _forked(RSSRecycler(64, 0.01, rss_probe=Rss(100)), worker)
    with caplog.at_level(logging.ERROR, logger="memsafe.recycle"):
        recycler.post_worker_init(worker)
    assert recycler.is_disabled
    assert recycler._watchdog is None
    assert recycler.check() is False
    assert worker.alive is True
    assert "boots at 100.0 MiB, already over max_worker_rss_mb 64" in caplog.text


def test_post_worker_init_without_post_fork_records_the_worker() -> None:
    worker = GunicornLikeWorker()
    recycler = RSSRecycler(256, None, rss_probe=Rss(100))
    recycler.post_worker_init(worker)
    assert recycler.pid == os.getpid()
    assert recycle.current_worker() is worker
    assert recycler.stats()["boot_rss_bytes"] == 100 * MIB


def test_worker_exit_logs_a_recycled_worker(caplog: pytest.LogCaptureFixture) -> None:
    worker = GunicornLikeWorker()
    recycler = _forked(RSSRecycler(64, None, rss_probe=Rss(80)), worker)
    recycler.check()
    with caplog.at_level(logging.WARNING, logger="memsafe.recycle"):
        recycler.worker_exit(object(), worker)
    assert "exits, recycled on RSS (last 80.0 MiB, cap 64 MiB, 0 requests)" in caplog.text


def test_worker_exit_is_quiet_for_a_healthy_worker_or_in_the_master(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recycler = RSSRecycler(64, None, rss_probe=Rss(10))
    with caplog.at_level(logging.DEBUG, logger="memsafe.recycle"):
        recycler.worker_exit(object(), object())  # never forked here: the master's view
        _forked(recycler, GunicornLikeWorker()).worker_exit(object(), object())
    assert caplog.text == ""


@pytest.mark.slow
def test_watchdog_thread_recycles_without_any_request() -> None:
    rss = Rss(100)
    worker = GunicornLikeWorker()
    recycler = _forked(RSSRecycler(200, 0.01, rss_probe=rss), worker)
    recycler.post_worker_init(worker)
    watchdog = recycler._watchdog
    assert watchdog is not None
    assert watchdog.daemon
    rss.mb = 250
    watchdog.join(timeout=10)
    assert not watchdog.is_alive()
    assert worker.alive is False
    assert recycler.stats()["is_recycling"] is True


@pytest.mark.slow
def test_watchdog_survives_a_failing_probe_and_stops_at_worker_exit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = threading.Event()
    count = [0]

    def flaky() -> int:
        count[0] += 1
        if count[0] == 2:
            msg = "statm gone"
            raise OSError(msg)
        if count[0] >= 4:
            calls.set()
        return 10 * MIB

    worker = GunicornLikeWorker()
    recycler = _forked(RSSRecycler(200, 0.01, rss_probe=flaky), worker)
    with caplog.at_level(logging.ERROR, logger="memsafe.recycle"):
        recycler.post_worker_init(worker)
        assert calls.wait(timeout=10)
        recycler.worker_exit(object(), worker)
        watchdog = recycler._watchdog
        assert watchdog is not None
        watchdog.join(timeout=10)
    assert not watchdog.is_alive()
    assert "RSS watchdog check failed" in caplog.text
    assert worker.alive is True


def test_only_one_of_two_racing_checks_requests_the_exit() -> None:
    reasons: list[str] = []
    recycler = RSSRecycler(64, None, exit_request=reasons.append)

    def probe_while_the_other_thread_wins() -> int:
        recycler.is_recycling = True  # the watchdog decided between our two reads
        return 100 * MIB

    recycler._rss_probe = probe_while_the_other_thread_wins
    assert recycler.check() is True
    assert reasons == []


# --- stop accepting before exiting ----------------------------------------------------------


class _Accepted(asyncio.Protocol):
    def __init__(self, accepted: list[asyncio.BaseTransport]) -> None:
        self.accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.accepted.append(transport)
        transport.close()


async def _listening_worker(
    worker: Any, accepted: list[asyncio.BaseTransport]
) -> tuple[asyncio.Server, socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = await asyncio.get_running_loop().create_server(lambda: _Accepted(accepted), sock=sock)
    worker.sockets = [sock]
    recycle.record_worker(worker)
    return server, sock


async def _connect_and_wait(sock: socket.socket, seconds: float) -> None:
    host, port = sock.getsockname()
    _, writer = await asyncio.open_connection(host, port)
    await asyncio.sleep(seconds)
    writer.close()
    await writer.wait_closed()


def test_uvicorn_worker_stops_accepting_then_gets_sigterm_after_the_grace() -> None:
    kills: list[int] = []
    accepted: list[asyncio.BaseTransport] = []

    async def scenario() -> None:
        server, sock = await _listening_worker(UvicornLikeWorker(), accepted)
        await _connect_and_wait(sock, 0.05)
        assert len(accepted) == 1
        request_worker_exit("test", kill=lambda pid, sig: kills.append(sig), grace_seconds=0.2)
        await asyncio.sleep(0.01)
        assert kills == []  # the grace is running
        await _connect_and_wait(sock, 0.3)
        assert len(accepted) == 1  # the second connection was never accepted here
        assert kills == [signal.SIGTERM]
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_gunicorn_worker_stops_accepting_and_is_not_signalled() -> None:
    accepted: list[asyncio.BaseTransport] = []
    worker = GunicornLikeWorker()

    async def scenario() -> None:
        server, sock = await _listening_worker(worker, accepted)
        request_worker_exit("test", kill=_no_kill)
        await asyncio.sleep(0.01)
        await _connect_and_wait(sock, 0.1)
        assert accepted == []
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
    assert worker.alive is False


class _UvloopLike:
    """A loop whose server does not accept through add_reader: nothing to unregister."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def remove_reader(self, fd: int) -> bool:
        return False

    def call_later(self, delay: float, callback: Any, *args: Any) -> None:
        self.delays.append(delay)


def test_sigterm_goes_at_once_when_no_listener_could_be_unregistered() -> None:
    loop = _UvloopLike()
    _worker._stop_accepting_then_terminate(loop, [5], _no_kill, 9.0)  # type: ignore[arg-type]  # duck-typed loop
    assert loop.delays == [0.0]


def test_listener_fds_skip_closed_and_odd_sockets() -> None:
    closed = socket.socket()
    closed.close()

    class NoFileno:
        pass

    worker = UvicornLikeWorker()
    worker.sockets = [closed, NoFileno()]  # type: ignore[list-item]  # deliberately odd
    assert _worker._listener_fds(worker) == []
    assert _worker._listener_fds(object()) == []


def test_a_closed_loop_is_not_used_and_sigterm_goes_at_once() -> None:
    async def note_loop() -> None:
        _worker._remember_running_loop()
        _worker._remember_running_loop()  # known already: a no-op

    asyncio.run(note_loop())
    worker = UvicornLikeWorker()
    worker.sockets = [socket.socket()]
    try:
        kills: list[int] = []
        request_worker_exit("test", kill=lambda pid, sig: kills.append(sig), worker=worker)
        assert kills == [signal.SIGTERM]
    finally:
        worker.sockets[0].close()


# --- the app wrapper for worker classes without request hooks --------------------------------


class _App:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.error = error
        self.headers: list[list[tuple[bytes, bytes]]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append(scope["type"])
        if self.error is not None:
            raise self.error
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})


async def _sink(message: Any) -> None:
    return None


async def _nothing() -> Any:
    return {}


def _wrapped(worker: Any, recycler: RSSRecycler, app: _App) -> Any:
    worker.wsgi = app
    recycler.post_fork(object(), worker)
    recycler.post_worker_init(worker)
    return worker.wsgi


def test_uvicorn_worker_app_is_wrapped_to_check_before_each_response() -> None:
    app = _App()
    rss = Rss(10)
    recycler = RSSRecycler(64, None, rss_probe=rss)
    wrapped = _wrapped(UvicornLikeWorker(), recycler, app)
    assert isinstance(wrapped, DrainMiddleware)

    async def scenario() -> None:
        await wrapped({"type": "websocket"}, _nothing, _sink)
        await wrapped({"type": "http"}, _nothing, _sink)

    asyncio.run(scenario())
    assert app.calls == ["websocket", "http"]
    assert recycler.stats()["requests"] == 1
    assert rss.reads == 2  # one at boot, one before the response


def test_gunicorn_asgi_worker_app_is_wrapped_too() -> None:
    app = _App()
    worker = GunicornLikeWorker()
    worker.asgi = app  # type: ignore[attr-defined]  # gunicorn's asgi worker keeps it here
    recycler = RSSRecycler(64, None, rss_probe=Rss(10))
    recycler.post_fork(object(), worker)
    recycler.post_worker_init(worker)
    assert isinstance(worker.asgi, DrainMiddleware)  # type: ignore[attr-defined]  # set above


def test_app_errors_propagate_and_the_drain_count_is_restored() -> None:
    app = _App(error=KeyError("boom"))
    recycler = RSSRecycler(64, None, rss_probe=Rss(10))
    wrapped = _wrapped(UvicornLikeWorker(), recycler, app)
    with pytest.raises(KeyError, match="boom"):
        asyncio.run(wrapped({"type": "http"}, None, _sink))
    assert recycler.drain.inflight == 0


def test_a_failing_check_does_not_break_the_request(caplog: pytest.LogCaptureFixture) -> None:
    app = _App()
    readings = iter([10 * MIB])

    def probe() -> int:
        return next(readings)  # the second read raises StopIteration

    recycler = RSSRecycler(64, None, rss_probe=probe)
    wrapped = _wrapped(UvicornLikeWorker(), recycler, app)
    with caplog.at_level(logging.ERROR, logger="memsafe.recycle"):
        asyncio.run(wrapped({"type": "http"}, None, _sink))
    assert "RSS check before the response failed" in caplog.text


def test_app_is_left_alone_when_asked() -> None:
    app = _App()
    recycler = RSSRecycler(64, None, rss_probe=Rss(10), is_wrapping_app=False)
    assert _wrapped(UvicornLikeWorker(), recycler, app) is app


def test_over_the_cap_the_response_announces_close_and_the_worker_exits_after() -> None:
    reasons: list[str] = []
    rss = Rss(10)
    recycler = RSSRecycler(64, None, rss_probe=rss, exit_request=reasons.append)
    wrapped = _wrapped(UvicornLikeWorker(), recycler, _App())
    sent: list[Any] = []

    async def record(message: Any) -> None:
        sent.append(message)

    async def scenario() -> None:
        await wrapped({"type": "http"}, None, record)
        rss.mb = 100
        await wrapped({"type": "http"}, None, record)
        assert reasons == []  # draining: the exit waits for the settle delay
        await asyncio.sleep(recycler.drain.settle_seconds + 0.05)

    asyncio.run(scenario())
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert (b"connection", b"close") not in starts[0]["headers"]
    assert (b"connection", b"close") in starts[1]["headers"]
    assert len(reasons) == 1
    assert "rss 100.0 MiB" in reasons[0]


class _UvicornConfig:
    limit_max_requests: int | None = 3


@pytest.mark.parametrize("is_uvicorn", [False, True])
def test_max_requests_is_taken_over_and_recycles_through_the_drain(
    is_uvicorn: bool, caplog: pytest.LogCaptureFixture
) -> None:
    import sys

    reasons: list[str] = []
    worker: Any = UvicornLikeWorker() if is_uvicorn else GunicornLikeWorker()
    worker.max_requests = 3
    worker.config = _UvicornConfig()
    worker.wsgi = _App()
    recycler = RSSRecycler(None, None, exit_request=reasons.append)
    recycler.post_fork(object(), worker)
    recycler.post_worker_init(worker)
    assert worker.max_requests == sys.maxsize  # the worker's own limit is off
    assert worker.config.limit_max_requests is None

    async def scenario() -> None:
        for _ in range(4):
            await worker.wsgi({"type": "http"}, _nothing, _sink)
        await asyncio.sleep(recycler.drain.settle_seconds + 0.1)  # the drain's exit

    asyncio.run(scenario())
    assert reasons == ["max_requests 3 reached"]  # once, at the third request
    with caplog.at_level(logging.WARNING, logger="memsafe.recycle"):
        recycler.worker_exit(object(), worker)
    assert "recycled on max_requests" in caplog.text


def test_max_requests_stays_with_the_worker_when_the_app_is_not_wrapped() -> None:
    worker: Any = GunicornLikeWorker()
    worker.max_requests = 3
    RSSRecycler(64, None, is_wrapping_app=False).post_fork(object(), worker)
    assert worker.max_requests == 3
