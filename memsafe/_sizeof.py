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
`ENTRY_OVERHEAD_BYTES` per entry for its own structures and the key (measured, see
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

ENTRY_OVERHEAD_BYTES: Final = 250
"""Per-entry bytes of a byte-tracked cache itself: the ordered dict's slot, index and node, the
(value, expires_at, size) tuple, the expiry float and the size int, and an int key. Measured on
CPython 3.11 x86-64 as RSS growth per entry with a shared value (254 B over 50,000 entries,
TTL set; about 24 B less without a TTL). See benchmarks/bench_sizeof.py."""

_getsizeof = sys.getsizeof
_LEAVES: Final = frozenset({str, bytes, int, float, bool, complex, type(None), bytearray, range})
_SEQUENCES: Final = (list, tuple, set, frozenset, deque)
_OPAQUE: Final = (type, ModuleType, FunctionType, BuiltinFunctionType)


def _leaf_size(obj: Any, kind: type) -> int:
    # Bytes of a leaf (no references followed); 0 for the objects CPython shares.
    if kind is int:
        return 0 if -5 <= obj <= 256 else _getsizeof(obj)
    if kind is str or kind is bytes:
        return 0 if len(obj) <= (1 if kind is str else 0) else _getsizeof(obj)
    if kind is bool or obj is None:
        return 0
    return _getsizeof(obj)


def _children(obj: Any, kind: type) -> list[Any]:
    """The objects `obj` refers to that the estimate follows (dict keys that are names: not)."""
    if kind is dict or isinstance(obj, dict):
        out = list(obj.values())
        for key in obj:
            if type(key) is not str or not key.isidentifier():
                out.append(key)
        return out
    if isinstance(obj, _SEQUENCES):
        return list(obj)
    if isinstance(obj, _OPAQUE):
        return []
    if getattr(kind, "__pydantic_fields__", None) is not None:
        # A pydantic v2 model (found by duck typing): its state lives in these attributes
        # (its fields-set holds interned field names: counted by `_container_size`, shallow).
        return [
            getattr(obj, name, None)
            for name in ("__dict__", "__pydantic_extra__", "__pydantic_private__")
        ]
    if dataclasses.is_dataclass(obj):
        # Attribute reads, not `__dict__`: on 3.11 reading `__dict__` would materialise a dict.
        return [getattr(obj, f.name, None) for f in dataclasses.fields(obj)]
    out = []
    for klass in kind.__mro__:
        for slot in getattr(klass, "__slots__", ()):
            if slot not in ("__dict__", "__weakref__"):
                out.append(getattr(obj, slot, None))
    instance_dict = getattr(obj, "__dict__", None)
    if type(instance_dict) is dict:
        out.append(instance_dict)
    return out


def _container_size(obj: Any, kind: type) -> int:
    if kind is dict or kind is list or kind is set:
        return _getsizeof(obj)  # the common containers, without the checks below
    if isinstance(obj, _OPAQUE) or obj is Ellipsis or obj is NotImplemented:
        return 0
    if kind in (tuple, frozenset) and not obj:
        return 0  # the shared empty tuple / frozenset
    size = _getsizeof(obj)
    if getattr(kind, "__pydantic_fields__", None) is not None:
        size += _getsizeof(getattr(obj, "__pydantic_fields_set__", None))
    # A dataclass without slots keeps its attribute values inline (3.11's managed dict), which
    # getsizeof does not report: one pointer per field plus the values array header.
    if dataclasses.is_dataclass(obj) and not hasattr(kind, "__slots__"):
        size += 8 * len(dataclasses.fields(obj)) + 32
    return size


def estimate_bytes(
    value: object, max_depth: int = DEFAULT_MAX_DEPTH, max_items: int = DEFAULT_MAX_ITEMS
) -> int:
    """Estimated bytes `value` holds alone, following what it refers to (see the module doc)."""
    kind = type(value)
    if kind in _LEAVES:
        return _leaf_size(value, kind)
    total = _container_size(value, kind)
    root = total
    seen = {id(value)}
    level = [value]
    visited = 1
    depth = 0
    while level and depth < max_depth:
        depth += 1
        following = []
        for parent in level:
            children = _children(parent, type(parent))
            for index, child in enumerate(children):
                child_id = id(child)
                if child_id in seen:
                    continue
                if visited >= max_items:
                    # Out of budget: the parent's remaining children are taken as average
                    # (the average of what was counted below the value itself).
                    average = (total - root) // max(visited - 1, 1)
                    return total + average * (len(children) - index)
                seen.add(child_id)
                visited += 1
                child_kind = type(child)
                if child_kind is str:  # the most common leaf, inline
                    if len(child) > 1:
                        total += _getsizeof(child)
                elif child_kind in _LEAVES:
                    total += _leaf_size(child, child_kind)
                else:
                    total += _container_size(child, child_kind)
                    following.append(child)
        level = following
    return total
