"""config/loadtest.yaml layering: defaults < profile < smoke < env < CLI, and plan shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loadtests.thresholds import (
    DEFAULT_THRESHOLDS_PATH,
    LoadSettings,
    env_name,
    parse_duration,
    read_config,
    resolve_plan,
    resolve_settings,
)

CONFIG: dict[str, Any] = {
    "defaults": {"users": 50, "max_rss_mb": 400, "max_slope_mb_per_min": 1.0},
    "profiles": {"standard": {"max_rss_mb": 1600, "users": 100}},
    "smoke": {"duration_seconds": 25, "max_slope_mb_per_min": 30},
    "plans": {"starter": {"cpu_quota_us": 50000, "cpu_period_us": 100000, "memory_limit_mb": 512}},
}


def test_the_shipped_file_resolves_for_every_profile_and_plan() -> None:
    config = read_config(Path(__file__).parents[2] / DEFAULT_THRESHOLDS_PATH)
    for profile in ("starter", "standard", "local"):
        assert resolve_settings(config, profile=profile).max_rss_mb > 0
    assert resolve_settings(config, profile="starter").max_rss_mb == 400
    smoke = resolve_settings(config, profile="starter", is_smoke=True)
    assert smoke.duration_seconds <= 30
    starter = resolve_plan(config, "starter")
    assert (starter.cpus, starter.memory_limit_mb) == (0.5, 512)
    assert starter.memory_limit_bytes == 512 * 1024 * 1024


def test_profile_overrides_defaults_and_unknown_profiles_use_defaults() -> None:
    assert resolve_settings(CONFIG, profile="standard").max_rss_mb == 1600
    assert resolve_settings(CONFIG, profile="nope").max_rss_mb == 400


def test_smoke_applies_only_when_asked() -> None:
    assert resolve_settings(CONFIG, profile="starter").duration_seconds == 120
    smoke = resolve_settings(CONFIG, profile="starter", is_smoke=True)
    assert (smoke.duration_seconds, smoke.max_slope_mb_per_min) == (25, 30)


def test_env_beats_the_file_and_cli_beats_env() -> None:
    env = {"MAX_RSS_MB": "350", "DURATION": "2m", "USERS": "7"}
    got = resolve_settings(CONFIG, profile="standard", env=env)
    assert (got.max_rss_mb, got.duration_seconds, got.users) == (350, 120, 7)
    got = resolve_settings(CONFIG, profile="standard", env=env, cli={"max_rss_mb": 300.0})
    assert got.max_rss_mb == 300
    got = resolve_settings(CONFIG, profile="standard", env={"MAX_RSS_MB": ""}, cli={"users": None})
    assert (got.max_rss_mb, got.users) == (1600, 100)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"cli": {"max_rss_mb": "lots"}}, "command line: max_rss_mb must be a number"),
        ({"env": {"USERS": "2.5"}}, "users must be a whole number"),
        ({"cli": {"warmup_fraction": 1.5}}, r"warmup_fraction must be within \[0.0, 0.95\]"),
        ({"cli": {"bogus": 1}}, "unknown key 'bogus'"),
    ],
)
def test_bad_values_are_named_with_their_source(layer: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_settings(CONFIG, profile="starter", **layer)


@pytest.mark.parametrize(
    ("layer", "expected"),
    [({}, True), ({"env": {"PREFILL": "false"}}, False), ({"cli": {"prefill": False}}, False),
     ({"env": {"PREFILL": "0"}, "cli": {"prefill": True}}, True)],
)  # fmt: skip
def test_prefill_is_on_by_default_and_switched_by_env_or_cli(
    layer: dict[str, Any], expected: bool
) -> None:
    assert resolve_settings(CONFIG, profile="starter", **layer).prefill is expected


def test_prefill_rejects_a_word_that_is_not_a_boolean() -> None:
    with pytest.raises(ValueError, match="prefill must be true or false, got 'maybe'"):
        resolve_settings(CONFIG, profile="starter", env={"PREFILL": "maybe"})


def test_the_shipped_smoke_prefills_within_a_tighter_time_cap() -> None:
    config = read_config(Path(__file__).parents[2] / DEFAULT_THRESHOLDS_PATH)
    smoke = resolve_settings(config, profile="starter", is_smoke=True)
    full = resolve_settings(config, profile="starter")
    assert smoke.prefill is full.prefill is True
    assert smoke.duration_seconds + smoke.prefill_max_seconds <= 40  # within the 45 s budget
    assert smoke.prefill_max_seconds < full.prefill_max_seconds


def test_settings_validate_their_ranges() -> None:
    with pytest.raises(ValueError, match="users must be within"):
        LoadSettings(users=0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("120", 120.0), ("90s", 90.0), ("2m", 120.0), ("1h30m", 5400.0), ("1m30s", 90.0)],
)
def test_parse_duration_accepts_locust_run_time_syntax(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "2x", "m"])
def test_parse_duration_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="duration must look like"):
        parse_duration(text)


def test_env_names_match_the_makefile_variables() -> None:
    assert env_name("duration_seconds") == "DURATION"
    assert env_name("max_rss_mb") == "MAX_RSS_MB"


def test_unknown_or_malformed_plans_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown plan 'gold'; allowed: starter"):
        resolve_plan(CONFIG, "gold")
    with pytest.raises(ValueError, match=r"plans\.bad needs integer"):
        resolve_plan({"plans": {"bad": {"cpu_quota_us": 1}}}, "bad")


def test_a_file_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("- 1\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        read_config(path)
