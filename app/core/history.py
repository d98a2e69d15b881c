"""Each worker's memory history: one sampling task per worker, shared with its siblings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from app.core.shared_snapshots import SharedSnapshots, UnsafeDirectoryError
from memsafe import MemoryHistory

if TYPE_CHECKING:
    from app.api.deps import AppState
    from app.core.config import Settings

logger = logging.getLogger(__name__)

HISTORY_PREFIX = "history"


class WorkerHistory:
    """This worker's MemoryHistory, the task that samples it, and its siblings' copies.

    Under gunicorn (with monitor.metrics_share_seconds set) the history is written every
    sample to `history-<pid>.json` in the shared snapshot directory (one file per worker,
    replaced atomically); an exited worker's file is kept for one history window, so a
    recycled worker's last hour stays visible, and at most `history.max_workers` files are
    read (older ones deleted). Without gunicorn (TestClient, `make dev`) or without sharing it
    serves this process only.
    Thread safety: sampled from one asyncio task; reads may come from any thread.
    """

    def __init__(self, settings: Settings, state: AppState) -> None:
        config = settings.history
        if config.interval_seconds is None:
            msg = "history.interval_seconds is null: history is off"
            raise ValueError(msg)
        self.interval_seconds = config.interval_seconds
        self.max_workers = config.max_workers
        self.history = MemoryHistory(max_samples=config.max_samples, max_events=config.max_events)
        self._state = state
        self._shared: SharedSnapshots | None = None
        if state.shared is not None:
            window = config.max_samples * config.interval_seconds
            self._shared = SharedSnapshots(
                state.shared.directory,
                max_age_seconds=window + 3 * config.interval_seconds,
                prefix=HISTORY_PREFIX,
                keep_exited=True,
            )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Record a start event and sample every interval from now on."""
        self.history.add_event("start", f"worker {os.getpid()} ready")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, *, is_recycle: bool = False) -> None:
        """Stop sampling; record why the worker stops (a recycle or a plain stop), publish it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        kind = "recycle" if is_recycle else "stop"
        self.history.add_event(kind, f"worker {os.getpid()} stopping")
        self.sample()
        self._publish()

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
                self._publish()
            except Exception:
                logger.exception("memory history sample failed; trying again next interval")
            await asyncio.sleep(self.interval_seconds)

    def sample(self) -> None:
        """Take one sample of this worker now."""
        state = self._state
        self.history.record(state.manager, state.cleanup)

    def _publish(self) -> None:
        if self._shared is None:
            return
        try:
            self._shared.publish(self.own())
        except UnsafeDirectoryError as exc:
            logger.warning("%s; the history shows this worker only from now on", exc)
            self._shared = None
        except OSError:
            logger.exception("publishing the memory history for sibling workers failed")

    def own(self) -> dict[str, Any]:
        """This worker's history as JSON-ready data."""
        data: dict[str, Any] = dict(self.history.as_dict())
        data["pid"] = os.getpid()
        data["is_alive"] = True
        return data

    def workers(self) -> list[dict[str, Any]]:
        """This worker's history first, then its siblings' (live, then recently exited)."""
        own = self.own()
        own["is_self"] = True
        result = [own]
        if self._shared is not None:
            others = self._shared.others(own["pid"], max_files=self.max_workers - 1)
            others.sort(key=lambda w: (not w.get("is_alive", False), w.get("pid", 0)))
            result.extend(others)
        return result


def thresholds_mb(settings: Settings) -> dict[str, int | None]:
    """The RSS thresholds of the profile a chart draws against, in MiB."""
    mem = settings.memory
    return {
        "soft_limit_mb": mem.soft_limit_mb,
        "hard_limit_mb": mem.hard_limit_mb,
        "recycle_limit_mb": mem.recycle_limit_mb,
        "max_worker_rss_mb": settings.server.max_worker_rss_mb,
    }
