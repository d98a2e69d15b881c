"""A worker whose start-up fails exits within seconds with gunicorn's boot-error code."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TypeVar

from memsafe import is_gunicorn_worker

logger = logging.getLogger(__name__)

# gunicorn.arbiter.Arbiter.WORKER_BOOT_ERROR: the master stops every worker and exits with it
# ("Worker failed to boot."), so a platform restarts the service and shows why.
WORKER_BOOT_ERROR = 3
# Seconds a worker whose start-up failed may take to exit by itself before it is ended with
# os._exit. gunicorn's own exit takes milliseconds; a non-daemon thread left behind (a
# threadpool thread, a driver's pool thread) would otherwise keep it alive forever.
EXIT_GRACE_SECONDS = 2.0

AppT = TypeVar("AppT")
Lifespan = Callable[[AppT], AbstractAsyncContextManager[None]]


class WorkerStartupError(RuntimeError):
    """The lifespan's start-up failed; the message names the original error."""


def exit_failsafe(
    grace_seconds: float = EXIT_GRACE_SECONDS,
    *,
    exit_process: Callable[[int], object] = os._exit,
) -> threading.Timer:
    """Start a daemon timer that ends this process with WORKER_BOOT_ERROR after grace_seconds.

    A daemon thread does not hold the interpreter open, so when the worker exits normally the
    timer simply dies with it; it only fires when something else keeps the process alive.
    """

    def fire() -> None:
        main = threading.main_thread()
        holders = sorted(t.name for t in threading.enumerate() if not t.daemon and t is not main)
        logger.error(
            "worker still alive %.1fs after its start-up failed (non-daemon threads: %s); "
            "exiting now with code %d",
            grace_seconds,
            ", ".join(holders) or "none",
            WORKER_BOOT_ERROR,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        exit_process(WORKER_BOOT_ERROR)

    timer = threading.Timer(grace_seconds, fire)
    timer.daemon = True
    timer.name = "startup-exit-failsafe"
    timer.start()
    return timer


def guard_startup(lifespan: Lifespan[AppT]) -> Lifespan[AppT]:
    """Wrap a lifespan: a failed start-up is logged once and the worker is sure to exit.

    The original error is logged here with its traceback; the server then sees a short
    WorkerStartupError (its own log line names the cause without repeating the traceback)
    and exits with WORKER_BOOT_ERROR, which makes gunicorn's master halt. Under gunicorn an
    exit failsafe is armed first. Without gunicorn (TestClient, uvicorn --reload) the error
    simply propagates.
    """

    @asynccontextmanager
    async def guarded(app: AppT) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(lifespan(app))
            except Exception as exc:
                under_gunicorn = is_gunicorn_worker()
                logger.error(
                    "worker start-up failed: %s: %s%s",
                    type(exc).__name__,
                    exc,
                    f"; exiting with code {WORKER_BOOT_ERROR}, the master stops"
                    if under_gunicorn
                    else "",
                    exc_info=exc,
                )
                if under_gunicorn:
                    exit_failsafe()
                msg = f"{type(exc).__name__}: {exc} (traceback logged above)"
                raise WorkerStartupError(msg) from None
            yield

    return guarded
