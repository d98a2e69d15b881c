"""Overlapped recycling under gunicorn: the replacement serves before the old worker stops.

The recycling worker asks the master for one more worker (SIGTTIN), keeps serving until
that worker reports ready, and only then drains and exits; the master's ``child_exit``
hook gives the extra slot back (``num_workers -= 1``) when the old worker is reaped, so no
third worker is forked. Workers and master talk through marker files in one private
directory per master: ``handoff-<pid>`` (a worker waits for its replacement),
``ready-<pid>`` (a worker booted while a handoff was pending) and ``claimed-<pid>`` (that
worker took over from one waiting worker: two workers recycling at once each wait for their
own replacement).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)

HANDOFF_PREFIX: Final = "handoff-"
READY_PREFIX: Final = "ready-"
CLAIMED_PREFIX: Final = "claimed-"
POLL_SECONDS: Final = 0.02


def handoff_dir(master_pid: int) -> Path:
    """The marker directory of the gunicorn master ``master_pid`` (one per user and master)."""
    return Path(tempfile.gettempdir()) / f"memsafe-handoff-{os.getuid()}-{master_pid}"


def _private_dir(path: Path) -> Path | None:
    """``path`` created 0700 if missing; None unless it is a real directory owned by us."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    try:
        info = os.lstat(path)
    except OSError:
        return None
    is_ours = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
    if not is_ours or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        logger.warning("%s is not a private directory of ours: recycling without overlap", path)
        return None
    return path


def _names(directory: Path, prefix: str) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(directory) if entry.name.startswith(prefix)}
    except OSError:
        return set()


def start_replacement(
    master_pid: int,
    then: Callable[[], None],
    *,
    timeout_seconds: float,
    kill: Callable[[int, int], None] = os.kill,
) -> bool:
    """In the recycling worker: ask for a replacement, call ``then`` once it is ready.

    ``then`` runs on a daemon thread, when a worker booted after the request reports ready,
    or after ``timeout_seconds`` (logged). Returns False (and starts nothing) when the
    marker directory or the signal cannot be used; the caller then drains at once.
    """
    directory = _private_dir(handoff_dir(master_pid))
    if directory is None:
        return False
    marker = directory / f"{HANDOFF_PREFIX}{os.getpid()}"
    try:
        marker.touch(mode=0o600)
        ready_before = _names(directory, READY_PREFIX)
        kill(master_pid, signal.SIGTTIN)
    except OSError as exc:
        logger.warning("cannot ask master %d for a replacement (%s): no overlap", master_pid, exc)
        with contextlib.suppress(OSError):
            marker.unlink()
        return False

    def wait_then_go() -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if _claim(directory, _names(directory, READY_PREFIX) - ready_before):
                logger.info("worker pid %d: replacement ready, draining now", os.getpid())
                break
            time.sleep(POLL_SECONDS)
        else:
            logger.warning(
                "worker pid %d: no replacement ready after %.0fs; draining anyway",
                os.getpid(),
                timeout_seconds,
            )
        then()

    threading.Thread(target=wait_then_go, name="memsafe-recycle-handoff", daemon=True).start()
    logger.warning("worker pid %d: asked master %d for a replacement", os.getpid(), master_pid)
    return True


def _claim(directory: Path, ready: set[str]) -> bool:
    """Take one of the ``ready`` replacements for this worker (atomic rename); True if won."""
    for name in sorted(ready):
        claimed = CLAIMED_PREFIX + name.removeprefix(READY_PREFIX)
        with contextlib.suppress(OSError):  # another waiting worker took it first
            os.rename(directory / name, directory / claimed)
            return True
    return False


def mark_ready(master_pid: int) -> None:
    """In a worker that now serves: tell any worker waiting for a replacement."""
    directory = handoff_dir(master_pid)
    if not _names(directory, HANDOFF_PREFIX):
        return
    with contextlib.suppress(OSError):
        (directory / f"{READY_PREFIX}{os.getpid()}").touch(mode=0o600)


def give_back_slot(server: Any, worker_pid: int) -> bool:
    """In the master, for a reaped worker: undo its SIGTTIN; True when it had asked for one."""
    directory = handoff_dir(os.getpid())
    for prefix in (READY_PREFIX, CLAIMED_PREFIX):
        with contextlib.suppress(OSError):
            (directory / f"{prefix}{worker_pid}").unlink()
    try:
        (directory / f"{HANDOFF_PREFIX}{worker_pid}").unlink()
    except OSError:
        return False
    count = getattr(server, "num_workers", None)
    if isinstance(count, int) and count > 1:
        server.num_workers = count - 1
        logger.info("worker pid %d replaced; back to %d worker(s)", worker_pid, count - 1)
    return True


def remove_dir() -> None:
    """In the master at exit: remove its marker directory."""
    shutil.rmtree(handoff_dir(os.getpid()), ignore_errors=True)
