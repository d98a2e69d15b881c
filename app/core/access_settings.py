"""Settings of what a caller may reach: admin and metrics tokens, /health details, API docs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError

MIN_TOKEN_CHARS = 16


class _AccessSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_token(value: Any) -> Any:
    """Strip a token's surrounding whitespace (a pasted newline) and refuse a short one."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        return value
    value = value.strip()
    if len(value) < MIN_TOKEN_CHARS:
        # The value itself is never echoed: only its length.
        raise PydanticCustomError(
            "token_too_short",
            "a token of at least {min} characters after stripping whitespace (got {length}); "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
            {"min": MIN_TOKEN_CHARS, "length": len(value)},
        )
    return value


class AdminSettings(_AccessSection):
    """Admin endpoints; the token comes from the environment only."""

    token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token for /admin/*, /health details and writes (POST/PATCH/DELETE /users); "
            "from the environment only, never a file. Unset: the /admin/* routes are not "
            f"mounted (404) and writes are refused (403). At least {MIN_TOKEN_CHARS} "
            "characters; surrounding whitespace is stripped."
        ),
    )

    _strip_token = field_validator("token", mode="before")(_check_token)


class HealthSettings(_AccessSection):
    """What GET /health shows to a caller without the admin token."""

    details: bool = Field(
        default=False,
        description=(
            "Show worker internals on /health to every caller, not only to requests that carry "
            "the admin token. They are uptime, pid, RSS, container memory, cleanup level, cache "
            "tiers and caches; without them /health shows status, version and checks."
        ),
    )


class MetricsSettings(_AccessSection):
    """GET /metrics (Prometheus); the token comes from the environment only."""

    token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token /metrics requires; from the environment only, never a file. Unset: "
            f"/metrics is open. At least {MIN_TOKEN_CHARS} characters."
        ),
    )

    _strip_token = field_validator("token", mode="before")(_check_token)


class DocsSettings(_AccessSection):
    """The interactive API documentation routes."""

    openapi: bool = Field(default=False, description="Serve the OpenAPI schema at /openapi.json.")
    swagger_ui: bool = Field(
        default=False, description="Serve Swagger UI at /docs (needs docs.openapi)."
    )
    redoc: bool = Field(default=False, description="Serve ReDoc at /redoc (needs docs.openapi).")
