"""X-Cache answers tallied per load scenario and second, and read back as hit rates."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.scenario_hits import CacheTally, read_tally, scenario_of, scenario_rates


def test_scenario_comes_from_the_request_name_tag() -> None:
    assert scenario_of("/users/{id} [hot]") == "hot"
    assert scenario_of("/users/{id} [cold]") == "cold"
    assert scenario_of("health poller") is None


def test_tally_counts_hits_and_misses_per_scenario_and_second(tmp_path: Path) -> None:
    tally = CacheTally()
    for name, header, at in [
        ("/users/{id} [hot]", "hit", 100.2), ("/users/{id} [hot]", "hit", 100.9),
        ("/users/{id} [hot]", "miss", 101.0), ("/users/{id} [cold]", "miss", 100.5),
        ("/users/{id} [cold]", "hit", 102.0), ("/payload [in bound]", None, 100.0),
        ("health poller", "hit", 100.0), ("/users/{id} [hot]", "HIT?", 100.0),
    ]:  # fmt: skip
        tally.record(name, header, at)
    path = tmp_path / "tally.json"
    tally.write(path)
    data = read_tally(path)
    assert data == {"hot": {"100": [2, 0], "101": [0, 1]}, "cold": {"100": [0, 1], "102": [1, 0]}}
    rates = scenario_rates(data)
    assert rates["hot"].rate == pytest.approx(2 / 3)
    assert rates["cold"].rate == pytest.approx(0.5)
    later = scenario_rates(data, since_epoch=101.0)
    assert (later["hot"].hits, later["hot"].misses) == (0, 1)
    assert later["cold"].rate == 1.0


def test_a_missing_or_broken_tally_reads_as_nothing(tmp_path: Path) -> None:
    assert read_tally(tmp_path / "absent.json") == {}
    (tmp_path / "bad.json").write_text("[1, 2")
    assert read_tally(tmp_path / "bad.json") == {}
    assert scenario_rates({"hot": {}})["hot"].rate is None
