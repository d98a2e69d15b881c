"""The service version, reported by /health and the OpenAPI document."""

from __future__ import annotations

VERSION = "0.1.0"
