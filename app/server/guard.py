"""Per-worker connection bookkeeping: the cap, who to shed first, and a rate-limited refusal log."""

from __future__ import annotations

import logging
import resource
from collections import Counter
from typing import Final, Protocol

logger = logging.getLogger(__name__)

# File descriptors a worker keeps for itself besides client sockets (listener, log streams,
# SQLite, /proc/self/statm, the heartbeat file, pipes) plus one accept burst: asyncio accepts
# up to 100 sockets per loop tick before any of them reaches connection_made and the cap.
FD_RESERVE: Final = 160
REFUSED: Final = "refused"  # over the cap with nothing idle to shed: closed at once
SHED: Final = "shed"  # an idle or head-waiting connection closed to admit a new one
HEAD_TIMEOUT: Final = "head_timeout"  # request head not complete within the deadline
ACCEPT_ERROR: Final = "accept_error"  # accept() failed: out of fds or memory (EMFILE, ...)
KINDS: Final = (REFUSED, SHED, HEAD_TIMEOUT, ACCEPT_ERROR)


class Sheddable(Protocol):
    """A connection the guard can close to make room."""

    def shed(self) -> None: ...


def connection_cap(max_connections: int, *, reserve: int = FD_RESERVE) -> tuple[int, str | None]:
    """The per-worker connection cap: `max_connections`, kept below RLIMIT_NOFILE.

    Raises the soft fd limit toward the hard one when `max_connections + reserve` needs it;
    when the hard limit is still too low, the cap becomes `soft - reserve`. Returns the cap
    and, when it was lowered, a message saying why (log it once).

    Raises:
        ValueError: max_connections < 1, or the fd limit leaves no room for one connection.
    """
    if max_connections < 1:
        msg = f"server.max_connections must be >= 1, got {max_connections!r}"
        raise ValueError(msg)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + reserve
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections, None
    cap = soft - reserve
    if cap < 1:
        msg = (
            f"RLIMIT_NOFILE {soft} (hard {hard}) leaves no room for client connections: a "
            f"worker keeps {reserve} fds for itself; allowed: a limit of at least {reserve + 1}"
        )
        raise ValueError(msg)
    return cap, (
        f"server.max_connections={max_connections} lowered to {cap} per worker: RLIMIT_NOFILE "
        f"is {soft} (hard {hard}) and {reserve} fds stay reserved; raise the limit (ulimit -n) "
        "or lower the key"
    )


class ConnectionGuard:
    """Admits connections up to a cap, shedding the longest-waiting idle one beyond it.

    A connection is "waiting" from accept until its request head is complete, and again
    from the end of a response until the next head (keep-alive idle). At the cap, a new
    connection closes the oldest waiting one rather than being refused, as nginx reuses
    idle keep-alive connections when it runs out: a slow or idle client gives way to a
    fresh one, so a flood of slow heads cannot lock out a health check. Only when every
    open connection is mid-request is the new one refused. Each refusal, shed connection,
    head timeout and accept error is counted; `flush()` logs the counts on one line.

    Thread safety: none needed; one instance per worker, used only on its event loop thread.
    """

    def __init__(self, cap: int, head_timeout_seconds: float) -> None:
        if cap < 1:
            msg = f"cap must be >= 1, got {cap!r}"
            raise ValueError(msg)
        if head_timeout_seconds <= 0:
            msg = f"head_timeout_seconds must be > 0, got {head_timeout_seconds!r}"
            raise ValueError(msg)
        self.cap = cap
        self.head_timeout_seconds = head_timeout_seconds
        self._open: set[Sheddable] = set()
        self._waiting: dict[Sheddable, None] = {}  # insertion order: longest waiting first
        self._counts: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()

    def admit(self, conn: Sheddable) -> bool:
        """Count a new connection in; False when it must be closed (over the cap, none idle)."""
        self._open.add(conn)
        if len(self._open) <= self.cap:
            return True
        if self._waiting:
            victim = next(iter(self._waiting))
            self.forget(victim)
            self.count(SHED)
            victim.shed()
            return True
        self.forget(conn)
        self.count(REFUSED)
        return False

    def waiting(self, conn: Sheddable) -> None:
        """`conn` now waits for a request head: it goes to the back of the shedding queue."""
        if conn not in self._open:
            return
        self._waiting.pop(conn, None)
        self._waiting[conn] = None

    def busy(self, conn: Sheddable) -> None:
        """`conn` has a complete request head: not sheddable until it is idle again."""
        self._waiting.pop(conn, None)

    def forget(self, conn: Sheddable) -> None:
        """`conn` is closed (or about to be): it no longer counts against the cap."""
        self._waiting.pop(conn, None)
        self._open.discard(conn)

    @property
    def open(self) -> int:
        """Connections counted against the cap now."""
        return len(self._open)

    def count(self, kind: str) -> None:
        """Count one event of `kind` (one of KINDS) for the next `flush()`."""
        self._counts[kind] += 1
        self.totals[kind] += 1

    def flush(self) -> None:
        """Log what happened since the last flush on one line; nothing when nothing happened."""
        if not self._counts:
            return
        counts = ", ".join(f"{kind} {self._counts[kind]}" for kind in KINDS)
        logger.warning(
            "connections over the last interval: %s (open %d, waiting %d, cap %d)",
            counts,
            self.open,
            len(self._waiting),
            self.cap,
        )
        self._counts.clear()
