"""Settings of what bounds a worker's memory: the caches, the cleaner and the /payload demo."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.core.settings_base import _Section

MIB = 1024 * 1024


class CacheSettings(_Section):
    """One cache: count bound, default TTL, optional byte bound and eviction policy."""

    max_size: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="Entries the cache keeps; past it the policy picks the entry to drop.",
    )
    policy: Literal["lru", "slru", "tinylfu"] = Field(
        default="tinylfu",
        description="Eviction policy; tinylfu keeps hot entries through a cold scan. "
        '"lru": least recently read dropped first; "slru": segmented LRU; "tinylfu": W-TinyLFU '
        "(a small LRU window, then segmented LRU behind a frequency filter; make bench: higher "
        "hit ratio than lru on a Zipf + scan trace, same lock-free hit cost). lru is the "
        "cheapest write when every key is read about as often.",
    )
    ttl_seconds: float | None = Field(
        default=300.0,
        gt=0,
        le=86_400 * 7,
        description="Seconds an entry stays fresh (null: never expires).",
    )
    max_bytes: int | None = Field(
        default=None,
        ge=1024,
        le=64 * 1024 * MIB,
        description="Bytes the cache may hold, by memsafe's deep size estimate (values, keys and "
        "the cache's own per-entry bytes; within 25 % of measured RSS growth); null: no byte "
        "bound. Must not exceed caches.total_budget_mb.",
    )


class CachesSettings(_Section):
    """Every named cache plus the byte budget they share."""

    total_budget_mb: int | None = Field(
        default=64,
        ge=1,
        le=65_536,
        description="MiB all caches of a worker may hold together (null: no budget). Must be "
        "below the lowest memory.*_limit_mb.",
    )
    users: CacheSettings = CacheSettings()


class MemorySettings(_Section):
    """Thresholds and cadence of the per-worker cleanup service."""

    soft_limit_mb: int | None = Field(
        default=None,
        ge=32,
        le=65_536,
        description="Worker RSS (MiB) at which each cleaner pass also runs a young-generation gc "
        "and malloc_trim (null: no soft level). Every pass, at any level, drops expired cache "
        "entries. Must be below hard_limit_mb and recycle_limit_mb.",
    )
    hard_limit_mb: int | None = Field(
        default=None,
        ge=32,
        le=65_536,
        description="Worker RSS (MiB) at which the cleaner also shrinks every cache by "
        "shrink_fraction and runs a full gc instead of a young one (at most one per "
        "min_full_gc_gap_seconds); null: no hard level. Must be below recycle_limit_mb.",
    )
    recycle_limit_mb: int | None = Field(
        default=None,
        ge=32,
        le=65_536,
        description="Worker RSS (MiB) at which the worker asks to be recycled: it drains and the "
        "master forks a new one (null: never). Must be below server.max_worker_rss_mb, so the "
        "cleaner acts before gunicorn's cap.",
    )
    soft_fraction: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Soft level as a fraction of the container memory limit, compared with the "
        "container's usage (which counts reclaimable page cache too); null: RSS levels only.",
    )
    hard_fraction: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Hard level as a fraction of the container memory limit; above soft_fraction.",
    )
    recycle_fraction: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Recycle level as a fraction of the container memory limit; above "
        "hard_fraction.",
    )
    interval_seconds: float = Field(
        default=30.0,
        ge=0.5,
        le=3600.0,
        description="Seconds between two memory checks of the cleaner (a check costs "
        "microseconds).",
    )
    hysteresis_mb: int = Field(
        default=16,
        ge=0,
        le=4096,
        description="MiB memory must fall below a level before the cleaner drops to the level "
        "under it, so small RSS changes do not flap between levels.",
    )
    min_full_gc_gap_seconds: float = Field(
        default=60.0,
        ge=0.0,
        le=86_400.0,
        description="Minimum seconds between two full gc.collect() runs of the cleaner (a full "
        "collection over a big heap costs milliseconds).",
    )
    periodic_gc_seconds: float | None = Field(
        default=None,
        gt=0,
        le=86_400.0,
        description="Seconds between unconditional gc + malloc_trim passes (null: only under "
        "memory pressure).",
    )
    shrink_fraction: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Fraction of each cache dropped (coldest first) at the hard level.",
    )


class PayloadSettings(_Section):
    """The /payload demo endpoint."""

    max_size_kib: int = Field(
        default=1024,
        ge=1,
        le=64 * 1024,
        description="Largest body GET /payload?size_kib=N returns, in KiB; more is a 422.",
    )
