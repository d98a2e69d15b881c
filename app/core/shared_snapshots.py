"""Each gunicorn worker's latest snapshot in one small file of a private, shared directory."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

JSONObject = dict[str, Any]
SHARED_DIR_MODE = 0o700  # only this user: the directory sits in world-writable /dev/shm


class UnsafeDirectoryError(PermissionError):
    """The shared metrics directory is a symlink, not a directory, or not private to this user."""


class SharedSnapshots:
    """Each gunicorn worker's metrics snapshot in one small file, so any worker can report all.

    A scrape through Render's proxy reaches one worker at random; without sharing it would see
    only that worker's counters. prometheus_client's multiprocess mode solves this with mmap
    files per pid that are never deleted (they pile up in memory-backed tmpfs with every
    recycled worker). Here each live worker owns exactly one JSON file, rewritten atomically
    every interval and deleted when the worker stops; the reader deletes files of dead pids.
    The metrics therefore take at most one file per live worker (a few KiB each). With
    `keep_exited` (the memory history), an exited worker's file stays until it is
    `max_age_seconds` old, so its last hour stays visible next to its replacement's.

    Thread safety: each worker writes only its own file (os.replace is atomic); readers
    tolerate files vanishing or half-written by skipping them.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_age_seconds: float,
        prefix: str = "worker",
        keep_exited: bool = False,
    ) -> None:
        # prefix: one kind of file per prefix in the same directory ("worker" metrics,
        # "history"). keep_exited: an exited worker's file stays until max_age_seconds (a
        # recycled worker's memory history is the interesting one); readers see "is_alive".
        self.directory = directory
        self.max_age_seconds = max_age_seconds
        self.prefix = prefix
        self.keep_exited = keep_exited

    def _path(self, pid: int) -> Path:
        return self.directory / f"{self.prefix}-{pid}.json"

    def ensure_directory(self) -> None:
        """Create the directory (mode 0o700) if missing and check that it is safe to use.

        The base is world-writable /dev/shm, so anyone could create the name first, as a
        symlink or as their own directory. It must be a real directory (not followed through a
        symlink), owned by this user and writable by no one else.

        Raises:
            UnsafeDirectoryError: when it is not; OSError when it cannot be created.
        """
        with contextlib.suppress(FileExistsError):
            self.directory.mkdir(mode=SHARED_DIR_MODE, parents=True)
        info = os.lstat(self.directory)
        problem = None
        if stat.S_ISLNK(info.st_mode):
            problem = "is a symlink"
        elif not stat.S_ISDIR(info.st_mode):
            problem = "is not a directory"
        elif info.st_uid != os.getuid():
            problem = f"is owned by uid {info.st_uid}, not {os.getuid()}"
        elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problem = f"is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
        if problem is not None:
            msg = (
                f"shared metrics directory {str(self.directory)!r} {problem}; allowed: a "
                f"directory owned by uid {os.getuid()}, not writable by group or others"
            )
            raise UnsafeDirectoryError(msg)

    def publish(self, snapshot: JSONObject) -> None:
        """Write this worker's snapshot (atomic replace) into the checked directory."""
        self.ensure_directory()
        pid = int(snapshot["pid"])
        tmp = self.directory / f".{self.prefix}-{pid}.tmp"
        data = json.dumps(snapshot, separators=(",", ":")).encode()
        # O_NOFOLLOW: never write through a link planted under the temporary name.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, self._path(pid))

    def remove(self, pid: int) -> None:
        """Delete the snapshot of `pid` (its worker is stopping)."""
        with contextlib.suppress(FileNotFoundError):
            self._path(pid).unlink()

    def others(self, own_pid: int, max_files: int | None = None) -> list[JSONObject]:
        """Fresh snapshots of the other live workers; stale or dead workers' files are removed.

        With `keep_exited`, dead workers' files are kept (until stale) and each snapshot gets
        `is_alive`; with `max_files`, only the newest that many are read, older ones removed.
        """
        snapshots: list[JSONObject] = []
        if not self._is_existing_directory_safe():
            return snapshots  # missing, or not ours: read nothing planted by someone else
        try:
            paths = list(self.directory.glob(f"{self.prefix}-*.json"))
        except OSError:
            return snapshots
        now = time.time()
        found: list[tuple[float, int, Path]] = []
        for path in paths:
            try:
                pid = int(path.stem.removeprefix(f"{self.prefix}-"))
                mtime = path.stat().st_mtime
            except (ValueError, OSError):
                continue
            if pid != own_pid:
                found.append((mtime, pid, path))
        found.sort(reverse=True)
        for index, (mtime, pid, path) in enumerate(found):
            try:
                is_alive = is_process_alive(pid)
                is_stale = now - mtime > self.max_age_seconds
                is_extra = max_files is not None and index >= max_files
                if is_stale or is_extra or not (is_alive or self.keep_exited):
                    path.unlink()
                    continue
                snapshot = json.loads(path.read_text(encoding="utf-8"))
                if self.keep_exited:
                    snapshot["is_alive"] = is_alive
                snapshots.append(snapshot)
            except (OSError, ValueError):
                continue  # vanished or being replaced: the next scrape sees it
        return snapshots

    def _is_existing_directory_safe(self) -> bool:
        try:
            info = os.lstat(self.directory)
        except OSError:
            return False
        return (
            stat.S_ISDIR(info.st_mode)
            and info.st_uid == os.getuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        )


def is_process_alive(pid: int) -> bool:
    """True while a process `pid` exists (a sibling worker, seen from another worker)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def shared_snapshot_dir(master_pid: int) -> Path:
    """Where the workers of the gunicorn master `master_pid` share snapshots (tmpfs if any)."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return base / f"app-metrics-{master_pid}"
