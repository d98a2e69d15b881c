"""Real PostgreSQL and Redis for tests: their URLs, or a skip (a failure under CI=true)."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def _require(name: str, url: str, default_port: int) -> str:
    if _reachable(url, default_port):
        return url
    reason = f"{name} not reachable at {url} (set {name} to run these tests)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true needs it")
    pytest.skip(reason)


def database_url() -> str:
    """TEST_DATABASE_URL (default the local PostgreSQL 15, db `test`), or skip/fail."""
    return _require(
        "TEST_DATABASE_URL", os.environ.get("TEST_DATABASE_URL", DEFAULT_DATABASE_URL), 5432
    )


def redis_url() -> str:
    """TEST_REDIS_URL (default the local Redis 7), or skip/fail."""
    return _require("TEST_REDIS_URL", os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL), 6379)


def unique_name(prefix: str = "t") -> str:
    """A schema or key prefix no other test run uses (parallel runs share the servers)."""
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def drop_schema(url: str, schema: str) -> None:
    """Drop a test schema and everything in it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
