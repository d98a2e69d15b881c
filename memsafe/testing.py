"""Test support: put memsafe's process-wide state back to a fresh process's."""

from __future__ import annotations

from memsafe import _default_cleanup, _worker
from memsafe.manager import cache_manager
from memsafe.singleton import SingletonMeta


def reset() -> None:
    """Forget every process-wide memsafe state, as a fresh process would start.

    Forgets the recorded gunicorn worker, exit request, active RSSRecycler and event loop,
    the default cleanup service of start_memory_cleanup (without stopping it), every
    SingletonMeta instance, and the caches registered with the default ``cache_manager``.
    Call it from a test fixture; production code has no reason to.

    Thread safety: not for use while other threads use memsafe.
    """
    _worker._reset()
    _default_cleanup._reset()
    SingletonMeta._reset_for_tests()
    cache_manager.reset()
