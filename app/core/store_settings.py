"""Settings of the user store (SQLite or PostgreSQL) and of cache coherence (Key Value)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError

from app.core.settings_base import _Section


class StoreSettings(_Section):
    """The user store: the embedded SQLite file, or PostgreSQL when database_url is set."""

    path: Path = Path("data/app.sqlite3")
    seed_users: int = Field(default=10_000, ge=0, le=10_000_000)
    offload_reads: bool = False
    database_url: SecretStr | None = None
    database_schema: str = Field(default="public", pattern=r"^[a-z_][a-z0-9_]{0,40}$")
    pool_min_size: int = Field(default=1, ge=0, le=100)
    pool_max_size: int = Field(default=4, ge=1, le=100)
    pool_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    connect_timeout_seconds: int = Field(default=3, ge=1, le=60)
    statement_timeout_ms: int = Field(default=5000, ge=100, le=600_000)
    max_page_size: int = Field(default=100, ge=1, le=1000)
    poll_interval_seconds: float = Field(default=0.02, ge=0.001, le=10)
    change_log_rows: int = Field(default=10_000, ge=100, le=10_000_000)

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

    redis_url: SecretStr | None = None
    degraded_ttl_seconds: float = Field(default=2.0, gt=0, le=300)
    reconnect_min_seconds: float = Field(default=0.1, gt=0, le=60)
    reconnect_max_seconds: float = Field(default=5.0, gt=0, le=600)
    fence_max_keys: int = Field(default=10_000, ge=1, le=10_000_000)
    fence_ttl_seconds: float = Field(default=60.0, gt=0, le=86_400)
    shared_ttl_seconds: int = Field(default=300, ge=1, le=86_400 * 7)
    redis_timeout_seconds: float = Field(default=0.25, gt=0, le=30)
    redis_max_connections: int = Field(default=8, ge=1, le=1000)
    redis_max_pending_writes: int = Field(default=1000, ge=0, le=1_000_000)
    key_prefix: str = Field(default="memsafe:users:", min_length=1, max_length=100)
