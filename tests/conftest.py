"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import memsafe.testing


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _reset_singletons() -> Iterator[None]:
    """Every test ends with memsafe's process-wide state reset (memsafe.testing.reset)."""
    yield
    memsafe.testing.reset()
