"""Admin actions that reach every gunicorn worker, through files in the shared snapshot dir.

A request reaches one worker; clearing caches or tracing allocations must act on all of them.
The worker that got the request writes `cmd-<id>.json` into the directory its siblings already
share for metrics (tmpfs, private to this user, see app.core.shared_snapshots); every
worker polls that directory every POLL_SECONDS, marks the command taken in
`reply-<id>-<pid>.json`, runs the action once and replaces that file with its answer; the first
worker gathers the answers of every live worker (or of the one named) and answers with them.
Workers come and go during an action (a leaking worker is recycled every few seconds), so:
an action with a window (a trace) ends at the same instant on every worker, however late a
worker saw it; a worker that stops answers at once with its window so far; a worker forked
during the window takes it up too and is waited for; one that exits without answering is
reported as such instead of being waited for until the deadline. Without gunicorn (TestClient,
`make dev`) the action runs in this process only. Everything is bounded: commands expire, at
most MAX_PENDING are read per poll, the ids a worker has handled are a fixed-size deque.
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

from app.core.shared_snapshots import SharedSnapshots, is_process_alive

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # two scandirs of a few tiny files, ~30 us a poll
MAX_PENDING = 16
MAX_HANDLED = 64
# After the window: the slowest poll (POLL_SECONDS), the action's own report (a trace's two
# snapshots: ~0.05 s under make leak-report's load) and the reply, with room for a busy machine.
REPLY_MARGIN_SECONDS = 5.0
STOP_ANSWER_SECONDS = 2.0  # a stopping worker gives its running actions this long to answer
STALE_REPLY_SECONDS = 900.0  # longer than any trace window (trace.max_seconds <= 600)
_TAKEN = {"is_running": True}  # what reply-<id>-<pid>.json holds until the answer replaces it


class Window:
    """How long an action may run on this worker: until its sender's window ends, or sooner.

    The end is one instant for every worker (time.time(): the workers share a host and its
    clock), so a worker that saw the command late, or was forked during the window, ends with
    the others and answers in time. It ends sooner when this worker stops (a recycle): the
    action then answers with what it has, and `is_cut_short` says so.

    Thread safety: used on its worker's event loop only.
    """

    def __init__(self, ends_at: float, stopping: asyncio.Event) -> None:
        self.ends_at = ends_at
        self._stopping = stopping
        self.is_cut_short = False

    async def wait(self) -> None:
        """Return when the window ends, or as soon as this worker stops."""
        remaining = self.ends_at - time.time()
        if remaining > 0 and not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), remaining)
        self.is_cut_short = self._stopping.is_set() and time.time() < self.ends_at


Handler = Callable[[dict[str, Any], Window], Awaitable[dict[str, Any]]]


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
        self._stopping = asyncio.Event()

    @property
    def directory(self) -> Path | None:
        """The shared directory, or None when this process acts alone."""
        return self._shared.directory if self._shared is not None else None

    def start(self) -> None:
        """Poll for commands from sibling workers (only under gunicorn)."""
        if self._shared is not None:
            self._task = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self) -> None:
        """Stop polling; answer every command sent to this worker, windows cut short.

        A recycled worker stops in the middle of a trace window as often as not: its actions
        end now and answer with what they have, and a command it had not seen yet (sent while
        it drained) is taken up and answered the same way, so no sender waits until its
        deadline for a worker that is gone. Actions still running after STOP_ANSWER_SECONDS
        are cancelled.
        """
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._stopping.set()
        self._poll_logged()
        if not self._running:
            return
        _, late = await asyncio.wait(set(self._running), timeout=STOP_ANSWER_SECONDS)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task

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

        `seconds` is the action's window (a trace's): it ends `seconds` from now on every
        worker; answers are awaited until then plus REPLY_MARGIN_SECONDS, from the workers
        live now and from any forked meanwhile that took the command up. A worker that does
        not answer is listed with an error saying why (it exited, or the deadline passed).

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
        sent_at = time.time()
        ends_at = sent_at + seconds
        deadline = ends_at + REPLY_MARGIN_SECONDS
        with self._exclusive(action, deadline) if exclusive else contextlib.nullcontext():
            directory = self.directory
            if directory is None:
                return [await self._execute(action, params, Window(ends_at, self._stopping))]
            ident = uuid.uuid4().hex
            command = {
                "id": ident,
                "action": action,
                "params": params,
                "pid": pid,
                "sent_at": sent_at,
                "ends_at": ends_at,
                "deadline": deadline,
            }
            _write_atomic(directory / f"cmd-{ident}.json", command)
            try:
                return await self._gather(directory, ident, pids, deadline)
            finally:
                with contextlib.suppress(OSError):
                    (directory / f"cmd-{ident}.json").unlink()
                for path in directory.glob(f"reply-{ident}-*.json"):  # taken, never answered
                    with contextlib.suppress(OSError):
                        path.unlink()

    async def _gather(
        self, directory: Path, ident: str, pids: list[int], deadline: float
    ) -> list[dict[str, Any]]:
        replies: dict[int, dict[str, Any]] = {}
        taken: set[int] = set()  # workers that took the command up, the new ones included
        exited: set[int] = set()
        waiting = set(pids)
        while True:
            # Liveness before reading: what a worker wrote before it exited is on disk now.
            exited |= {w for w in waiting if not is_process_alive(w)}
            _read_replies(directory, ident, replies, taken)
            waiting = (set(pids) | taken) - replies.keys()
            if waiting <= exited or time.time() >= deadline:
                break
            await asyncio.sleep(POLL_SECONDS)
        for worker in waiting:
            if worker not in exited:
                error = "no answer before the deadline"
            elif worker in taken:
                error = "exited before it answered"
            else:
                error = "exited before it saw the command"
            replies[worker] = {"pid": worker, "error": error}
        return [replies[w] for w in pids] + [replies[w] for w in sorted(replies) if w not in pids]

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

    async def _execute(self, action: str, params: dict[str, Any], window: Window) -> dict[str, Any]:
        handler = self._handlers.get(action)
        if handler is None:
            return {"pid": os.getpid(), "error": f"unknown action {action!r}"}
        try:
            result = await handler(params, window)
        except Exception as exc:  # one worker's failure is reported, not raised in another
            logger.exception("admin action %s failed", action)
            return {"pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"}
        return {"pid": os.getpid(), **result}

    async def _poll_forever(self) -> None:
        while True:
            self._poll_logged()
            await asyncio.sleep(POLL_SECONDS)

    def _poll_logged(self) -> None:
        try:
            self._poll_once()
        except Exception:
            logger.exception("reading admin commands failed; trying again")

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
            sent_at = float(command.get("sent_at", 0))
            ends_at = float(command.get("ends_at", sent_at))
            if sent_at < ends_at <= now:
                continue  # its window closed before this worker (forked since) saw it
            task = asyncio.get_running_loop().create_task(self._answer(directory, command))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _answer(self, directory: Path, command: dict[str, Any]) -> None:
        ident = str(command["id"])
        path = directory / f"reply-{ident}-{os.getpid()}.json"
        seen_at = time.time()
        with contextlib.suppress(OSError):
            _write_atomic(path, {"pid": os.getpid(), **_TAKEN})  # its sender now waits for it
        window = Window(float(command.get("ends_at", seen_at)), self._stopping)
        action = str(command["action"])
        result = await self._execute(action, dict(command.get("params") or {}), window)
        with contextlib.suppress(OSError):
            if (directory / f"cmd-{ident}.json").exists():
                _write_atomic(path, result)
            else:  # its sender stopped waiting: leave nothing behind
                path.unlink()
        sent_at = float(command.get("sent_at", seen_at))
        logger.log(
            logging.INFO if window.ends_at > sent_at else logging.DEBUG,
            "admin %s %s: worker pid %d took it %.2f s after it was sent, answered after %.2f s%s",
            action,
            ident[:8],
            os.getpid(),
            seen_at - sent_at,
            time.time() - sent_at,
            " (window cut short: this worker is stopping)" if window.is_cut_short else "",
        )


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(data, file, separators=(",", ":"))
    os.replace(tmp, path)


def _read_replies(
    directory: Path, ident: str, replies: dict[int, dict[str, Any]], taken: set[int]
) -> None:
    """Add the answers to command `ident` to `replies` (their files go) and its takers to
    `taken`."""
    for path in directory.glob(f"reply-{ident}-*.json"):
        try:
            worker = int(path.stem.rsplit("-", 1)[1])
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # vanished, or not written by a worker: the next poll sees it
        taken.add(worker)
        if data.get("is_running") is not True and worker not in replies:
            replies[worker] = data
            with contextlib.suppress(OSError):
                path.unlink()
