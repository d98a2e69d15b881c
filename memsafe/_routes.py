"""Per-route bookkeeping: the route key rule, its bounded buckets, and the monitor's tallies."""

from __future__ import annotations

from typing import Final, TypedDict

from memsafe._checks import _check_positive_int

UNMATCHED_ROUTE: Final = "<unmatched>"
"""The one route key (and route label) of every request that no route matched."""
OVERFLOW_ROUTE: Final = "<overflow>"
"""The route key (and route label) shared by every route key beyond ``max_routes``."""
DEFAULT_MAX_ROUTES: Final = 200
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
    return _key(method_key(method), route_template(route, root_path))


def _key(method_label: str, template: str | None) -> str:
    return UNMATCHED_ROUTE if template is None else f"{method_label} {template}"


class RouteBuckets:
    """Bounds per-route stats: the first ``max_routes`` route keys seen keep their own bucket.

    A route key is a method and a route template (``"GET /users/{user_id}"``) or
    ``UNMATCHED_ROUTE`` (one key for every method), so raw paths and odd methods never make
    new keys. Once ``max_routes`` keys have a bucket, requests under any new key share the
    ``OVERFLOW_ROUTE`` bucket; a key keeps its bucket until ``clear()``. MemoryMonitor buckets
    its route table this way; use it for any other per-route stats (Prometheus labels, say) so
    that they follow the same rule and labels. Each instance admits keys in the order it sees
    them, so two instances agree on which keys overflow only while fewer than ``max_routes``
    keys exist.

    Thread safety: none of its own; callers serialize calls with their own lock.
    """

    __slots__ = ("_keys", "_max_routes")

    def __init__(self, max_routes: int = DEFAULT_MAX_ROUTES) -> None:
        self._max_routes = _check_positive_int("max_routes", max_routes)
        self._keys: set[str] = set()

    @property
    def max_routes(self) -> int:
        """How many route keys get their own bucket before new ones go to ``<overflow>``."""
        return self._max_routes

    def __len__(self) -> int:
        """How many route keys have their own bucket (at most ``max_routes``)."""
        return len(self._keys)

    def admit(self, key: str) -> bool:
        """True when ``key`` has its own bucket, given now if fewer than max_routes exist."""
        keys = self._keys
        if key in keys:
            return True
        if len(keys) >= self._max_routes:
            return False
        keys.add(key)
        return True

    def labels(self, method: object, template: str | None) -> tuple[str, str]:
        """``(method, route)`` labels of one request, for stats that keep the two apart.

        ``method`` is ``method_key(method)``; ``route`` is ``template`` (from
        ``route_template``), ``UNMATCHED_ROUTE`` when it is None, or ``OVERFLOW_ROUTE`` when
        the request's route key gets no bucket of its own.
        """
        method_label = method_key(method)
        key = _key(method_label, template)
        if not self.admit(key):
            return method_label, OVERFLOW_ROUTE
        return method_label, UNMATCHED_ROUTE if template is None else template

    def clear(self) -> None:
        """Forget every route key: the next ``max_routes`` new keys get buckets again."""
        self._keys.clear()


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
