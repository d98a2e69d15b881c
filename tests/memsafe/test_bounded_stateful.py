"""Hypothesis state machines: BoundedDict against a plain dict plus an explicit order list."""

from __future__ import annotations

from typing import ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from memsafe.bounded import BoundedDict, BoundedList, Policy

KEYS = st.integers(0, 9)
VALUES = st.integers()


class BoundedDictModel(RuleBasedStateMachine):
    """Drives a BoundedDict and a reference model with the same operations."""

    policy: ClassVar[Policy] = "lru"

    def __init__(self) -> None:
        super().__init__()
        self.limit = 1
        self.subject = BoundedDict[int, int](1, self.policy)
        self.model: dict[int, int] = {}
        self.order: list[int] = []  # eviction order: first is evicted next
        self.model_dropped = 0

    @initialize(limit=st.integers(1, 6))
    def build(self, limit: int) -> None:
        self.limit = limit
        self.subject = BoundedDict[int, int](limit, self.policy)

    def _touch(self, key: int) -> None:
        if self.policy == "lru":
            self.order.remove(key)
            self.order.append(key)

    def _model_set(self, key: int, value: int) -> None:
        if key in self.model:
            self._touch(key)
        else:
            if len(self.model) == self.limit:
                oldest = self.order.pop(0)
                del self.model[oldest]
                self.model_dropped += 1
            self.order.append(key)
        self.model[key] = value

    @rule(key=KEYS, value=VALUES)
    def set(self, key: int, value: int) -> None:
        self.subject[key] = value
        self._model_set(key, value)

    @rule(key=KEYS)
    def get(self, key: int) -> None:
        assert self.subject.get(key) == self.model.get(key)
        if key in self.model:
            self._touch(key)

    @rule(key=KEYS)
    def getitem(self, key: int) -> None:
        if key in self.model:
            assert self.subject[key] == self.model[key]
            self._touch(key)
        else:
            try:
                self.subject[key]
            except KeyError:
                pass
            else:
                raise AssertionError(f"{key} should be missing")

    @rule(key=KEYS)
    def contains(self, key: int) -> None:
        assert (key in self.subject) == (key in self.model)

    @rule(key=KEYS)
    def pop(self, key: int) -> None:
        assert self.subject.pop(key, None) == self.model.pop(key, None)
        if key in self.order:
            self.order.remove(key)

    @rule(key=KEYS, value=VALUES)
    def setdefault(self, key: int, value: int) -> None:
        expected = self.model.get(key, value)
        assert self.subject.setdefault(key, value) == expected
        self._model_set(key, expected)

    @precondition(lambda self: bool(self.model))
    @rule()
    def popitem(self) -> None:
        key = self.order.pop(0)
        assert self.subject.popitem() == (key, self.model.pop(key))

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def delete_present(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.order))
        del self.subject[key]
        del self.model[key]
        self.order.remove(key)

    @rule()
    def clear(self) -> None:
        self.subject.clear()
        self.model.clear()
        self.order.clear()

    @invariant()
    def never_exceeds_limit(self) -> None:
        assert len(self.subject) <= self.limit

    @invariant()
    def same_entries_in_same_order(self) -> None:
        assert list(self.subject.items()) == [(k, self.model[k]) for k in self.order]

    @invariant()
    def stats_match_model(self) -> None:
        assert self.subject.stats() == {
            "size": len(self.model),
            "max_size": self.limit,
            "dropped": self.model_dropped,
            "policy": self.policy,
        }


class LRUDictModel(BoundedDictModel):
    policy = "lru"


class FIFODictModel(BoundedDictModel):
    policy = "fifo"


class BoundedListModel(RuleBasedStateMachine):
    """A BoundedList against a plain list trimmed to the limit."""

    def __init__(self) -> None:
        super().__init__()
        self.limit = 1
        self.subject = BoundedList[int](1)
        self.model: list[int] = []
        self.model_dropped = 0

    @initialize(limit=st.integers(1, 6))
    def build(self, limit: int) -> None:
        self.limit = limit
        self.subject = BoundedList[int](limit)

    def _trim(self) -> None:
        overflow = len(self.model) - self.limit
        if overflow > 0:
            del self.model[:overflow]
            self.model_dropped += overflow

    @rule(value=VALUES)
    def append(self, value: int) -> None:
        self.subject.append(value)
        self.model.append(value)
        self._trim()

    @rule(values=st.lists(VALUES, max_size=10))
    def extend(self, values: list[int]) -> None:
        self.subject.extend(values)
        self.model.extend(values)
        self._trim()

    @rule()
    def clear(self) -> None:
        assert self.subject.clear() == len(self.model)
        self.model.clear()

    @invariant()
    def matches_model(self) -> None:
        assert self.subject.snapshot() == self.model
        assert self.subject.stats() == {
            "size": len(self.model),
            "max_size": self.limit,
            "dropped": self.model_dropped,
        }


FAST = settings(max_examples=60, stateful_step_count=30, deadline=None)

TestLRUDict = LRUDictModel.TestCase
TestLRUDict.settings = FAST
TestFIFODict = FIFODictModel.TestCase
TestFIFODict.settings = FAST
TestBoundedList = BoundedListModel.TestCase
TestBoundedList.settings = FAST
