"""Process-wide singletons built once under a lock, with the time and memory their setup took.

"One instance" means one per *process*. Under gunicorn that is one per worker: each worker
builds its own on first use, so N workers hold N copies and pay N times the setup memory.
With ``preload_app = True`` an instance built while the app is imported lives in the master
and every forked worker starts with a copy-on-write copy of it: no setup in the worker, but
also nothing shared afterwards (a change in one worker is invisible to the others), and any
thread, socket, file or connection pool the setup opened was made by the master; threads do
not survive fork and sockets end up shared by all workers. So build singletons that own such
resources lazily, inside the worker (the app lifespan), never at import time.
``singleton_stats()[name]["pid"]`` shows which process built an instance.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, ClassVar, Final, TypedDict, TypeVar

import psutil

_T = TypeVar("_T")

_STATM_PATH: Final = "/proc/self/statm"
_PAGE_SIZE_BYTES: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class SingletonStats(TypedDict):
    """How and where one singleton was built."""

    created_at: float
    """Wall-clock time (``time.time()``) when construction started."""
    setup_seconds: float
    """How long construction (``__init__``, so ``_setup()``) took."""
    setup_rss_delta_bytes: int
    """Process RSS after minus before construction (can be negative or include other threads)."""
    pid: int
    """The process that built the instance; differs from ``os.getpid()`` when inherited by fork."""


def _rss_bytes() -> int:
    """Resident set size of this process: /proc/self/statm on Linux, else psutil."""
    try:
        with open(_STATM_PATH, "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE_BYTES
    except (OSError, ValueError, IndexError):
        return int(psutil.Process().memory_info().rss)


class SingletonMeta(type):
    """Metaclass giving each class that uses it exactly one instance per process.

    The first call constructs the instance; later calls return it and ignore their arguments.
    Once built, lookups take no lock (double-checked locking: a dict read is atomic in CPython).
    A subclass of a singleton class gets its own instance. Constructing a singleton from inside
    its own ``__init__`` raises ``RuntimeError`` instead of recursing. The lock is shared by all
    singleton classes (so one setup may build another without lock-order deadlocks): a slow
    setup delays other classes' *first* construction, never a lookup of a built instance.

    Thread safety: construction runs under one process-wide re-entrant lock, so racing threads
    get the same instance and ``__init__`` runs once; the lock is re-created in a forked child.
    """

    _instances: ClassVar[dict[type, object]] = {}
    _stats: ClassVar[dict[type, SingletonStats]] = {}
    _constructing: ClassVar[set[type]] = set()
    _lock: ClassVar[threading.RLock] = threading.RLock()

    def __call__(cls: type[_T], *args: Any, **kwargs: Any) -> _T:
        instance = SingletonMeta._instances.get(cls)
        if instance is None:
            with SingletonMeta._lock:
                instance = SingletonMeta._instances.get(cls)
                if instance is None:
                    instance = SingletonMeta._construct(cls, args, kwargs)
        return instance  # type: ignore[return-value]  # _instances maps each class to its own instance

    @staticmethod
    def _construct(cls: type[_T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> _T:
        """Build, time and register the instance; the caller holds the lock."""
        if cls in SingletonMeta._constructing:
            msg = f"{cls.__qualname__} was constructed again while its __init__ was running"
            raise RuntimeError(msg)
        SingletonMeta._constructing.add(cls)
        try:
            created_at = time.time()
            rss_before = _rss_bytes()
            started = time.perf_counter()
            instance: _T = type.__call__(cls, *args, **kwargs)
            setup_seconds = time.perf_counter() - started
            rss_delta = _rss_bytes() - rss_before
        finally:
            SingletonMeta._constructing.discard(cls)
        SingletonMeta._stats[cls] = {
            "created_at": created_at,
            "setup_seconds": setup_seconds,
            "setup_rss_delta_bytes": rss_delta,
            "pid": os.getpid(),
        }
        SingletonMeta._instances[cls] = instance
        return instance

    @classmethod
    def _reset_for_tests(mcs, cls: type | None = None) -> None:
        """Forget the instance of ``cls`` (or of every class) so the next call builds anew.

        Nothing is closed: an instance still referenced elsewhere lives on, unregistered.
        """
        with mcs._lock:
            if cls is None:
                mcs._instances.clear()
                mcs._stats.clear()
            else:
                mcs._instances.pop(cls, None)
                mcs._stats.pop(cls, None)

    @classmethod
    def _after_fork_in_child(mcs) -> None:
        # A thread of the parent may have held the lock at fork time; that thread does not
        # exist in the child, so the inherited lock could never be released.
        mcs._lock = threading.RLock()
        mcs._constructing = set()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=SingletonMeta._after_fork_in_child)


class AgentSingleton(metaclass=SingletonMeta):
    """Base class for a process-wide service whose expensive ``_setup()`` must run only once.

    Subclass it and override ``_setup()`` (load a model, open a pool, warm a table). The first
    ``MyAgent()`` in a process runs it; every later call returns that instance. See the module
    docstring for what "once" means under gunicorn workers and ``preload_app``.

    Thread safety: ``SingletonMeta`` serializes construction, so ``_setup()`` runs once per
    process even when many threads race; the subclass guards its own state after that.
    """

    def __init__(self) -> None:
        self._setup()

    def _setup(self) -> None:
        """Hook for subclasses: one-time initialisation. The default does nothing."""


def singleton_stats() -> dict[str, SingletonStats]:
    """``{class qualname: stats}`` for every singleton built in this process (and not reset)."""
    with SingletonMeta._lock:
        return {cls.__qualname__: SingletonStats(**s) for cls, s in SingletonMeta._stats.items()}
