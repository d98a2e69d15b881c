"""memsafe: bounded caches and memory control for Python web services on small instances.

The public API is exactly ``__all__``. memsafe imports only the standard library and psutil.
"""

from __future__ import annotations

from memsafe._default_cleanup import (
    start_memory_cleanup,
    start_memory_cleanup_sync,
    stop_memory_cleanup,
)
from memsafe._routes import (
    OVERFLOW_ROUTE,
    UNMATCHED_ROUTE,
    RouteBuckets,
    method_key,
    route_template,
)
from memsafe._types import CleanupStats, RecyclerStats
from memsafe._version import __version__ as __version__
from memsafe.bounded import BoundedDict, BoundedList, MetricsCollector, MetricSummary
from memsafe.cache import CacheStats, LRUCache
from memsafe.cleanup import CleanupConfig, CleanupEvent, MemoryCleanupService
from memsafe.coherent import CoherentCache, SharedTier, TierStats
from memsafe.decorators import cached
from memsafe.drain import DrainMiddleware, WorkerDrain
from memsafe.history import HistoryData, HistoryEvent, MemoryHistory
from memsafe.invalidation import Invalidation, InvalidationListener, ListenerStats
from memsafe.manager import CacheManager, cache_manager
from memsafe.middleware import (
    MemoryMonitor,
    MemoryMonitorMiddleware,
    default_monitor,
    memory_monitor,
)
from memsafe.probes import (
    ContainerMemory,
    ReleaseResult,
    container_memory,
    process_rss_bytes,
    release_memory,
    release_memory_async,
)
from memsafe.recycle import (
    RSSRecycler,
    check_worker_rss,
    is_exit_requested,
    is_gunicorn_worker,
    recycle_worker,
    request_worker_exit,
)
from memsafe.singleton import AgentSingleton, SingletonMeta, singleton_stats
from memsafe.tracing import AllocationSite, AllocationTracer, TraceBusyError, TraceReport

__all__ = [
    "OVERFLOW_ROUTE",
    "UNMATCHED_ROUTE",
    "AgentSingleton",
    "AllocationSite",
    "AllocationTracer",
    "BoundedDict",
    "BoundedList",
    "CacheManager",
    "CacheStats",
    "CleanupConfig",
    "CleanupEvent",
    "CleanupStats",
    "CoherentCache",
    "ContainerMemory",
    "DrainMiddleware",
    "HistoryData",
    "HistoryEvent",
    "Invalidation",
    "InvalidationListener",
    "LRUCache",
    "ListenerStats",
    "MemoryCleanupService",
    "MemoryHistory",
    "MemoryMonitor",
    "MemoryMonitorMiddleware",
    "MetricSummary",
    "MetricsCollector",
    "RSSRecycler",
    "RecyclerStats",
    "ReleaseResult",
    "RouteBuckets",
    "SharedTier",
    "SingletonMeta",
    "TierStats",
    "TraceBusyError",
    "TraceReport",
    "WorkerDrain",
    "cache_manager",
    "cached",
    "check_worker_rss",
    "container_memory",
    "default_monitor",
    "is_exit_requested",
    "is_gunicorn_worker",
    "memory_monitor",
    "method_key",
    "process_rss_bytes",
    "recycle_worker",
    "release_memory",
    "release_memory_async",
    "request_worker_exit",
    "route_template",
    "singleton_stats",
    "start_memory_cleanup",
    "start_memory_cleanup_sync",
    "stop_memory_cleanup",
]
