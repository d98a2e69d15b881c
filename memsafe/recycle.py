"""Worker recycling on RSS for gunicorn: uWSGI's reload-on-rss, with no failed request.

A worker over its cap drains (every response announces ``Connection: close``, requests in
flight finish) and exits; the master forks a replacement. With one worker the replacement
is started first (SIGTTIN to the master), so traffic never waits for a boot.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from memsafe import _handoff, _worker
from memsafe._clock import Clock
from memsafe._types import RecyclerStats
from memsafe._worker import (
    STOP_ACCEPTING_GRACE_SECONDS,
    _honours_alive_flag,
    _remember_running_loop,
    current_worker,
    is_exit_requested,
    is_gunicorn_worker,
    record_worker,
    request_worker_exit,
)
from memsafe.drain import DrainMiddleware, WorkerDrain
from memsafe.probes import process_rss_bytes

__all__ = [
    "STOP_ACCEPTING_GRACE_SECONDS",
    "RSSRecycler",
    "active_recycler",
    "check_worker_rss",
    "current_worker",
    "is_exit_requested",
    "is_gunicorn_worker",
    "record_worker",
    "recycle_worker",
    "request_worker_exit",
]

logger = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
DEFAULT_CHECK_INTERVAL_SECONDS: Final = 2.0
DEFAULT_OVERLAP_MAX_WORKERS: Final = 1
DEFAULT_HANDOFF_TIMEOUT_SECONDS: Final = 30.0


def recycle_worker(reason: str) -> bool:
    """Replace this gunicorn worker gracefully, as an RSS recycle does; False when it cannot.

    Goes through the RSSRecycler whose hooks run in this process: with one worker its
    replacement starts first, then this worker drains its keep-alive connections
    (``Connection: close``) and exits. Without such a recycler (TestClient, ``uvicorn
    --reload``) nothing would replace the worker, so it only logs and returns False.
    MemoryCleanupService's recycle level calls it by default.

    Thread safety: safe from any thread.
    """
    recycler = active_recycler()
    if recycler is None:
        logger.warning(
            "recycle requested (%s) but no RSSRecycler in this process; staying up", reason
        )
        return False
    recycler.recycle(reason)
    return True


def check_worker_rss(rss_bytes: int | None = None) -> None:
    """Count a response and check this worker against the RSSRecycler its post_fork installed.

    For an app that checks from its own per-response hook (``RSSRecycler(...,
    is_wrapping_app=False)`` with ``MemoryMonitor(on_response_rss=check_worker_rss)``).
    A no-op when no recycler runs in this process.
    """
    recycler = active_recycler()
    if recycler is not None:
        recycler.requests += 1
        recycler.check(rss_bytes)


def active_recycler() -> RSSRecycler | None:
    """The RSSRecycler whose post_fork hook ran in this process, or None."""
    return _worker._state.recycler


def _check_cap(max_worker_rss_mb: float | None) -> None:
    if max_worker_rss_mb is None:
        return
    if isinstance(max_worker_rss_mb, bool) or not isinstance(max_worker_rss_mb, int | float):
        msg = f"max_worker_rss_mb must be None or a number of MiB > 0, got {max_worker_rss_mb!r}"
        raise TypeError(msg)
    if not 0 < max_worker_rss_mb <= 1024 * 1024:
        msg = f"max_worker_rss_mb must be in (0, 1048576] MiB, got {max_worker_rss_mb!r}"
        raise ValueError(msg)


def _check_interval(name: str, value: float | None, maximum: float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be None or a number of seconds, got {value!r}"
        raise TypeError(msg)
    if not 0 < value <= maximum:
        msg = f"{name} must be None or in (0, {maximum:g}] seconds, got {value!r}"
        raise ValueError(msg)


class RSSRecycler:
    """Recycles a gunicorn worker whose RSS reaches ``max_worker_rss_mb`` (MiB), with no failed
    request.

    Create one in ``gunicorn.conf.py`` and install its hooks with ``globals().update(
    recycler.hooks())``. In each worker, ``post_worker_init`` wraps the app in a
    :class:`~memsafe.drain.DrainMiddleware` (``is_wrapping_app=False`` leaves it alone, for
    an app that calls :func:`check_worker_rss` itself). RSS is checked:

    - before each HTTP response's headers, by that middleware, so the response that crosses
      the cap already announces ``Connection: close``;
    - every ``check_interval_seconds`` by a daemon watchdog thread (None disables it), which
      also catches growth between requests.

    ``max_worker_rss_mb=None`` checks nothing: the recycler then only serves explicit
    :func:`recycle_worker` calls (MemoryCleanupService's recycle level). gunicorn's
    ``max_requests`` (with its jitter) is taken over the same way: the worker's own limit is
    switched off and the middleware recycles through the drain once it is reached.

    A worker to recycle, by default (``is_draining=True``), first drains: every response
    carries ``Connection: close`` until the requests that started before have finished, then
    the worker stops accepting and exits (:func:`request_worker_exit`), so keep-alive clients
    that never retry see no failed request. When the master runs at most
    ``overlap_max_workers`` workers (default 1, Render Starter's ``WEB_CONCURRENCY=1``) and
    the ``child_exit`` hook is installed, the worker first asks the master for one more
    worker (SIGTTIN) and drains only once that one serves (or after
    ``handoff_timeout_seconds``); the master's ``child_exit`` gives the slot back. For that
    moment (the replacement's boot plus the drain, well under a second with a preloaded app)
    one extra worker is resident, freshly booted: budget its boot RSS on top of
    ``master + workers x max_worker_rss_mb``. A worker already over the cap right after boot
    is never recycled (that would loop): an error is logged instead.

    Thread safety: the object is built in the master and copied into each worker by fork;
    in a worker, check() may run concurrently from the event loop and the watchdog thread
    (the recycle decision is taken under a lock).
    """

    def __init__(
        self,
        max_worker_rss_mb: float | None,
        check_interval_seconds: float | None = DEFAULT_CHECK_INTERVAL_SECONDS,
        *,
        rss_probe: Callable[[], int] = process_rss_bytes,
        exit_request: Callable[[str], None] | None = None,
        clock: Clock = time.monotonic,
        is_wrapping_app: bool = True,
        is_draining: bool = True,
        overlap_max_workers: int = DEFAULT_OVERLAP_MAX_WORKERS,
        handoff_timeout_seconds: float = DEFAULT_HANDOFF_TIMEOUT_SECONDS,
    ) -> None:
        _check_cap(max_worker_rss_mb)
        _check_interval("check_interval_seconds", check_interval_seconds, 3600)
        _check_interval("handoff_timeout_seconds", handoff_timeout_seconds, 3600)
        if isinstance(overlap_max_workers, bool) or not isinstance(overlap_max_workers, int):
            msg = f"overlap_max_workers must be an int >= 0, got {overlap_max_workers!r}"
            raise TypeError(msg)
        if overlap_max_workers < 0:
            msg = f"overlap_max_workers must be >= 0 (0: no overlap), got {overlap_max_workers!r}"
            raise ValueError(msg)
        self.max_worker_rss_mb = None if max_worker_rss_mb is None else float(max_worker_rss_mb)
        self.max_rss_bytes = None if max_worker_rss_mb is None else int(max_worker_rss_mb * MIB)
        self.check_interval_seconds = check_interval_seconds
        self._rss_probe = rss_probe
        self._exit_request = exit_request
        self._clock = clock
        self.is_wrapping_app = is_wrapping_app
        self.is_draining = is_draining
        self.overlap_max_workers = overlap_max_workers
        self.handoff_timeout_seconds = handoff_timeout_seconds
        self._lock = threading.Lock()
        self._reset(pid=None)

    def _reset(self, pid: int | None) -> None:
        """Per-worker state, set afresh in every forked worker."""
        self.pid = pid
        self.requests = 0
        self.checks = 0
        self.is_recycling = False
        self.is_disabled = False
        self.boot_rss_bytes: int | None = None
        self.last_rss_bytes: int | None = None
        self.started_at = self._clock()
        self._worker: Any = None
        self._master_pid: int | None = None
        self._is_overlapping = False
        self._cause = "on request"
        self._max_requests: int | None = None
        self._stop_watchdog = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.drain = WorkerDrain(self._exit)

    def hooks(self) -> dict[str, Callable[..., None]]:
        """The gunicorn server hooks, by setting name, for ``globals().update(...)``."""
        return {
            "post_fork": self.post_fork,
            "post_worker_init": self.post_worker_init,
            "worker_exit": self.worker_exit,
            "child_exit": self.child_exit,
            "on_exit": self.on_exit,
        }

    def post_fork(self, server: Any, worker: Any) -> None:
        """gunicorn hook (in the new worker): record the worker and reset per-worker state."""
        self._reset(pid=os.getpid())
        self._worker = worker
        record_worker(worker)
        _worker._state.recycler = self
        cfg = getattr(server, "cfg", None)
        workers = getattr(cfg, "workers", None)
        self._master_pid = getattr(server, "pid", None)
        self._is_overlapping = (
            self.is_draining
            and isinstance(workers, int)
            and 0 < workers <= self.overlap_max_workers
            and isinstance(self._master_pid, int)
            and getattr(cfg, "child_exit", None) == self.child_exit
        )
        self._take_over_max_requests(worker)

    def _take_over_max_requests(self, worker: Any) -> None:
        """Recycle at gunicorn's ``max_requests`` through the drain (and overlap) too.

        The worker's own limit would stop it without overlap (and uvicorn's without the
        drain): the limit is read here, switched off in the worker, and counted by the
        DrainMiddleware instead.
        """
        limit = getattr(worker, "max_requests", None)
        if not (self.is_wrapping_app and self.is_draining and isinstance(limit, int)):
            return
        if not 0 < limit < sys.maxsize:
            return
        self._max_requests = limit
        worker.max_requests = sys.maxsize
        config: Any = getattr(worker, "config", None)  # UvicornWorker's uvicorn Config
        if getattr(config, "limit_max_requests", None) is not None:
            config.limit_max_requests = None

    def post_worker_init(self, worker: Any) -> None:
        """gunicorn hook (app loaded): note the boot RSS, wrap the app, start the watchdog.

        The loaded ASGI app (``worker.asgi`` for gunicorn's asgi worker, ``worker.wsgi`` for
        UvicornWorker) is wrapped in a DrainMiddleware unless ``is_wrapping_app`` is False.
        """
        if self.pid != os.getpid():  # the post_fork hook is not installed
            self.post_fork(None, worker)
        attr = "asgi" if _honours_alive_flag(worker) and hasattr(worker, "asgi") else "wsgi"
        app = getattr(worker, attr, None)
        if self.is_wrapping_app and app is not None:
            setattr(
                worker,
                attr,
                DrainMiddleware(app, self.drain, self._check_before_headers, self._on_ready),
            )
        if self.max_rss_bytes is None:
            return
        rss = self._rss_probe()
        self.boot_rss_bytes = rss
        if rss >= self.max_rss_bytes:
            self.is_disabled = True
            logger.error(
                "worker pid %d boots at %.1f MiB, already over max_worker_rss_mb %g: RSS "
                "recycling is off for it (it would restart in a loop); raise the cap",
                os.getpid(),
                rss / MIB,
                self.max_worker_rss_mb,
            )
            return
        if self.check_interval_seconds is not None:
            self._watchdog = threading.Thread(
                target=self._watch, name="memsafe-rss-recycler", daemon=True
            )
            self._watchdog.start()

    def pre_request(self, worker: Any, req: Any) -> None:
        """gunicorn hook, before each request in gunicorn's own workers: check RSS.

        Not in :meth:`hooks`: the DrainMiddleware checks before the headers already. For
        ``is_wrapping_app=False`` under gunicorn's own workers.
        """
        self.requests += 1
        self.check(worker=worker)

    def worker_exit(self, server: Any, worker: Any) -> None:
        """gunicorn hook (in the exiting worker): stop the watchdog and log the exit."""
        self._stop_watchdog.set()
        if self.pid != os.getpid():  # called by the master for a worker that vanished
            return
        if self.is_recycling:
            cap = self.max_worker_rss_mb
            logger.warning(
                "worker pid %d exits, recycled %s (last %.1f MiB, cap %s MiB, %d requests)",
                os.getpid(),
                self._cause,
                (self.last_rss_bytes or 0) / MIB,
                "none" if cap is None else f"{cap:g}",
                self.requests,
            )

    def child_exit(self, server: Any, worker: Any) -> None:
        """gunicorn hook (in the master, a worker reaped): give back an overlap's extra slot."""
        _handoff.give_back_slot(server, int(getattr(worker, "pid", 0) or 0))

    def on_exit(self, server: Any) -> None:
        """gunicorn hook (in the master, at exit): remove the overlap marker directory."""
        _handoff.remove_dir()

    def _check_before_headers(self) -> None:
        self.requests += 1
        if self._max_requests is not None and self.requests >= self._max_requests:
            if not self.is_recycling:
                self._cause = "on max_requests"
                self.recycle(f"max_requests {self._max_requests} reached")
            return
        try:
            self.check()
        except Exception:  # a probe failure must not replace the app's own response
            logger.exception("RSS check before the response failed")

    def _on_ready(self) -> None:
        if self._master_pid is not None:
            _handoff.mark_ready(self._master_pid)

    def check(self, rss_bytes: int | None = None, *, worker: Any = None) -> bool:
        """Compare RSS (measured when not given) with the cap; over it, recycle the worker.

        Cheap enough for every response (one statm read, about 3 us). Returns True when the
        worker is being recycled (now or earlier).
        """
        if self.is_recycling:
            return True
        if self.is_disabled or self.max_rss_bytes is None:
            return False
        _remember_running_loop()
        rss = self._rss_probe() if rss_bytes is None else rss_bytes
        self.checks += 1
        self.last_rss_bytes = rss
        if rss < self.max_rss_bytes:
            return False
        reason = (
            f"rss {rss / MIB:.1f} MiB >= max_worker_rss_mb {self.max_worker_rss_mb:g} "
            f"after {self.requests} requests, {self._clock() - self.started_at:.0f}s"
        )
        if worker is not None and self._worker is None:
            self._worker = worker
        self._cause = "on RSS"
        self.recycle(reason, log_over_cap=True)
        return True

    def recycle(self, reason: str, *, log_over_cap: bool = False) -> None:
        """Replace this worker gracefully (only the first call acts); see the class docs."""
        with self._lock:
            if self.is_recycling:
                return
            self.is_recycling = True
        self._stop_watchdog.set()
        if log_over_cap:
            logger.warning("worker pid %d over its RSS cap: %s; recycling", os.getpid(), reason)
        if not self.is_draining:
            self._exit(reason)
            return
        if self._is_overlapping and self._master_pid is not None:
            started = _handoff.start_replacement(
                self._master_pid,
                lambda: self.drain.request_exit(reason),
                timeout_seconds=self.handoff_timeout_seconds,
            )
            if started:
                return
        self.drain.request_exit(reason)

    def _exit(self, reason: str) -> None:
        if self._exit_request is not None:
            self._exit_request(reason)
        else:
            request_worker_exit(reason, worker=self._worker)

    def _watch(self) -> None:
        """Watchdog thread body: check every interval until recycling or exit."""
        interval = self.check_interval_seconds
        while interval is not None and not self._stop_watchdog.wait(interval):
            try:
                if self.check():
                    return
            except Exception:  # the watchdog must not die silently on a probe error
                logger.exception("RSS watchdog check failed")

    def stats(self) -> RecyclerStats:
        """This worker's recycler state: cap, requests, checks, last and boot RSS, recycling."""
        return {
            "pid": self.pid,
            "max_worker_rss_mb": self.max_worker_rss_mb,
            "check_interval_seconds": self.check_interval_seconds,
            "requests": self.requests,
            "checks": self.checks,
            "boot_rss_bytes": self.boot_rss_bytes,
            "last_rss_bytes": self.last_rss_bytes,
            "is_recycling": self.is_recycling,
            "is_disabled": self.is_disabled,
            "is_draining": self.drain.is_draining,
            "overlap_max_workers": self.overlap_max_workers,
        }
