"""The store interface, its errors, and the embedded SQLite file: created, migrated, seeded once."""

from __future__ import annotations

import fcntl
import logging
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from memsafe.invalidation import Invalidation

logger = logging.getLogger(__name__)

SEED_BATCH_ROWS = 5_000
SEED_RANDOM = 20_240_601  # fixed seed: every fresh clone gets the same demo users
CONNECTION_CACHE_KIB = 1024  # SQLite page cache per connection; the table is ~1 MiB
# Pool size: reads take microseconds, so a few connections serve the whole threadpool; this
# bounds open fds and page caches (max_connections x CONNECTION_CACHE_KIB) per worker.
DEFAULT_MAX_CONNECTIONS = 4
_FIRST = (
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Barbara",
    "Ken",
    "Guido",
    "Margaret",
    "Dennis",
    "Frances",
)
_LAST = ("Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Thompson", "Rossum", "Hamilton")
_CITIES = ("Berlin", "Lagos", "Lima", "Osaka", "Oslo", "Pune", "Quito", "Seattle", "Sydney")

# Versioned schema: entry N moves a database from PRAGMA user_version N-1 to N, in the same
# transaction as the version bump. Plain SQL in the code: two small steps do not need a tool.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL,
        city TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # Writes: each row carries the version of its last change; `changes` is the change log
    # every worker polls (seq is the version: AUTOINCREMENT never reuses a number).
    """
    ALTER TABLE users ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE IF NOT EXISTS changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL
    );
    """,
)
USER_COLUMNS = "id, name, email, city, created_at, version"

User = dict[str, Any]
UserFields = Mapping[str, str]


class StoreUnavailableError(RuntimeError):
    """The backing database cannot answer (corrupt or missing file, server down).

    The app answers 503 `{"error": "store_unavailable"}` for it and /health marks the `store`
    check failing; every store raises it (never the driver's own error) so callers need one
    except clause. The message names the store and the driver's reason.
    """


class StoreBackend(Protocol):
    """What the users service needs from a store; SQLite and PostgreSQL implement it.

    Every user dict has `id, name, email, city, created_at, version`, where `version` grows
    with every write (a store-wide counter, never reused), so caches can order copies.
    Failures of the database raise StoreUnavailableError.
    """

    kind: str

    @property
    def connections(self) -> int: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def get_user(self, user_id: int) -> User | None: ...

    async def list_users(self, *, after_id: int, limit: int) -> list[User]: ...

    async def create_user(self, fields: UserFields) -> User: ...

    async def update_user(self, user_id: int, fields: UserFields) -> User | None: ...

    async def delete_user(self, user_id: int) -> int | None: ...

    async def count(self) -> int: ...

    async def check(self) -> None:
        """Raise StoreUnavailableError unless the database answers now (health checks)."""

    def subscribe(self) -> AsyncIterator[Sequence[Invalidation]]: ...


def row_to_user(row: Sequence[Any]) -> User:
    """A users row in USER_COLUMNS order as the dict the API serves."""
    return {
        "id": row[0],
        "name": row[1],
        "email": row[2],
        "city": row[3],
        "created_at": row[4],
        "version": row[5],
    }


# SQLite primary result codes that mean the database cannot answer, whatever the query:
# BUSY, LOCKED, NOMEM, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB. Others (a syntax
# error, a write to a read-only connection) are bugs and stay the driver's own error.
# Ref: https://www.sqlite.org/rescode.html
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 10, 11, 13, 14, 15, 26})


def _is_unavailable(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _UNAVAILABLE_CODES


def _unavailable(path: Path, exc: BaseException) -> StoreUnavailableError:
    msg = (
        f"store {str(path)!r} cannot answer: {type(exc).__name__}: {exc}; allowed: a readable "
        "SQLite database (restore the file, or delete it to re-seed the demo users)"
    )
    return StoreUnavailableError(msg)


def _demo_user(user_id: int, rng: random.Random) -> tuple[int, str, str, str, str]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    day = 1 + user_id % 28
    return (
        user_id,
        f"{first} {last}",
        f"{first.lower()}.{last.lower()}{user_id}@example.com",
        rng.choice(_CITIES),
        f"2024-{1 + user_id % 12:02d}-{day:02d}T00:00:00Z",
    )


def ensure_seeded(path: Path, users: int) -> bool:
    """Create and migrate the database at `path`; seed `users` demo users into an empty table.

    Safe when several processes call it at once: an exclusive flock on `<path>.lock` serialises
    them, and each migration and the seed commit in one transaction, so a crash mid-way leaves
    no half-done step. A table with rows is never re-seeded: writes survive a restart.
    Returns True when this call did the seeding.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            return _seed_locked(path, users)
        except sqlite3.Error as exc:
            if _is_unavailable(exc):
                raise _unavailable(path, exc) from None
            raise
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _seed_locked(path: Path, users: int) -> bool:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        _migrate(conn)
        if conn.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()[0] or users == 0:
            return False
        started = time.perf_counter()
        rng = random.Random(SEED_RANDOM)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for start in range(1, users + 1, SEED_BATCH_ROWS):
                stop = min(start + SEED_BATCH_ROWS, users + 1)
                conn.executemany(
                    "INSERT INTO users (id, name, email, city, created_at) VALUES (?, ?, ?, ?, ?)",
                    (_demo_user(i, rng) for i in range(start, stop)),
                )
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('seeded_users', ?)",
                (str(users),),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        logger.info(
            "seeded %d demo users into %s in %.2fs", users, path, time.perf_counter() - started
        )
        return True
    finally:
        conn.close()


def _migrate(conn: sqlite3.Connection) -> None:
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        logger.info("sqlite schema migrated to version %d", version)


class UserStore:
    """Read-only access to the users table through a small pool of SQLite connections.

    Each read borrows a connection and returns it, so at most `max_connections` are ever open
    however many threads read (anyio retires idle threadpool threads and starts new ones; a
    connection per thread would grow without bound). A read waits when all are in use.
    Thread safety: one condition guards the pool; SQL runs outside it on the borrowed
    connection, which no other thread uses meanwhile. After `close()` reads raise RuntimeError.
    """

    def __init__(self, path: Path, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        if max_connections < 1:
            msg = f"max_connections must be >= 1, got {max_connections!r}"
            raise ValueError(msg)
        self.path = path
        self.max_connections = max_connections
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[sqlite3.Connection] = []  # LIFO: the warmest page cache is reused
        self._open = 0
        self._closed = False

    def _raise_closed(self) -> None:
        msg = f"store {str(self.path)!r} is closed; allowed: reads before close()"
        raise RuntimeError(msg)

    @contextmanager
    def _borrow(self) -> Iterator[sqlite3.Connection]:
        conn: sqlite3.Connection | None = None
        with self._cond:
            while True:
                if self._closed:
                    self._raise_closed()
                if self._idle:
                    conn = self._idle.pop()
                    break
                if self._open < self.max_connections:
                    self._open += 1
                    break
                self._cond.wait()
        if conn is None:
            try:
                conn = self._connect()
            except BaseException as exc:
                with self._cond:
                    self._open -= 1
                    self._cond.notify()
                if isinstance(exc, sqlite3.Error) and _is_unavailable(exc):
                    raise _unavailable(self.path, exc) from None
                raise
        is_broken = False
        try:
            yield conn
        except sqlite3.Error as exc:
            if not _is_unavailable(exc):
                raise
            # A connection that read a corrupt file may keep stale state: drop it, so reads
            # recover on fresh connections once the file is good again.
            is_broken = True
            raise _unavailable(self.path, exc) from None
        finally:
            with self._cond:
                if self._closed or is_broken:
                    self._open -= 1
                    conn.close()
                else:
                    self._idle.append(conn)
                self._cond.notify()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute(f"PRAGMA cache_size=-{CONNECTION_CACHE_KIB}")
        return conn

    def get_user(self, user_id: int) -> User | None:
        """The user with `user_id`, or None when there is none.

        Raises:
            StoreUnavailableError: the database cannot answer.
        """
        with self._borrow() as conn:
            row = conn.execute(
                f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,)
            ).fetchone()
        return None if row is None else row_to_user(row)

    def list_users(self, *, after_id: int, limit: int) -> list[User]:
        """Up to `limit` users with ids above `after_id`, in id order (keyset pagination)."""
        with self._borrow() as conn:
            rows = conn.execute(
                f"SELECT {USER_COLUMNS} FROM users WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [row_to_user(row) for row in rows]

    def count(self) -> int:
        """How many users the store holds."""
        with self._borrow() as conn:
            row = conn.execute("SELECT COUNT(*) FROM users").fetchone()
        return int(row[0])

    def check(self) -> int:
        """How many users the seed marker records, read on a fresh connection (~0.2 ms).

        For health checks: a fresh connection reads the file's header, which a pooled one
        may hold in its page cache, so a corrupt or missing file is seen at once.

        Raises:
            StoreUnavailableError: the database cannot answer.
        """
        try:
            conn = self._connect()
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = 'seeded_users'").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            # Health checks see every failure of the file, bugs included, as failing.
            raise _unavailable(self.path, exc) from None
        return int(row[0]) if row is not None else 0

    @property
    def connections(self) -> int:
        """Open connections (idle in the pool or borrowed by a read), at most max_connections."""
        with self._cond:
            return self._open

    def close(self) -> None:
        """Close idle connections now and borrowed ones when returned; later reads raise."""
        with self._cond:
            self._closed = True
            for conn in self._idle:
                conn.close()
            self._open -= len(self._idle)
            self._idle.clear()
            self._cond.notify_all()
