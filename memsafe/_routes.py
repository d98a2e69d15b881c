"""Per-route bookkeeping for the memory monitor: bounded route keys and per-route tallies."""

from __future__ import annotations

from typing import Final, TypedDict

UNMATCHED_ROUTE: Final = "<unmatched>"
# Methods are client-chosen strings: anything else is folded into one key so it cannot grow
# a table keyed by method.
_KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

_mount_types: dict[type, bool] = {}


def _is_mount(route: object) -> bool:
    """True for Starlette's Mount (and subclasses), found by name: memsafe never imports it."""
    kind = type(route)
    known = _mount_types.get(kind)
    if known is None:
        known = any(base.__name__ == "Mount" for base in kind.__mro__)
        _mount_types[kind] = known
    return known


def method_key(method: object) -> str:
    """The request method, or ``OTHER`` for anything outside the standard set."""
    return method if isinstance(method, str) and method in _KNOWN_METHODS else "OTHER"


def route_template(route: object, root_path: object) -> str | None:
    """The matched route's template, never the raw path; None when there is none.

    Starlette and FastAPI routers put the matched route object in ``scope["route"]`` (the
    innermost one for mounted apps, whose prefix is then in ``scope["root_path"]``).
    """
    if route is None:
        return None
    prefix = root_path if isinstance(root_path, str) else ""
    if _is_mount(route):
        # A Mount whose app is not a router: its own path_format ends in "/{path}".
        return prefix or "/"
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return None
    return prefix.rstrip("/") + template if prefix else template


def route_key(route: object, root_path: object, method: object) -> str:
    """``"GET /users/{user_id}"``, or ``<unmatched>`` for requests no route matched."""
    template = route_template(route, root_path)
    if template is None:
        return UNMATCHED_ROUTE
    return f"{method_key(method)} {template}"


class RouteMemoryStats(TypedDict):
    """Memory figures of one route template (``"GET /users/{user_id}"``)."""

    route: str
    requests: int
    errors: int
    growth_bytes: int
    mean_delta_bytes: float
    max_delta_bytes: int
    max_rss_bytes: int


class RouteTally:
    """Running totals of one route key.

    Thread safety: none of its own; the MemoryMonitor lock guards every update.
    """

    __slots__ = ("errors", "growth", "max_delta", "max_rss", "requests", "total_delta")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.total_delta = 0
        self.growth = 0
        self.max_delta = 0
        self.max_rss = 0

    def as_stats(self, route: str) -> RouteMemoryStats:
        return RouteMemoryStats(
            route=route,
            requests=self.requests,
            errors=self.errors,
            growth_bytes=self.growth,
            mean_delta_bytes=self.total_delta / self.requests if self.requests else 0.0,
            max_delta_bytes=self.max_delta,
            max_rss_bytes=self.max_rss,
        )
