"""Settings: precedence, platform env vars, masking, every kind of invalid value, the profiles."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import yaml

from app.core.config import SettingsError, get_settings, load_settings, log_settings
from app.core.memory_settings import MIB
from tests.app.conftest import ROOT, ProfileWriter

PROFILES = ("local", "starter", "standard")


def test_yaml_value_overrides_code_default(write_profile: ProfileWriter) -> None:
    settings = load_settings(write_profile({"server": {"workers": 3}}))
    assert settings.server.workers == 3


def test_env_var_overrides_yaml(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_SERVER__WORKERS", "5")
    monkeypatch.setenv("APP_CACHES__USERS__MAX_SIZE", "123")
    settings = load_settings(write_profile({"server": {"workers": 3}}))
    assert settings.server.workers == 5
    assert settings.caches.users.max_size == 123


def test_code_defaults_fill_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    settings = load_settings(path)
    assert settings.server.worker_class == "guarded"
    assert settings.payload.max_size_kib == 1024


def test_app_config_env_names_the_profile(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_CONFIG", str(write_profile({"payload": {"max_size_kib": 7}})))
    assert get_settings().payload.max_size_kib == 7


def test_default_profile_is_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert get_settings().config_file == Path("config/local.yaml")


def test_web_concurrency_sets_workers(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    assert load_settings(write_profile({"server": {"workers": 4}})).server.workers == 1


def test_explicit_app_env_beats_web_concurrency(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    monkeypatch.setenv("APP_SERVER__WORKERS", "3")
    assert load_settings(write_profile()).server.workers == 3


def test_workers_never_follow_cpu_count(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert load_settings(write_profile({"server": {"workers": 2}})).server.workers == 2


@pytest.mark.parametrize("env_name", ["ADMIN_TOKEN", "APP_ADMIN__TOKEN"])
def test_admin_token_comes_from_env(
    env_name: str, write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env_name, "s3cret-0123456789")
    token = load_settings(write_profile()).admin.token
    assert token is not None
    assert token.get_secret_value() == "s3cret-0123456789"


def test_admin_token_in_yaml_is_rejected(write_profile: ProfileWriter) -> None:
    path = write_profile({"admin": {"token": "leaked"}})
    with pytest.raises(SettingsError, match=r"admin\.token.*ADMIN_TOKEN") as info:
        load_settings(path)
    assert "leaked" not in str(info.value)


def test_effective_settings_are_logged_with_secrets_masked(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "s3cret-value-0123456789")
    settings = load_settings(write_profile())
    with caplog.at_level(logging.INFO, logger="app.core.config"):
        log_settings(settings)
    lines = [record.getMessage() for record in caplog.records]
    assert "/admin/settings" in lines[0]
    assert "  admin: token=**********" in lines
    assert not any("s3cret-value" in line for line in lines)
    assert any(line.startswith("  server: workers=2 ") for line in lines)
    assert any(line.startswith("  caches: ") and "users.max_size=" in line for line in lines)
    # One line per section, each short enough to read (the single line was 1,183 chars).
    assert len(lines) == 1 + sum(isinstance(v, dict) for v in settings.masked().values())
    assert max(map(len, lines)) < 400


def _error(path: Path) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_key_names_file_key_and_allowed(write_profile: ProfileWriter) -> None:
    path = write_profile({"server": {"wrokers": 2}})
    message = _error(path)
    assert str(path) in message
    assert "server.wrokers" in message
    assert "workers" in message  # the allowed keys are listed


def test_unknown_section_is_rejected(write_profile: ProfileWriter) -> None:
    message = _error(write_profile({"databse": {"url": "x"}}))
    assert "'databse'" in message
    assert "store" in message


def test_wrong_type_names_key_value_and_allowed(write_profile: ProfileWriter) -> None:
    path = write_profile({"caches": {"users": {"max_size": "lots"}}})
    message = _error(path)
    assert str(path) in message
    assert "caches.users.max_size" in message
    assert "'lots'" in message
    assert "integer" in message


def test_out_of_range_names_the_bound(write_profile: ProfileWriter) -> None:
    message = _error(write_profile({"server": {"workers": 99}}))
    assert "server.workers" in message
    assert "99" in message
    assert "less than or equal to 32" in message


def test_bad_env_value_names_the_env_var(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_PAYLOAD__MAX_SIZE_KIB", "-1")
    message = _error(write_profile())
    assert "env APP_PAYLOAD__MAX_SIZE_KIB" in message
    assert "payload.max_size_kib" in message


def test_bad_web_concurrency_names_it(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "many")
    assert "env WEB_CONCURRENCY" in _error(write_profile())


@pytest.mark.parametrize(
    ("memory", "keys"),
    [
        ({"soft_limit_mb": 300, "hard_limit_mb": 300}, ("soft_limit_mb=300", "hard_limit_mb=300")),
        ({"hard_limit_mb": 400, "recycle_limit_mb": 350}, ("hard_limit_mb=400", "recycle_limit")),
        ({"soft_fraction": 0.9, "hard_fraction": 0.8}, ("soft_fraction=0.9", "hard_fraction=0.8")),
    ],
)
def test_soft_not_below_hard_is_rejected(
    memory: dict[str, float], keys: tuple[str, ...], write_profile: ProfileWriter
) -> None:
    path = write_profile({"memory": memory})
    message = _error(path)
    assert str(path) in message
    assert "soft < hard < recycle" in message
    for key in keys:
        assert key in message


def test_cache_budget_above_memory_limit_is_rejected(write_profile: ProfileWriter) -> None:
    message = _error(write_profile({"caches": {"total_budget_mb": 250}}))
    assert "caches.total_budget_mb=250" in message
    assert "200 MiB" in message  # local soft limit


def test_cache_bytes_above_budget_is_rejected(write_profile: ProfileWriter) -> None:
    path = write_profile({"caches": {"total_budget_mb": 1, "users": {"max_bytes": 2 * MIB}}})
    assert "caches.users.max_bytes" in _error(path)


def test_unknown_cache_policy_is_rejected_naming_key_and_allowed_values(
    write_profile: ProfileWriter,
) -> None:
    message = _error(write_profile({"caches": {"users": {"policy": "lfu"}}}))
    assert "caches.users.policy" in message
    assert "'lfu'" in message or "lfu" in message
    assert "tinylfu" in message


def test_every_profile_sets_the_users_cache_policy() -> None:
    for name in ("local", "starter", "standard"):
        profile = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
        assert profile["caches"]["users"]["policy"] in ("lru", "slru", "tinylfu")


def test_jitter_not_below_max_requests_is_rejected(write_profile: ProfileWriter) -> None:
    path = write_profile({"server": {"max_requests": 10, "max_requests_jitter": 10}})
    assert "max_requests_jitter=10" in _error(path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = _error(path)
    assert str(path) in message
    assert "not found" in message
    assert "APP_CONFIG" in message


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("server: [unclosed\n")
    assert str(path) in _error(path)


def test_non_mapping_yaml_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    assert "allowed: a mapping" in _error(path)


@pytest.mark.parametrize("profile", PROFILES)
def test_shipped_profiles_are_valid(profile: str) -> None:
    settings = load_settings(ROOT / "config" / f"{profile}.yaml")
    assert settings.store.seed_users >= 10_000
    assert settings.admin.token is None


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_key_has_a_comment(profile: str) -> None:
    lines = (ROOT / "config" / f"{profile}.yaml").read_text().splitlines()
    key_line = re.compile(r"^\s*[a-z_]+:\s*\S")
    for index, line in enumerate(lines):
        if key_line.match(line):
            before = lines[index - 1].strip()
            assert before.startswith("#"), (
                f"{profile}.yaml line {index + 1} {line.strip()!r} has no comment above it"
            )


def test_monitor_headers_on_locally_and_off_on_render() -> None:
    assert load_settings(ROOT / "config" / "local.yaml").monitor.add_headers
    assert not load_settings(ROOT / "config" / "starter.yaml").monitor.add_headers
    assert not load_settings(ROOT / "config" / "standard.yaml").monitor.add_headers


def test_starter_fits_its_memory_envelope() -> None:
    settings = load_settings(ROOT / "config" / "starter.yaml")
    master_mb = 60  # measured idle master with preload (benchmarks/bench_http.py)
    cap = settings.server.max_worker_rss_mb
    assert cap is not None
    assert master_mb + settings.server.workers * cap <= 400
    assert settings.memory.recycle_limit_mb is not None
    assert settings.memory.recycle_limit_mb < cap


def test_profiles_match_their_yaml_keys() -> None:
    """Each profile spells out every key (no silent code default on Render)."""
    local = yaml.safe_load((ROOT / "config" / "local.yaml").read_text())
    for profile in ("starter", "standard"):
        data = yaml.safe_load((ROOT / "config" / f"{profile}.yaml").read_text())
        assert _keys(data) == _keys(local), profile


def _keys(data: dict[str, object], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _keys(value, f"{prefix}{key}.")
    return keys


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"server": {"workers": True}}, "server.workers"),
        ({"caches": {"users": {"max_size": True}}}, "caches.users.max_size"),
        ({"memory": {"interval_seconds": False}}, "memory.interval_seconds"),
    ],
)
def test_boolean_for_a_number_is_rejected(
    overrides: dict[str, object], key: str, write_profile: ProfileWriter
) -> None:
    path = write_profile(overrides)
    message = _error(path)
    assert str(path) in message
    assert key in message
    assert "allowed:" in message
    assert "not a boolean" in message


def test_boolean_fields_still_take_booleans(write_profile: ProfileWriter) -> None:
    settings = load_settings(write_profile({"store": {"offload_reads": True}}))
    assert settings.store.offload_reads is True


def test_cross_field_error_names_the_env_var(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_profile()
    monkeypatch.setenv("APP_MEMORY__SOFT_LIMIT_MB", "300")
    message = _error(path)
    # soft from the env, hard (240) from the file: both origins, the env var first
    assert message.startswith(
        f"invalid settings in env APP_MEMORY__SOFT_LIMIT_MB and file {str(path)!r}:"
    )
    monkeypatch.setenv("APP_MEMORY__HARD_LIMIT_MB", "250")
    message = _error(path)
    assert message.startswith(
        "invalid settings in env APP_MEMORY__SOFT_LIMIT_MB and env APP_MEMORY__HARD_LIMIT_MB:"
    )
    assert str(path) not in message


@pytest.mark.parametrize("level", ["soft", "hard", "recycle"])
def test_memory_limit_not_below_max_worker_rss_is_rejected(
    level: str, write_profile: ProfileWriter
) -> None:
    memory: dict[str, int | None] = {f"{lvl}_limit_mb": None for lvl in ("soft", "hard", "recycle")}
    memory[f"{level}_limit_mb"] = 120
    path = write_profile({"server": {"max_worker_rss_mb": 120}, "memory": memory})
    message = _error(path)
    assert str(path) in message
    assert f"memory.{level}_limit_mb" in message
    assert "server.max_worker_rss_mb=120" in message
    assert "allowed:" in message


@pytest.mark.parametrize(
    "store_path", ["/", "{file}/app.sqlite3", "{file}/sub/app.sqlite3", "{dir}"]
)
def test_unusable_store_path_is_rejected(
    store_path: str, write_profile: ProfileWriter, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    value = store_path.format(file=blocker, dir=tmp_path)
    path = write_profile({"store": {"path": value}})
    message = _error(path)
    assert str(path) in message
    assert "store.path" in message
    assert value in message
    assert "allowed:" in message


def test_store_path_in_a_new_directory_is_accepted(
    write_profile: ProfileWriter, tmp_path: Path
) -> None:
    value = tmp_path / "new" / "deeper" / "app.sqlite3"
    assert load_settings(write_profile({"store": {"path": str(value)}})).store.path == value


@pytest.mark.parametrize("raw", ["abc", "0", "33", "-1", "2.5"])
def test_bad_web_concurrency_is_refused_even_when_app_env_overrides_it(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    # gunicorn reads int($WEB_CONCURRENCY) at import, whatever APP_SERVER__WORKERS says.
    monkeypatch.setenv("WEB_CONCURRENCY", raw)
    monkeypatch.setenv("APP_SERVER__WORKERS", "2")
    with pytest.raises(SettingsError) as info:
        load_settings(write_profile())
    assert f"env WEB_CONCURRENCY: {raw!r}" in str(info.value)
    assert "allowed: an integer 1-32" in str(info.value)


def test_app_env_vars_matching_no_key_are_warned_about(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("APP_CACHE__USERS__MAX_SIZE", "5")
    monkeypatch.setenv("APP_NOTHING_LIKE_IT", "1")
    monkeypatch.setenv("APP_CACHES__USERS__MAX_SIZE", "7")  # a real key: no warning
    monkeypatch.setenv("APP_SERVER", '{"workers": 3}')  # a whole section: no warning
    with caplog.at_level(logging.WARNING, logger="app.core.config"):
        settings = load_settings(write_profile())
    assert settings.caches.users.max_size == 7
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "env APP_CACHE__USERS__MAX_SIZE matches no settings key and is ignored; "
        "did you mean APP_CACHES__USERS__MAX_SIZE?",
        "env APP_NOTHING_LIKE_IT matches no settings key and is ignored",
    ]


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        (
            "  workers: [2",
            "at line {line} ('workers: [2'; the parser stopped at line {next}, column 3)",
        ),
        ('  workers: "2', "at line {line} ('workers: \"2'; the parser stopped at line {line1}"),
        (
            " workers: 2",
            "at line {line} ('workers: 2'; the parser stopped at line {next}, column 3)",
        ),
        ("  workers: 2: 3", "at line {line}, column 13 ('workers: 2: 3')"),
    ],
)
def test_yaml_syntax_error_points_at_the_broken_line(
    tmp_path: Path, broken: str, expected: str
) -> None:
    lines = (ROOT / "config" / "local.yaml").read_text().splitlines()
    at = lines.index("  workers: 2")  # followed by comment lines
    # the parser reads past the comment lines that follow: it stops at the next key's line
    next_key = next(i for i in range(at + 1, len(lines)) if not lines[i].lstrip().startswith("#"))
    lines[at] = broken
    path = tmp_path / "broken.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    expected = expected.replace("{next}", str(next_key + 1)).replace('\\"', '"')
    expected = expected.replace("{line1}", str(at + 2)).replace("{line}", str(at + 1))
    assert expected in str(info.value)


def test_a_given_environment_is_read_instead_of_os_environ(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("APP_SERVER__WORKERS", "7")
    monkeypatch.setenv("WEB_CONCURRENCY", "abc")  # would stop start-up if it were read
    environ = {
        "APP_CACHES__USERS__MAX_SIZE": "123",
        "WEB_CONCURRENCY": "5",
        "ADMIN_TOKEN": "x" * 16,
        "APP_CACHE__TYPO": "1",
    }
    with caplog.at_level(logging.WARNING, logger="app.core.config"):
        settings = load_settings(write_profile({"server": {"workers": 3}}), environ=environ)
    assert settings.server.workers == 5
    assert settings.caches.users.max_size == 123
    assert settings.admin.token is not None
    assert [r.getMessage() for r in caplog.records] == [
        "env APP_CACHE__TYPO matches no settings key and is ignored"
    ]
    # an error names the given environment's variable
    with pytest.raises(SettingsError, match="invalid settings in env APP_SERVER__WORKERS"):
        load_settings(write_profile(), environ={"APP_SERVER__WORKERS": "0"})
    # and os.environ is read again by the next call without one
    monkeypatch.delenv("WEB_CONCURRENCY")
    assert load_settings(write_profile()).server.workers == 7


@pytest.mark.parametrize(
    ("name", "value", "origin"),
    [
        ("APP_SERVER", '{"workers": 99}', "env APP_SERVER"),
        ("app_server__workers", "99", "env app_server__workers"),
        ("WEB_CONCURRENCY", "", "file"),  # empty: not read, so the file is to blame
    ],
)
def test_an_error_names_the_variable_it_came_from(
    write_profile: ProfileWriter, name: str, value: str, origin: str
) -> None:
    path = write_profile({"server": {"workers": 99}})
    with pytest.raises(SettingsError) as info:
        load_settings(path, environ={name: value})
    assert str(info.value).startswith(f"invalid settings in {origin}")
    assert "key 'server.workers' has invalid value" in str(info.value)
