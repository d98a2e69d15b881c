"""Admin actions that reach every gunicorn worker, through files in the shared snapshot dir.

A request reaches one worker; clearing caches or tracing allocations must act on all of them.
The worker that got the request writes `cmd-<id>.json` into the directory its siblings already
share for metrics (tmpfs, private to this user, see app.core.shared_snapshots); every
worker polls that directory every POLL_SECONDS, runs the action once and writes
`reply-<id>-<pid>.json`; the first worker gathers the replies of every live worker (or of the
one named) and answers with them. Without gunicorn (TestClient, `make dev`) the action runs in
this process only. Everything is bounded: commands expire, at most MAX_PENDING are read per
poll, the ids a worker has handled are a fixed-size deque.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from app.core.shared_snapshots import SharedSnapshots

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # two scandirs of a few tiny files, ~30 us a poll
MAX_PENDING = 16
MAX_HANDLED = 64
REPLY_MARGIN_SECONDS = 5.0
STALE_REPLY_SECONDS = 900.0  # longer than any trace window (trace.max_seconds <= 600)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class BusyError(RuntimeError):
    """An exclusive action (a trace) is already running on this master's workers."""


class UnknownWorkerError(LookupError):
    """The named pid is not a live worker of this master."""


class CommandBus:
    """Runs admin actions on every worker of this gunicorn master (or on this process alone).

    Thread safety: used from one event loop per worker; workers coordinate through atomic
    file operations (os.replace, O_EXCL).
    """

    def __init__(self, shared: SharedSnapshots | None, handlers: dict[str, Handler]) -> None:
        self._shared = shared
        self._handlers = handlers
        self._handled: deque[str] = deque(maxlen=MAX_HANDLED)
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._local_locks: set[str] = set()

    @property
    def directory(self) -> Path | None:
        """The shared directory, or None when this process acts alone."""
        return self._shared.directory if self._shared is not None else None

    def start(self) -> None:
        """Poll for commands from sibling workers (only under gunicorn)."""
        if self._shared is not None:
            self._task = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self) -> None:
        """Stop polling and cancel actions still running."""
        tasks = [t for t in (self._task, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    def worker_pids(self) -> list[int]:
        """This worker's pid, then its live siblings' (from their published snapshots)."""
        own = os.getpid()
        if self._shared is None:
            return [own]
        others = sorted({int(s["pid"]) for s in self._shared.others(own) if "pid" in s})
        return [own, *others]

    async def run(
        self,
        action: str,
        params: dict[str, Any],
        *,
        pid: int | None = None,
        seconds: float = 0.0,
        exclusive: bool = False,
    ) -> list[dict[str, Any]]:
        """Run `action` on every worker (or on `pid`); each result carries its worker's pid.

        `seconds` is how long the action itself takes (a trace window); replies are awaited
        for that plus REPLY_MARGIN_SECONDS. A worker that does not answer in time is listed
        with an error.

        Raises:
            UnknownWorkerError: `pid` is not a live worker.
            BusyError: `exclusive` and the same action is running already.
        """
        pids = self.worker_pids()
        if pid is not None:
            if pid not in pids:
                allowed = ", ".join(map(str, pids))
                msg = f"pid {pid} is not a live worker of this server; allowed: {allowed}"
                raise UnknownWorkerError(msg)
            pids = [pid]
        deadline = time.time() + seconds + REPLY_MARGIN_SECONDS
        with self._exclusive(action, deadline) if exclusive else contextlib.nullcontext():
            directory = self.directory
            if directory is None:
                return [await self._execute(action, params)]
            ident = uuid.uuid4().hex
            command = {
                "id": ident,
                "action": action,
                "params": params,
                "pid": pid,
                "deadline": deadline,
            }
            _write_atomic(directory / f"cmd-{ident}.json", command)
            try:
                return await self._gather(directory, ident, pids, deadline)
            finally:
                with contextlib.suppress(OSError):
                    (directory / f"cmd-{ident}.json").unlink()

    async def _gather(
        self, directory: Path, ident: str, pids: list[int], deadline: float
    ) -> list[dict[str, Any]]:
        replies: dict[int, dict[str, Any]] = {}
        while len(replies) < len(pids) and time.time() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            for worker in pids:
                path = directory / f"reply-{ident}-{worker}.json"
                if worker in replies or not path.exists():
                    continue
                with contextlib.suppress(OSError, ValueError):
                    replies[worker] = json.loads(path.read_text(encoding="utf-8"))
                    path.unlink()
        late = [w for w in pids if w not in replies]
        for worker in late:
            replies[worker] = {"pid": worker, "error": "no answer before the deadline"}
        return [replies[worker] for worker in pids]

    @contextlib.contextmanager
    def _exclusive(self, action: str, deadline: float) -> Any:
        directory = self.directory
        if directory is None:
            if action in self._local_locks:
                raise BusyError(f"a {action} is already running; allowed: one at a time")
            self._local_locks.add(action)
            try:
                yield
            finally:
                self._local_locks.discard(action)
            return
        path = directory / f"lock-{action}"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                with contextlib.suppress(OSError, ValueError):
                    if float(path.read_text()) > time.time():
                        msg = f"a {action} is already running; allowed: one at a time"
                        raise BusyError(msg) from None
                    path.unlink()  # left by a worker that died mid-action
                continue
            with os.fdopen(fd, "w") as file:
                file.write(repr(deadline))
            break
        else:
            raise BusyError(f"a {action} is already running; allowed: one at a time")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    async def _execute(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        handler = self._handlers.get(action)
        if handler is None:
            return {"pid": os.getpid(), "error": f"unknown action {action!r}"}
        try:
            result = await handler(params)
        except Exception as exc:  # one worker's failure is reported, not raised in another
            logger.exception("admin action %s failed", action)
            return {"pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"}
        return {"pid": os.getpid(), **result}

    async def _poll_forever(self) -> None:
        while True:
            try:
                self._poll_once()
            except Exception:
                logger.exception("reading admin commands failed; trying again")
            await asyncio.sleep(POLL_SECONDS)

    def _poll_once(self) -> None:
        directory = self.directory
        if directory is None:
            return
        own = os.getpid()
        now = time.time()
        for reply in directory.glob("reply-*.json"):  # answers nobody waited for any more
            with contextlib.suppress(OSError):
                if now - reply.stat().st_mtime > STALE_REPLY_SECONDS:
                    reply.unlink()
        paths = sorted(directory.glob("cmd-*.json"))[:MAX_PENDING]
        for path in paths:
            try:
                command = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            ident = str(command.get("id"))
            if ident in self._handled:
                continue
            if float(command.get("deadline", 0)) < now:
                with contextlib.suppress(OSError):
                    path.unlink()  # its sender stopped waiting (or died)
                continue
            if command.get("pid") not in (None, own):
                continue
            self._handled.append(ident)
            task = asyncio.get_running_loop().create_task(self._answer(directory, command))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _answer(self, directory: Path, command: dict[str, Any]) -> None:
        result = await self._execute(str(command["action"]), dict(command.get("params") or {}))
        path = directory / f"reply-{command['id']}-{os.getpid()}.json"
        with contextlib.suppress(OSError):
            _write_atomic(path, result)


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(data, file, separators=(",", ":"))
    os.replace(tmp, path)
