"""Settings of the user store (SQLite or PostgreSQL) and of cache coherence (Key Value)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError

from app.core.settings_base import _Section


class StoreSettings(_Section):
    """The user store: the embedded SQLite file, or PostgreSQL when database_url is set."""

    path: Path = Field(
        default=Path("data/app.sqlite3"),
        json_schema_extra={"allowed": "a file path whose directory exists or can be created"},
        description="SQLite file with the demo users; created and seeded on first start.",
    )
    seed_users: int = Field(
        default=10_000,
        ge=0,
        le=10_000_000,
        description="Demo users seeded into a fresh database (SQLite or PostgreSQL).",
    )
    offload_reads: bool = Field(
        default=False,
        description="Read SQLite in the threadpool instead of on the event loop. A cached-page "
        "primary-key read takes ~8 us, a threadpool hop ~100 us (measured): turn it on for a "
        "store on a slow or network disk, where one read can take milliseconds.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL instead of SQLite; from the environment only, never a file (it "
        "holds a password). Render: fromDatabase connectionString. Unset: the SQLite file.",
    )
    database_schema: str = Field(
        default="public",
        pattern=r"^[a-z_][a-z0-9_]{0,40}$",
        json_schema_extra={"allowed": "a lower-case identifier, 1-41 characters"},
        description="PostgreSQL schema holding the users table, migrations and the notify channel.",
    )
    pool_min_size: int = Field(
        default=1,
        ge=0,
        le=100,
        description="PostgreSQL connections each worker's pool keeps open even when idle.",
    )
    pool_max_size: int = Field(
        default=4,
        ge=1,
        le=100,
        description="PostgreSQL connections per worker, at most (plus one LISTEN connection); at "
        "least pool_min_size. Each worker also holds one LISTEN connection, so connections = "
        'instances x workers x (pool_max_size + 1); see the README "Scaling out".',
    )
    pool_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Seconds a request waits for a free pooled connection before a 503.",
    )
    connect_timeout_seconds: int = Field(
        default=3,
        ge=1,
        le=60,
        description="Seconds to establish one PostgreSQL connection (libpq connect_timeout).",
    )
    statement_timeout_ms: int = Field(
        default=5000,
        ge=100,
        le=600_000,
        description="Milliseconds any one SQL statement may run (server-side statement_timeout).",
    )
    max_page_size: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Largest page GET /users?limit= returns; more is a 422.",
    )
    poll_interval_seconds: float = Field(
        default=0.02,
        ge=0.001,
        le=10,
        description="Seconds between two polls of the SQLite change log by each worker: the "
        "cross-worker stale window on SQLite (PostgreSQL notifies instead).",
    )
    change_log_rows: int = Field(
        default=10_000,
        ge=100,
        le=10_000_000,
        description="Change-log rows SQLite keeps; a worker further behind drops its whole cache.",
    )

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: Path) -> Path:
        # Fail at start-up with the key named, not with a sqlite3 traceback in the lifespan.
        if path.is_dir() or not path.name:
            raise PydanticCustomError("store_path", "a file path, not a directory")
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise PydanticCustomError(
                "store_path",
                "a file path whose parent is a directory or can be created ({ancestor} is not a "
                "directory)",
                {"ancestor": str(ancestor)},
            )
        return path


class CoherenceSettings(_Section):
    """Cross-worker cache coherence and the optional Key Value (Redis) second tier."""

    redis_url: SecretStr | None = Field(
        default=None,
        description="Key Value (Redis/Valkey) second cache tier; from the environment only, "
        "never a file. Render: fromService keyvalue connectionString. Unset: only the "
        "per-worker tier.",
    )
    degraded_ttl_seconds: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="Seconds a cached user lives while the invalidation channel is down: a "
        "missed invalidation is stale for this long at most.",
    )
    reconnect_min_seconds: float = Field(
        default=0.1,
        gt=0,
        le=60,
        description="First wait (s) before reconnecting a lost channel or retrying Key Value; "
        "doubles on each failure up to reconnect_max_seconds.",
    )
    reconnect_max_seconds: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Longest wait (s) between two reconnect attempts; at least "
        "reconnect_min_seconds.",
    )
    fence_max_keys: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="Users whose latest version is remembered after an invalidation, so an "
        "older copy is never cached again (least recently used dropped first).",
    )
    fence_ttl_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="Seconds such a fence is kept: longer than any in-flight read or Key Value "
        "write can lag a commit.",
    )
    shared_ttl_seconds: int = Field(
        default=300,
        ge=1,
        le=86_400 * 7,
        description="TTL (s) Key Value keeps a user, set on the server with each write "
        "(allkeys-lru evicts earlier under memory pressure).",
    )
    redis_timeout_seconds: float = Field(
        default=0.25,
        gt=0,
        le=30,
        description="Seconds one Key Value call may take before it counts as a failure.",
    )
    redis_max_connections: int = Field(
        default=8,
        ge=1,
        le=1000,
        description="Most Key Value connections one worker opens.",
    )
    redis_max_pending_writes: int = Field(
        default=1000,
        ge=0,
        le=1_000_000,
        description="Writes kept to replay into Key Value after it was unreachable (newest "
        "kept); older ones wait for their TTL and are counted at /admin.",
    )
    key_prefix: str = Field(
        default="memsafe:users:",
        min_length=1,
        max_length=100,
        description="Prefix of this app's Key Value keys, so apps can share one instance.",
    )
