"""Test doubles shared by the memsafe tests."""

from __future__ import annotations

import threading
from types import TracebackType


class CountingLock:
    """A real re-entrant lock that counts acquisitions and how deep it is held right now."""

    def __init__(self) -> None:
        self._inner = threading.RLock()
        self.enters = 0
        self.depth = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        acquired = self._inner.acquire(blocking, timeout)
        if acquired:
            self.enters += 1
            self.depth += 1
        return acquired

    def release(self) -> None:
        self.depth -= 1
        self._inner.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None:
        self.release()
