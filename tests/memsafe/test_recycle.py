"""RSSRecycler and request_worker_exit against fake gunicorn workers and a real SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.workers.gasgi import ASGIWorker
from uvicorn_worker import UvicornWorker

from memsafe import recycle
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
    recycle._reset_for_tests()
    yield
    recycle._reset_for_tests()


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


@pytest.mark.parametrize("cap", ["512", True, None])
def test_cap_of_wrong_type_is_rejected(cap: Any) -> None:
    with pytest.raises(TypeError, match="max_worker_rss_mb must be a number"):
        RSSRecycler(cap)


@pytest.mark.parametrize("interval", [0, -1, 7200, "1", True])
def test_bad_check_interval_is_rejected(interval: Any) -> None:
    with pytest.raises(ValueError, match=r"check_interval_seconds must be None or in \(0, 3600\]"):
        RSSRecycler(256, interval)


def test_hooks_pass_gunicorn_setting_validation() -> None:
    recycler = RSSRecycler(256)
    cfg = Config()
    for name, hook in recycler.hooks().items():
        cfg.set(name, hook)
    assert set(recycler.hooks()) == {"post_fork", "post_worker_init", "post_request", "worker_exit"}
    assert cfg.post_fork == recycler.post_fork


# --- worker classes -----------------------------------------------------------------------


def test_gunicorn_workers_honour_alive_and_uvicorn_worker_does_not() -> None:
    assert recycle._honours_alive_flag(ASGIWorker.__new__(ASGIWorker))
    assert not recycle._honours_alive_flag(UvicornWorker.__new__(UvicornWorker))
    assert not recycle._honours_alive_flag(object())


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


def test_post_request_under_the_cap_does_nothing() -> None:
    rss = Rss(100)
    worker = GunicornLikeWorker()
    recycler = _forked(RSSRecycler(256, rss_probe=rss), worker)
    recycler.post_request(worker, None, None, None)
    assert worker.alive is True
    assert recycler.stats()["requests"] == 1
    assert recycler.stats()["checks"] == 1
    assert rss.reads == 1


def test_post_request_over_the_cap_recycles_the_worker_once(
    caplog: pytest.LogCaptureFixture, fake_clock: FakeClock
) -> None:
    rss = Rss(300)
    worker = GunicornLikeWorker()
    recycler = _forked(RSSRecycler(256, rss_probe=rss, clock=fake_clock), worker)
    fake_clock.advance(42)
    with caplog.at_level(logging.WARNING, logger="memsafe.recycle"):
        recycler.post_request(worker, None, None, None)
        recycler.post_request(worker, None, None, None)
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
