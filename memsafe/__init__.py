"""memsafe: bounded caches and memory control for Python web services on small instances.

The public API is exactly ``__all__``. memsafe imports only the standard library and psutil.
"""

from __future__ import annotations

from memsafe._routes import method_key, route_template
from memsafe.bounded import BoundedDict, BoundedList, MetricsCollector, MetricSummary
from memsafe.cache import CacheStats, LRUCache
from memsafe.cleanup import (
    CleanupConfig,
    CleanupEvent,
    MemoryCleanupService,
    start_memory_cleanup,
    stop_memory_cleanup,
)
from memsafe.coherent import CoherentCache, SharedTier, TierStats
from memsafe.decorators import cached
from memsafe.errors import MemsafeError
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
from memsafe.recycle import RSSRecycler, check_worker_rss, request_worker_exit
from memsafe.singleton import AgentSingleton, SingletonMeta, singleton_stats

__all__ = [
    "AgentSingleton",
    "BoundedDict",
    "BoundedList",
    "CacheManager",
    "CacheStats",
    "CleanupConfig",
    "CleanupEvent",
    "CoherentCache",
    "ContainerMemory",
    "Invalidation",
    "InvalidationListener",
    "LRUCache",
    "ListenerStats",
    "MemoryCleanupService",
    "MemoryMonitor",
    "MemoryMonitorMiddleware",
    "MemsafeError",
    "MetricSummary",
    "MetricsCollector",
    "RSSRecycler",
    "ReleaseResult",
    "SharedTier",
    "SingletonMeta",
    "TierStats",
    "cache_manager",
    "cached",
    "check_worker_rss",
    "container_memory",
    "default_monitor",
    "memory_monitor",
    "method_key",
    "process_rss_bytes",
    "release_memory",
    "release_memory_async",
    "request_worker_exit",
    "route_template",
    "singleton_stats",
    "start_memory_cleanup",
    "stop_memory_cleanup",
]
__version__ = "0.1.0"
