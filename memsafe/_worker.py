"""This worker process under gunicorn: its recorded worker, exit request and event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from memsafe.recycle import RSSRecycler

# One logger for recycling, whichever module logs (users filter on "memsafe.recycle").
logger = logging.getLogger("memsafe.recycle")

STOP_ACCEPTING_GRACE_SECONDS: Final = 0.5
# gunicorn's own workers (sync, gthread, gevent, tornado, asgi) leave their serving loop when
# worker.alive turns False, then drain in-flight requests. Anything else (uvicorn_worker's
# UvicornWorker runs uvicorn's Server, which never reads worker.alive) gets SIGTERM instead.
# Subclasses of gunicorn's workers count (they inherit the loop); gunicorn.workers.base.Worker
# alone does not: UvicornWorker derives from it straight.
_ALIVE_FLAG_MODULE_PREFIX: Final = "gunicorn.workers."
_BASE_WORKER_MODULE: Final = "gunicorn.workers.base"


class _ProcessState:
    """This process's recycling state: the worker, the exit request, the recycler, the loop.

    One object per process: a forked child starts with a fresh one (os.register_at_fork), so
    nothing recorded in the master or a parent worker leaks into a new worker.

    Thread safety: ``lock`` guards the exit decision; the other fields are set once per
    process (by a gunicorn hook or on the event loop) and read from any thread.
    """

    __slots__ = ("exit_reason", "lock", "loop", "recycler", "worker")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.worker: Any = None
        self.exit_reason: str | None = None
        self.recycler: RSSRecycler | None = None
        self.loop: asyncio.AbstractEventLoop | None = None


_state = _ProcessState()


def _reset() -> None:
    """Start this process's recycling state afresh (after fork; memsafe.testing.reset)."""
    global _state
    _state = _ProcessState()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset)


def _honours_alive_flag(worker: object) -> bool:
    """True when ``worker`` is (a subclass of) one of gunicorn's own classes (they poll alive)."""
    return any(
        cls.__module__.startswith(_ALIVE_FLAG_MODULE_PREFIX)
        and cls.__module__ != _BASE_WORKER_MODULE
        for cls in type(worker).__mro__
    )


def record_worker(worker: object) -> None:
    """Remember the gunicorn worker object of this process (RSSRecycler.post_fork does it)."""
    state = _state
    with state.lock:
        state.worker = worker
        state.exit_reason = None


def current_worker() -> Any:
    """The gunicorn worker recorded in this process, or None (not under gunicorn, or no hook)."""
    return _state.worker


def is_gunicorn_worker() -> bool:
    """True in a gunicorn worker whose RSSRecycler hooks ran (recycle_worker can act)."""
    return _state.worker is not None


def is_exit_requested() -> bool:
    """True once request_worker_exit has been called in this process."""
    return _state.exit_reason is not None


def _remember_running_loop() -> None:
    """Note this worker's event loop when called on it (a cheap no-op once known)."""
    state = _state
    if state.loop is not None:
        return
    try:
        state.loop = asyncio.get_running_loop()
    except RuntimeError:
        return


def _worker_loop() -> asyncio.AbstractEventLoop | None:
    """This worker's event loop: the running one, else the one noted earlier, if still open."""
    _remember_running_loop()
    loop = _state.loop
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
    """Stop this worker process now: accept nothing more, finish requests in flight, exit.

    The low-level step after a drain (:func:`recycle_worker` drains first). Under one of
    gunicorn's own worker classes (``worker_class = "asgi"`` included) this sets
    ``worker.alive = False``: the worker closes its listeners, waits up to
    ``graceful_timeout`` for open connections and runs the lifespan shutdown. Otherwise
    (``uvicorn_worker.UvicornWorker``, or no worker recorded) it sends SIGTERM to itself,
    which uvicorn's Server handles by draining in-flight requests. When this worker's event
    loop is known, the worker first stops accepting on its listeners, in this process only,
    and for uvicorn waits ``grace_seconds`` before SIGTERM (see
    :func:`_stop_accepting_then_terminate`). Outside a supervisor that replaces dead workers
    (plain ``uvicorn app:app``) this stops the server. Only the first call in a process acts.

    Thread safety: safe from any thread (the decision is taken under a lock, loop work is
    handed to the loop with call_soon_threadsafe, SIGTERM reaches the main thread).
    """
    pid = os.getpid()
    state = _state
    with state.lock:
        if state.exit_reason is not None:
            logger.debug(
                "worker exit already requested (%s); ignoring %r", state.exit_reason, reason
            )
            return
        state.exit_reason = reason
        target = worker if worker is not None else state.worker
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
