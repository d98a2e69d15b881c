"""Worker recycling on RSS for gunicorn: uWSGI's reload-on-rss for the asgi and uvicorn workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from memsafe._clock import Clock
from memsafe.probes import process_rss_bytes

logger = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
DEFAULT_CHECK_INTERVAL_SECONDS: Final = 2.0
STOP_ACCEPTING_GRACE_SECONDS: Final = 0.5
# gunicorn's own workers (sync, gthread, gevent, tornado, asgi) leave their serving loop when
# worker.alive turns False, then drain in-flight requests. Anything else (uvicorn_worker's
# UvicornWorker runs uvicorn's Server, which never reads worker.alive) gets SIGTERM instead.
# Subclasses of gunicorn's workers count (they inherit the loop); gunicorn.workers.base.Worker
# alone does not: UvicornWorker derives from it straight.
_ALIVE_FLAG_MODULE_PREFIX: Final = "gunicorn.workers."
_BASE_WORKER_MODULE: Final = "gunicorn.workers.base"

_state_lock = threading.Lock()
_exit_reason: str | None = None
_exit_pid: int | None = None
_worker: Any = None
_worker_pid: int | None = None
_active_recycler: RSSRecycler | None = None
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None


def _honours_alive_flag(worker: object) -> bool:
    """True when ``worker`` is (a subclass of) one of gunicorn's own classes (they poll alive)."""
    return any(
        cls.__module__.startswith(_ALIVE_FLAG_MODULE_PREFIX)
        and cls.__module__ != _BASE_WORKER_MODULE
        for cls in type(worker).__mro__
    )


def record_worker(worker: object) -> None:
    """Remember the gunicorn worker object of this process (RSSRecycler.post_fork does it)."""
    global _worker, _worker_pid, _exit_reason, _exit_pid
    with _state_lock:
        _worker, _worker_pid = worker, os.getpid()
        _exit_reason, _exit_pid = None, None


def current_worker() -> Any:
    """The gunicorn worker recorded in this process, or None (not under gunicorn, or no hook)."""
    return _worker if _worker_pid == os.getpid() else None


def is_exit_requested() -> bool:
    """True once request_worker_exit has been called in this process."""
    return _exit_reason is not None and _exit_pid == os.getpid()


def _remember_running_loop() -> None:
    """Note this worker's event loop when called on it (a cheap no-op once known)."""
    global _loop, _loop_pid
    pid = os.getpid()
    if _loop_pid == pid:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    _loop, _loop_pid = loop, pid


def _worker_loop() -> asyncio.AbstractEventLoop | None:
    """This worker's event loop: the running one, else the one noted earlier, if still open."""
    _remember_running_loop()
    loop = _loop if _loop_pid == os.getpid() else None
    return loop if loop is not None and not loop.is_closed() else None


def _listener_fds(worker: Any) -> list[int]:
    """File descriptors of the worker's listening sockets (gunicorn's ``worker.sockets``)."""
    fds: list[int] = []
    for sock in getattr(worker, "sockets", None) or []:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            fds.append(int(sock.fileno()))
    return [fd for fd in fds if fd >= 0]


def _stop_accepting(loop: asyncio.AbstractEventLoop, fds: list[int]) -> int:
    """On the loop: stop accepting on ``fds`` in this process only; how many were stopped.

    The listening sockets stay open (shared with the master and the other workers, which keep
    accepting); only this loop's accept callbacks are unregistered. A loop that does not
    accept through add_reader (uvloop) stops nothing here.
    """
    stopped = 0
    for fd in fds:
        with contextlib.suppress(ValueError, OSError, RuntimeError, NotImplementedError):
            stopped += bool(loop.remove_reader(fd))
    logger.info("worker pid %d stopped accepting on %d listener(s)", os.getpid(), stopped)
    return stopped


def _stop_accepting_then_terminate(
    loop: asyncio.AbstractEventLoop,
    fds: list[int],
    kill: Callable[[int, int], None],
    grace_seconds: float,
) -> None:
    """On the loop: stop accepting here, then SIGTERM this process after ``grace_seconds``.

    uvicorn's graceful shutdown closes every connection that has no request in progress,
    including one accepted a moment ago whose request is still on the wire: its client sees
    a reset. Not accepting any more, then waiting a moment, lets such requests arrive and be
    served. When nothing could be unregistered, SIGTERM goes at once.
    """
    delay = grace_seconds if _stop_accepting(loop, fds) else 0.0
    loop.call_later(delay, kill, os.getpid(), signal.SIGTERM)


def request_worker_exit(
    reason: str,
    *,
    kill: Callable[[int, int], None] = os.kill,
    worker: Any = None,
    grace_seconds: float = STOP_ACCEPTING_GRACE_SECONDS,
) -> None:
    """Ask this worker process to stop taking requests, finish those in flight, and exit.

    The gunicorn master then forks a replacement. Under one of gunicorn's own worker
    classes (``worker_class = "asgi"`` included) this sets ``worker.alive = False``: the
    worker closes its listeners, waits up to ``graceful_timeout`` for open connections and
    runs the lifespan shutdown. Otherwise (``uvicorn_worker.UvicornWorker``, or no worker
    recorded by the post_fork hook) it sends SIGTERM to itself, which uvicorn's Server
    handles by draining in-flight requests, then running the lifespan shutdown. When this
    worker's event loop is known (a check ran on it), the worker first stops accepting on its
    listeners, in this process only, and for uvicorn waits ``grace_seconds`` before SIGTERM
    (see :func:`_stop_accepting_then_terminate`). Outside a
    supervisor that replaces dead workers (plain ``uvicorn app:app``) this stops the server.
    Only the first call in a process acts; later ones are logged at debug level.

    Thread safety: safe from any thread (the decision is taken under a lock, loop work is
    handed to the loop with call_soon_threadsafe, SIGTERM reaches the main thread).
    """
    global _exit_reason, _exit_pid
    pid = os.getpid()
    with _state_lock:
        if _exit_reason is not None and _exit_pid == pid:
            logger.debug("worker exit already requested (%s); ignoring %r", _exit_reason, reason)
            return
        _exit_reason, _exit_pid = reason, pid
        target = worker if worker is not None else current_worker()
    loop = _worker_loop()
    fds = _listener_fds(target)
    if target is not None and _honours_alive_flag(target):
        logger.warning("recycling worker pid %d (%s): worker.alive = False, draining", pid, reason)
        target.alive = False
        # gunicorn's asgi worker notices within a second; meanwhile accept nothing new here.
        if loop is not None and fds:
            loop.call_soon_threadsafe(_stop_accepting, loop, fds)
        return
    logger.warning("recycling worker pid %d (%s): SIGTERM to itself, draining", pid, reason)
    if loop is not None and fds:
        loop.call_soon_threadsafe(_stop_accepting_then_terminate, loop, fds, kill, grace_seconds)
        return
    kill(pid, signal.SIGTERM)


def check_worker_rss(rss_bytes: int | None = None) -> None:
    """Count a response and check this worker against the RSSRecycler its post_fork installed.

    Made for a middleware's per-response hook (``MemoryMonitor(on_response_rss=
    check_worker_rss)``), which is how UvicornWorker, which calls no gunicorn request hook,
    gets uWSGI's check-after-each-request. A no-op when no recycler runs in this process.
    """
    recycler = active_recycler()
    if recycler is not None:
        recycler.requests += 1
        recycler.check(rss_bytes)


class RSSRecycler:
    """Recycles a gunicorn worker whose RSS reaches ``max_worker_rss_mb`` (MiB), gracefully.

    Create one in ``gunicorn.conf.py`` and install its hooks (``globals().update(
    recycler.hooks())``, or assign the methods one by one). RSS is checked:

    - before each request by ``pre_request``, which gunicorn's own workers (``asgi``
      included) call, so the response that follows announces ``Connection: close``
      (:meth:`post_request` is the alternative with uWSGI's after-the-request timing);
    - after each HTTP request by a thin ASGI wrapper that ``post_worker_init`` puts around
      the app of a worker class that calls no request hook (``UvicornWorker``);
      ``is_wrapping_app=False`` leaves the app alone, for an app that calls
      :func:`check_worker_rss` from its own per-response hook instead;
    - every ``check_interval_seconds`` by a daemon watchdog thread (None disables it), which
      also catches growth between requests.

    A worker over the cap stops accepting, drains and exits (:func:`request_worker_exit`).
    A worker already over the cap right after boot is never recycled (that would loop): an
    error is logged instead.

    Thread safety: the object is built in the master and copied into each worker by fork;
    in a worker, check() may run concurrently from the event loop and the watchdog thread
    (the recycle decision is taken under a lock).
    """

    def __init__(
        self,
        max_worker_rss_mb: float,
        check_interval_seconds: float | None = DEFAULT_CHECK_INTERVAL_SECONDS,
        *,
        rss_probe: Callable[[], int] = process_rss_bytes,
        exit_request: Callable[[str], None] | None = None,
        clock: Clock = time.monotonic,
        is_wrapping_app: bool = True,
    ) -> None:
        if isinstance(max_worker_rss_mb, bool) or not isinstance(max_worker_rss_mb, int | float):
            msg = f"max_worker_rss_mb must be a number of MiB > 0, got {max_worker_rss_mb!r}"
            raise TypeError(msg)
        if not 0 < max_worker_rss_mb <= 1024 * 1024:
            msg = f"max_worker_rss_mb must be in (0, 1048576] MiB, got {max_worker_rss_mb!r}"
            raise ValueError(msg)
        if check_interval_seconds is not None and not (
            isinstance(check_interval_seconds, int | float)
            and not isinstance(check_interval_seconds, bool)
            and 0 < check_interval_seconds <= 3600
        ):
            msg = (
                f"check_interval_seconds must be None or in (0, 3600] seconds, "
                f"got {check_interval_seconds!r}"
            )
            raise ValueError(msg)
        self.max_worker_rss_mb = float(max_worker_rss_mb)
        self.max_rss_bytes = int(max_worker_rss_mb * MIB)
        self.check_interval_seconds = check_interval_seconds
        self._rss_probe = rss_probe
        self._exit_request = exit_request
        self._clock = clock
        self.is_wrapping_app = is_wrapping_app
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
        self._stop_watchdog = threading.Event()
        self._watchdog: threading.Thread | None = None

    def hooks(self) -> dict[str, Callable[..., None]]:
        """The gunicorn server hooks, by setting name, for ``globals().update(...)``."""
        return {
            "post_fork": self.post_fork,
            "post_worker_init": self.post_worker_init,
            "pre_request": self.pre_request,
            "worker_exit": self.worker_exit,
        }

    def post_fork(self, server: Any, worker: Any) -> None:
        """gunicorn hook (in the new worker): record the worker and reset per-worker state."""
        global _active_recycler
        self._reset(pid=os.getpid())
        self._worker = worker
        record_worker(worker)
        _active_recycler = self

    def post_worker_init(self, worker: Any) -> None:
        """gunicorn hook (app loaded): note the boot RSS, wrap the app, start the watchdog.

        For a worker class that calls no request hook (UvicornWorker), the loaded ASGI app
        (``worker.wsgi``) is wrapped so RSS is checked after each HTTP request.
        """
        if self.pid != os.getpid():  # the post_fork hook is not installed
            self.post_fork(None, worker)
        app = getattr(worker, "wsgi", None)
        if self.is_wrapping_app and app is not None and not _honours_alive_flag(worker):
            worker.wsgi = _CheckAfterRequest(app, self)
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

        Checking before the app runs (RSS then includes every earlier request) lets a worker
        over the cap clear ``worker.alive`` before this response's headers are written, so
        gunicorn announces ``Connection: close`` and keep-alive clients reconnect cleanly.
        """
        self.requests += 1
        self.check(worker=worker)

    def post_request(self, worker: Any, req: Any, environ: Any, resp: Any) -> None:
        """gunicorn hook, after each request: uWSGI's reload-on-rss timing (check, then exit).

        An alternative to :meth:`pre_request` (install one of them): the response is already
        out with keep-alive, so a keep-alive client learns of the close only from the socket.
        With a post_request hook set, gunicorn's asgi worker also waits for every app call to
        return before reading the next request on a connection.
        """
        self.requests += 1
        self.check(worker=worker)

    def worker_exit(self, server: Any, worker: Any) -> None:
        """gunicorn hook (in the exiting worker): stop the watchdog and log the exit."""
        self._stop_watchdog.set()
        if self.pid != os.getpid():  # called by the master for a worker that vanished
            return
        if self.is_recycling:
            logger.warning(
                "worker pid %d exits, recycled on RSS (last %.1f MiB, cap %g MiB, %d requests)",
                os.getpid(),
                (self.last_rss_bytes or 0) / MIB,
                self.max_worker_rss_mb,
                self.requests,
            )

    def check(self, rss_bytes: int | None = None, *, worker: Any = None) -> bool:
        """Compare RSS (measured when not given) with the cap; over it, ask the worker to exit.

        Cheap enough for every response (one statm read, about 3 us). Returns True when the
        worker is being recycled (now or earlier).
        """
        if self.is_recycling:
            return True
        if self.is_disabled:
            return False
        _remember_running_loop()
        rss = self._rss_probe() if rss_bytes is None else rss_bytes
        self.checks += 1
        self.last_rss_bytes = rss
        if rss < self.max_rss_bytes:
            return False
        with self._lock:
            if self.is_recycling:
                return True
            self.is_recycling = True
        self._stop_watchdog.set()
        reason = (
            f"rss {rss / MIB:.1f} MiB >= max_worker_rss_mb {self.max_worker_rss_mb:g} "
            f"after {self.requests} requests, {self._clock() - self.started_at:.0f}s"
        )
        logger.warning("worker pid %d over its RSS cap: %s; recycling", os.getpid(), reason)
        target = worker if worker is not None else self._worker
        if self._exit_request is not None:
            self._exit_request(reason)
        else:
            request_worker_exit(reason, worker=target)
        return True

    def _watch(self) -> None:
        """Watchdog thread body: check every interval until recycling or exit."""
        interval = self.check_interval_seconds
        while interval is not None and not self._stop_watchdog.wait(interval):
            try:
                if self.check():
                    return
            except Exception:  # the watchdog must not die silently on a probe error
                logger.exception("RSS watchdog check failed")

    def stats(self) -> dict[str, Any]:
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
        }


class _CheckAfterRequest:
    """ASGI wrapper: after each HTTP request, check the worker's RSS (UvicornWorker).

    Thread safety: holds no state of its own; runs on the worker's event loop.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], recycler: RSSRecycler) -> None:
        self.app = app
        self.recycler = recycler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        _remember_running_loop()
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.recycler.requests += 1
            try:
                self.recycler.check()
            except Exception:  # a probe failure must not replace the app's own outcome
                logger.exception("RSS check after the request failed")


def active_recycler() -> RSSRecycler | None:
    """The RSSRecycler whose post_fork hook ran in this process, or None."""
    recycler = _active_recycler
    return recycler if recycler is not None and recycler.pid == os.getpid() else None


def _reset_for_tests() -> None:
    """Forget the recorded worker, the exit request and the active recycler."""
    global _worker, _worker_pid, _exit_reason, _exit_pid, _active_recycler, _loop, _loop_pid
    with _state_lock:
        _worker = _worker_pid = _exit_reason = _exit_pid = None
        _active_recycler = None
        _loop = _loop_pid = None
