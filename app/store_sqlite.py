"""SQLiteStore: the embedded store behind StoreBackend, with writes and a polled change log."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from app.store import (
    USER_COLUMNS,
    StoreUnavailableError,
    User,
    UserFields,
    UserStore,
    row_to_user,
)
from memsafe.invalidation import Invalidation

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_POLL_INTERVAL_SECONDS = 0.02
DEFAULT_CHANGE_LOG_ROWS = 10_000
MAX_POLL_ROWS = 1_000  # changes read per poll; the rest comes on the next poll
BUSY_TIMEOUT_SECONDS = 5.0  # a write waits this long for another process's write lock
TRIM_EVERY_WRITES = 100


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SQLiteStore:
    """StoreBackend on the SQLite file: pooled read-only reads, one serialised writer.

    Each write commits the row and a `changes` row in one transaction; the change's seq is
    the row's new version. Every worker polls `changes` every `poll_interval_seconds` (an
    indexed range read of a few microseconds) and invalidates what changed, so the workers
    of one machine stay coherent without a server. Chosen over `PRAGMA data_version`
    (says that something changed, not what: every worker would drop its whole cache on
    each write) and over a unix datagram socket (lossy, and a worker that was busy or
    recycling would miss changes; the log is durable and replayed from the last seq seen).
    The log keeps the last `change_log_rows` rows; a worker that fell further behind
    clears its cache.

    Thread safety: reads use UserStore's pool; writes hold one lock on one connection.
    """

    kind = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        offload_reads: bool = False,
        poll_interval_seconds: float = DEFAULT_POLL_INTERVAL_SECONDS,
        change_log_rows: int = DEFAULT_CHANGE_LOG_ROWS,
    ) -> None:
        self.path = path
        self.reader = UserStore(path)
        self.offload_reads = offload_reads
        self.poll_interval_seconds = poll_interval_seconds
        self.change_log_rows = change_log_rows
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None

    @property
    def connections(self) -> int:
        """Open read connections (the writer and the poller add one each when used)."""
        return self.reader.connections

    async def open(self) -> None:
        """Nothing to open up front: connections are made on first use."""

    async def close(self) -> None:
        """Close the reader pool and the writer connection."""
        self.reader.close()
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    async def _read(self, call: Callable[[], T]) -> T:
        try:
            if self.offload_reads:
                return await asyncio.to_thread(call)
            return call()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite store {str(self.path)!r}: {exc}") from exc

    async def check(self) -> None:
        """A fresh connection reads the seed marker: a corrupt or missing file shows at once."""
        if self.offload_reads:
            await asyncio.to_thread(self.reader.check)
        else:
            self.reader.check()

    async def get_user(self, user_id: int) -> User | None:
        """The user with `user_id`, or None."""
        return await self._read(lambda: self.reader.get_user(user_id))

    async def list_users(self, *, after_id: int, limit: int) -> list[User]:
        """Up to `limit` users with ids above `after_id`, in id order."""
        return await self._read(lambda: self.reader.list_users(after_id=after_id, limit=limit))

    async def count(self) -> int:
        """How many users there are."""
        return await self._read(self.reader.count)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            with self._write_lock:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result

        try:
            return await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite store {str(self.path)!r}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_SECONDS,
            )
            self._writer.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoint
        return self._writer

    def _log_change(self, conn: sqlite3.Connection, user_id: int) -> int:
        seq = int(
            conn.execute("INSERT INTO changes (user_id) VALUES (?)", (user_id,)).lastrowid or 0
        )
        if seq % TRIM_EVERY_WRITES == 0:
            conn.execute("DELETE FROM changes WHERE seq <= ?", (seq - self.change_log_rows,))
        return seq

    async def create_user(self, fields: UserFields) -> User:
        """Insert a user; returns it with its new id and version."""

        def work(conn: sqlite3.Connection) -> User:
            # Ids are never reused (SQLite would hand out a deleted top id again): a high-water
            # mark in `meta` remembers the largest id ever given.
            user_id = (
                1
                + conn.execute(
                    "SELECT MAX(COALESCE((SELECT MAX(id) FROM users), 0), COALESCE((SELECT "
                    "CAST(value AS INTEGER) FROM meta WHERE key = 'max_user_id'), 0))"
                ).fetchone()[0]
            )
            conn.execute(
                "INSERT INTO users (id, name, email, city, created_at) VALUES (?, ?, ?, ?, ?)",
                (user_id, fields["name"], fields["email"], fields["city"], _now()),
            )
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('max_user_id', ?)", (str(user_id),))
            version = self._log_change(conn, user_id)
            row = conn.execute(
                f"UPDATE users SET version = ? WHERE id = ? RETURNING {USER_COLUMNS}",
                (version, user_id),
            ).fetchone()
            return row_to_user(row)

        return await self._write(work)

    async def update_user(self, user_id: int, fields: UserFields) -> User | None:
        """Change the given fields; None when there is no such user."""
        assignments = ", ".join(f"{name} = ?" for name in fields)

        def work(conn: sqlite3.Connection) -> User | None:
            if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
                return None
            version = self._log_change(conn, user_id)
            row = conn.execute(
                f"UPDATE users SET {assignments}, version = ? WHERE id = ? RETURNING "
                f"{USER_COLUMNS}",
                (*fields.values(), version, user_id),
            ).fetchone()
            return row_to_user(row)

        return await self._write(work)

    async def delete_user(self, user_id: int) -> int | None:
        """Delete a user; returns the deletion's version, None when there was no such user."""

        def work(conn: sqlite3.Connection) -> int | None:
            if conn.execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount == 0:
                return None
            return self._log_change(conn, user_id)

        return await self._write(work)

    async def subscribe(self) -> AsyncIterator[Sequence[Invalidation]]:
        """Poll the change log from its current end; yield each batch of changes."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        try:
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
            last = int(row[0])
            yield []
            while True:
                await asyncio.sleep(self.poll_interval_seconds)
                rows = conn.execute(
                    "SELECT seq, user_id FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                    (last, MAX_POLL_ROWS),
                ).fetchall()
                if not rows:
                    continue
                batch: list[Invalidation] = []
                if rows[0][0] != last + 1:
                    batch.append(Invalidation(None))  # the log was trimmed past us
                batch.extend(Invalidation(user_id, seq) for seq, user_id in rows)
                last = rows[-1][0]
                yield batch
        finally:
            conn.close()
