"""The default byte estimate: what it follows, what it shares, its bounds, and RSS agreement."""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

from benchmarks.bench_sizeof import SHAPES, TOLERANCE, run_child
from memsafe._sizeof import ENTRY_OVERHEAD_BYTES, estimate_bytes
from memsafe.cache import LRUCache, default_sizeof


def test_leaves_cost_their_getsizeof_and_shared_singletons_nothing() -> None:
    text = "hello world"
    assert estimate_bytes(text) == sys.getsizeof(text)
    assert estimate_bytes(b"x" * 4096) == sys.getsizeof(b"x" * 4096)
    assert estimate_bytes(10**6) == sys.getsizeof(10**6)
    shared_objects: tuple[object, ...] = (None, True, False, 7, -5, 256, "", "a", b"", ())
    for shared in (*shared_objects, frozenset()):
        assert estimate_bytes(shared) == 0, shared


def test_containers_are_followed_and_identifier_keys_are_shared() -> None:
    name = "Ada Lovelace " * 2
    row = {"id": 10**6, "name": name, "not an identifier": 1.5}
    expected = (
        sys.getsizeof(row)
        + sys.getsizeof(10**6)
        + sys.getsizeof(name)
        + sys.getsizeof(1.5)
        + sys.getsizeof("not an identifier")
    )
    assert estimate_bytes(row) == expected
    items = [name, (name, 1000), {name}, deque([name])]
    assert estimate_bytes(items) > sys.getsizeof(items) + sys.getsizeof(name)


def test_an_object_reached_twice_is_counted_once() -> None:
    big = "x" * 10_000
    assert estimate_bytes([big, big, big]) == sys.getsizeof([big, big, big]) + sys.getsizeof(big)


@dataclass
class Point:
    label: str
    values: list[int]


class Slotted:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Plain:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class PydanticRow(BaseModel):
    id: int
    name: str


def test_dataclasses_slots_objects_and_pydantic_models_are_followed() -> None:
    payload = b"p" * 1000
    point = Point("a label here", [1000, 2000])
    assert estimate_bytes(point) > sys.getsizeof(point) + sys.getsizeof([1000, 2000])
    assert estimate_bytes(Slotted(payload)) >= sys.getsizeof(payload)
    assert estimate_bytes(Plain(payload)) >= sys.getsizeof(payload)
    row = PydanticRow(id=10**6, name="x" * 500)
    assert estimate_bytes(row) > sys.getsizeof(row) + sys.getsizeof("x" * 500)


def test_classes_functions_and_modules_are_not_followed() -> None:
    assert estimate_bytes([len, sys, int]) == sys.getsizeof([len, sys, int])


def test_depth_and_item_limits_bound_the_work() -> None:
    nested: list[object] = []
    inner = nested
    for _ in range(50):
        child: list[object] = ["y" * 100]
        inner.append(child)
        inner = child
    shallow = estimate_bytes(nested, max_depth=3)
    assert shallow < estimate_bytes(nested, max_depth=60)
    many = [str(i) * 20 for i in range(10_000)]
    bounded = estimate_bytes(many, max_items=100)
    full = estimate_bytes(many, max_items=100_000)
    assert 0.5 * full < bounded < 1.5 * full  # extrapolated from the average


def test_default_sizeof_adds_the_entry_overhead_and_a_cache_uses_it() -> None:
    value = {"name": "someone"}
    assert default_sizeof(value) == estimate_bytes(value) + ENTRY_OVERHEAD_BYTES
    cache: LRUCache[int, object] = LRUCache(10, max_bytes=10**6)
    cache.set(1, value)
    assert cache.nbytes == default_sizeof(value)


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES[:3])
def test_estimate_is_within_a_quarter_of_measured_rss_growth(shape: str) -> None:
    # A fresh interpreter fills a byte-tracked cache and measures its RSS growth per entry.
    result = run_child(shape, 20_000)
    ratio = result["estimate_per_entry"] / result["rss_per_entry"]
    assert abs(ratio - 1) <= TOLERANCE, result
