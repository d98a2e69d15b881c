"""Deep, bounded size estimate of a cached value: follows containers, dataclasses, pydantic models.

What is counted: `sys.getsizeof` of the value and of every object it reaches through dict keys
and values, list/tuple/set/frozenset/deque items, dataclass fields, `__slots__` and instance
`__dict__`s (pydantic models are found by duck typing: their `__dict__`, field-set and extras).
Each object is counted once per value, even when reached twice.

What is not counted, because it is shared and so does not grow with the number of entries:
`None`, `True`/`False`, `Ellipsis`, ints from -5 to 256 and strings of at most one character
(CPython's cached singletons), the empty str/bytes/tuple/frozenset, classes, functions and
modules, and the str keys of dicts and attribute names that are identifiers (CPython interns
identifier-like string constants and attribute names, so a row dict built from literal keys
shares them with every other row). An identifier-like key that is not in fact shared (say, from
`json.loads`) is undercounted by about 50-60 bytes.

The cost is bounded: at most `max_depth` levels and `max_items` objects are visited per value;
what lies beyond is estimated as the average size of what was counted. The cache adds
`ENTRY_OVERHEAD_BYTES` per entry for its own structures (measured, see
benchmarks/bench_sizeof.py).
"""

from __future__ import annotations

import dataclasses
import sys
from collections import deque
from types import BuiltinFunctionType, FunctionType, ModuleType
from typing import Any, Final

DEFAULT_MAX_DEPTH: Final = 8
"""Levels of nesting followed below the value."""

DEFAULT_MAX_ITEMS: Final = 2000
"""Objects visited per value; the rest is extrapolated from the average of those counted."""

ENTRY_OVERHEAD_BYTES: Final = 112
"""Per-entry bytes of the cache itself (ordered-dict slot and node, the entry tuple, the expiry
float), measured on CPython 3.11 x86-64 as RSS growth per entry with a shared value."""

_getsizeof = sys.getsizeof
_SINGLETONS: Final = (None, True, False, Ellipsis, NotImplemented)
_SEQUENCES: Final = (list, tuple, set, frozenset, deque)
_OPAQUE: Final = (type, ModuleType, FunctionType, BuiltinFunctionType)


def _is_shared(obj: object) -> bool:
    # Objects CPython shares between all their users: charging them to one entry overcounts.
    kind = type(obj)
    if kind is int:
        return -5 <= obj <= 256  # type: ignore[operator]  # an int
    if kind is str:
        return len(obj) <= 1  # type: ignore[arg-type]  # a str
    if kind in (bytes, tuple, frozenset):
        return len(obj) == 0  # type: ignore[arg-type]  # sized
    if kind is float:
        return False
    return any(obj is singleton for singleton in _SINGLETONS) or isinstance(obj, _OPAQUE)


def _is_interned_name(obj: object) -> bool:
    return isinstance(obj, str) and type(obj) is str and obj.isidentifier()


def _children(obj: Any) -> list[Any]:
    """The objects `obj` refers to that the estimate follows (dict keys that are names: not)."""
    kind = type(obj)
    if kind is dict:
        out = [v for v in obj.values()]
        out.extend(k for k in obj if not _is_interned_name(k))
        return out
    if isinstance(obj, _SEQUENCES):
        return list(obj)
    if isinstance(obj, dict):
        return [*obj.values(), *(k for k in obj if not _is_interned_name(k))]
    if isinstance(obj, str | bytes | bytearray | int | float | complex | range | memoryview):
        return []
    out = []
    fields = getattr(kind, "__pydantic_fields__", None)
    if fields is not None:  # a pydantic v2 model: its state lives in these four attributes
        for name in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__"):
            out.append(getattr(obj, name, None))
        out.append(getattr(obj, "__pydantic_private__", None))
        return out
    if dataclasses.is_dataclass(obj):
        # Attribute reads, not `__dict__`: on 3.11 reading `__dict__` would materialise a dict.
        return [getattr(obj, f.name, None) for f in dataclasses.fields(obj)]
    for klass in kind.__mro__:
        for slot in getattr(klass, "__slots__", ()):
            if slot not in ("__dict__", "__weakref__"):
                out.append(getattr(obj, slot, None))
    instance_dict = getattr(obj, "__dict__", None)
    if type(instance_dict) is dict:
        out.append(instance_dict)
    return out


def _instance_extra(obj: object) -> int:
    # A dataclass without slots keeps its attribute values inline (3.11's managed dict), which
    # getsizeof does not report: one pointer per field plus the values array header.
    if dataclasses.is_dataclass(obj) and not hasattr(type(obj), "__slots__"):
        return 8 * len(dataclasses.fields(obj)) + 32
    return 0


def estimate_bytes(
    value: object, max_depth: int = DEFAULT_MAX_DEPTH, max_items: int = DEFAULT_MAX_ITEMS
) -> int:
    """Estimated bytes `value` holds alone, following what it refers to (see the module doc)."""
    if _is_shared(value):
        return 0
    total = _getsizeof(value) + _instance_extra(value)
    seen = {id(value)}
    level = [value]
    visited = 1
    depth = 0
    while level and depth < max_depth:
        depth += 1
        following = []
        for parent in level:
            children = _children(parent)
            for index, child in enumerate(children):
                if id(child) in seen or _is_shared(child):
                    continue
                if visited >= max_items:
                    # Out of budget: the parent's remaining children are taken as average.
                    return total + (total // visited) * (len(children) - index)
                seen.add(id(child))
                visited += 1
                total += _getsizeof(child) + _instance_extra(child)
                following.append(child)
        level = following
    return total
