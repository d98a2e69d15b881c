"""The load shape's phases and the hot/cold id streams (no Locust import: it patches gevent)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from loadtests.shape import PHASES, ColdScan, ZipfIds, phase_at, users_at


def test_phases_cover_the_run_in_order() -> None:
    ends = [end for _, end, _ in PHASES]
    assert ends == sorted(ends)
    assert ends[-1] == 1.0
    assert [phase_at(f) for f in (0.05, 0.2, 0.4, 0.6, 0.9)] == [
        "ramp",
        "steady",
        "spike",
        "steady",
        "idle",
    ]
    assert phase_at(1.0) is None


def test_users_ramp_hold_spike_hold_then_only_the_poller() -> None:
    peak = 51  # the poller plus 50 load users
    assert users_at(0.0, peak) == 1  # the poller; the ramp starts from zero load users
    assert users_at(0.05, peak) == 1 + 12
    assert users_at(0.2, peak) == 1 + 25
    assert users_at(0.45, peak) == peak
    assert users_at(0.6, peak) == 1 + 25
    assert users_at(0.9, peak) == 1
    assert users_at(1.0, peak) is None


def test_ramp_never_decreases() -> None:
    counts = [users_at(i / 100, 50) or 0 for i in range(10)]
    assert counts == sorted(counts)


def test_a_single_user_run_still_has_a_load_user() -> None:
    assert users_at(0.2, 1) == 2


def test_zipf_ids_concentrate_on_the_hot_head() -> None:
    ids = ZipfIds(10_000)
    rng = random.Random(7)
    draws = Counter(ids.draw(rng) for _ in range(20_000))
    head = sum(n for i, n in draws.items() if i <= 1000) / 20_000
    assert 0.85 < head < 0.95  # the hottest 10 % of ids draw ~90 % of requests
    assert draws[1] > draws[2] > draws[10]
    assert all(1 <= i <= 10_000 for i in draws)
    assert 1 <= ids.draw() <= 10_000


def test_cold_scan_is_unique_until_it_wraps() -> None:
    scan = ColdScan(5)
    assert [scan.next_id() for _ in range(7)] == [1, 2, 3, 4, 5, 1, 2]


@pytest.mark.parametrize("factory", [ZipfIds, ColdScan])
def test_streams_need_at_least_one_id(factory: type[ZipfIds] | type[ColdScan]) -> None:
    with pytest.raises(ValueError, match="n must be >= 1"):
        factory(0)
