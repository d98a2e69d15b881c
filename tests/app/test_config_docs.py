"""The profiles' key comments and the README table come from the settings' Field descriptions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, Field

from app.core.config import Settings
from app.core.config_checks import all_keys, flat_items
from app.core.config_docs import PROFILES, README_KEYS, expected_files, render_readme, stale_files
from app.core.key_docs import KeyDoc, key_docs
from app.core.profile_docs import render_profile
from tests.app.conftest import ROOT

# What config/starter.yaml said before one source: the monitor middleware does not check RSS
# (memsafe's DrainMiddleware does).
DRIFTED_BLOCK = """\
  # Seconds between RSS checks of the watchdog thread. Range >0 to 600 (RSS is also
  # checked after every response by the memory monitor middleware).
  # 1 s: the check reads /proc/self/statm (~3 us), so the cadence only bounds reaction time.
  rss_check_interval_seconds: 1.0
"""


def _config_docs(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m app.core.config_docs ARGS` from the repository."""
    return subprocess.run(
        [sys.executable, "-m", "app.core.config_docs", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The generated files (profiles and README) copied into a scratch root."""
    (tmp_path / "config").mkdir()
    for name in PROFILES:
        shutil.copy(ROOT / "config" / f"{name}.yaml", tmp_path / "config" / f"{name}.yaml")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def test_shipped_profiles_and_readme_match_the_field_descriptions() -> None:
    stale = stale_files()
    assert not stale, "\n".join(diff for _, diff in stale)


def test_every_settings_key_has_a_description_and_an_allowed_range() -> None:
    docs = key_docs()
    assert set(docs) == set(all_keys(Settings)) - {"config_file"}
    for doc in docs.values():
        assert doc.description.endswith("."), doc.key
        assert doc.allowed and doc.allowed != "any value", doc.key
    assert set(README_KEYS) <= set(docs)


def test_every_file_key_is_set_and_so_described_in_every_profile() -> None:
    docs = key_docs()
    in_files = {key for key, doc in docs.items() if not doc.is_env_only}
    for name in PROFILES:
        path = ROOT / "config" / f"{name}.yaml"
        data = yaml.safe_load(path.read_text())
        assert {key for key, _ in flat_items(data)} == in_files, name
        text = path.read_text()
        for doc in docs.values():
            if doc.is_env_only:
                assert f"# - {doc.key} (" in text, (name, doc.key)


def test_a_drifted_profile_comment_fails_the_check(repo_copy: Path) -> None:
    starter = repo_copy / "config" / "starter.yaml"
    text = starter.read_text()
    start = text.index("  # Seconds between two RSS checks")
    end = text.index("  rss_check_interval_seconds:")
    end = text.index("\n", end) + 1
    starter.write_text(text[:start] + DRIFTED_BLOCK + text[end:])
    stale = stale_files(repo_copy)
    assert [path.name for path, _ in stale] == ["starter.yaml"]
    assert "+  # response's headers, by memsafe's DrainMiddleware)" in stale[0][1]
    # --write adds the generated lines and names the key whose old lines need a read
    notes: list[str] = []
    expected_files(repo_copy, notes)
    assert notes == [
        "config/starter.yaml: server.rss_check_interval_seconds: its 3 old comment line(s) are "
        "kept below the generated ones as the profile's reasons; remove what they repeat"
    ]


def test_an_edited_generated_line_fails_the_check_and_write_keeps_the_reasons(
    repo_copy: Path,
) -> None:
    local = repo_copy / "config" / "local.yaml"
    text = local.read_text()
    generated = "  # Allowed: 1-32 (code default 1).\n"
    at = text.index(generated)
    reason = text[at + len(generated) : text.index("  workers: 2\n", at)]
    assert reason.startswith("  # 2 locally"), reason
    local.write_text(text.replace(generated, "  # Allowed: 1-64.\n"))
    stale = stale_files(repo_copy)
    assert [path.name for path, _ in stale] == ["local.yaml"]
    assert "+  # Allowed: 1-32 (code default 1)." in stale[0][1]
    written = expected_files(repo_copy)[local]
    assert generated + reason + "  workers: 2\n" in written
    assert written == text


def test_a_drifted_readme_cell_fails_the_check(repo_copy: Path) -> None:
    readme = repo_copy / "README.md"
    text = readme.read_text()
    row = "| `server.workers` | 2 | 2 | 4 |"
    assert row in text
    readme.write_text(text.replace(row, "| `server.workers` | 2 | 2 | 8 |"))
    stale = stale_files(repo_copy)
    assert [path.name for path, _ in stale] == ["README.md"]


def test_the_profiles_own_lines_survive_a_rewrite() -> None:
    docs = key_docs()
    text = (
        "server:\n"
        "  # An old description that drifted.\n"
        "  # Allowed: 1-99 (code default 7).\n"
        "  # 3: why this profile runs three.\n"
        "  workers: 3  # inline\n"
    )
    out = render_profile(text, docs)
    lines = out.splitlines()
    at = lines.index("  workers: 3  # inline")
    assert lines[at - 1] == "  # 3: why this profile runs three."
    assert lines[at - 2] == "  # Allowed: 1-32 (code default 1)."
    assert "An old description" not in out
    assert render_profile(out, docs) == out  # stable


def test_a_free_note_apart_from_a_key_is_kept() -> None:
    text = "store:\n  # A note about DATABASE_URL.\n\n  seed_users: 5\n"
    out = render_profile(text, key_docs())
    assert "  # A note about DATABASE_URL.\n\n  # Demo users seeded" in out


def test_a_profile_key_that_is_no_setting_is_named() -> None:
    with pytest.raises(
        ValueError,
        match=r"profile key 'server\.wokers' is not a setting; did you mean 'server\.workers'\?",
    ):
        render_profile("server:\n  wokers: 2\n", key_docs())


def test_a_key_without_a_value_is_a_null_and_gets_its_comment() -> None:
    out = render_profile("monitor:\n  alert_rss_mb:\n  max_alerts: 5\n", key_docs())
    assert "  # Allowed: >0 to 65,536, or null (code default null).\n  alert_rss_mb:\n" in out


def test_a_key_the_renderer_cannot_see_is_an_error_not_a_silent_gap() -> None:
    with pytest.raises(ValueError, match=r"profile key\(s\) 'server\.workers' got no comment"):
        render_profile('server:\n  "workers": 2\n', key_docs())


def test_content_after_the_generated_tail_is_an_error_not_deleted() -> None:
    text = render_profile("server:\n  workers: 2\n", key_docs()) + "memory:\n  hysteresis_mb: 8\n"
    with pytest.raises(ValueError, match=r"line \d+ 'memory:' is after the generated tail"):
        render_profile(text, key_docs())


def test_write_refuses_a_profile_it_cannot_document(repo_copy: Path) -> None:
    local = repo_copy / "config" / "local.yaml"
    before = local.read_text() + "extra: 1\n"
    local.write_text(before)
    done = _config_docs("--write", "--root", str(repo_copy))
    assert done.returncode == 2
    assert done.stderr.startswith("config-docs: config/local.yaml: line ")
    assert local.read_text() == before  # nothing lost


def test_readme_without_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="config-table:start"):
        render_readme("# README\n", key_docs(), {})


class _Sample(BaseModel):
    count: int = Field(default=3, ge=1, le=10_000, description="A count.")
    delay: float | None = Field(default=None, gt=0, le=2.5, description="A delay.")
    kind: Literal["a", "b", "c"] = Field(default="a", description="A kind.")
    flag: bool = Field(default=True, description="A flag.")
    name: str = Field(default="x", min_length=1, max_length=9, description="A name.")
    path: str = Field(default="p", json_schema_extra={"allowed": "a path"}, description="A p.")
    bare: int = 1


def test_allowed_is_derived_from_the_field_constraints() -> None:
    with pytest.raises(ValueError, match="'bare' has no Field description"):
        key_docs(_Sample)

    class Documented(_Sample):
        bare: int = Field(default=1, description="Bare.")

    docs = key_docs(Documented)
    assert {key: doc.allowed for key, doc in docs.items()} == {
        "count": "1-10,000",
        "delay": ">0 to 2.5, or null",
        "kind": '"a", "b" or "c"',
        "flag": "true or false",
        "name": "1-9 characters",
        "path": "a path",
        "bare": "any value",
    }
    assert docs["delay"].default == "null"
    assert docs["flag"].default == "true"


def test_summary_is_the_first_sentence() -> None:
    doc = KeyDoc("k", "Seconds, e.g. 5. More words.", "1-2", "1", "APP_K", None, False)
    assert doc.summary == "Seconds, e.g. 5"


def test_check_command_exits_nonzero_and_names_the_make_target(repo_copy: Path) -> None:
    ok = _config_docs("--check")
    assert ok.returncode == 0, ok.stdout
    (repo_copy / "config" / "local.yaml").write_text("server:\n  workers: 2\n")
    bad = _config_docs("--check", "--root", str(repo_copy))
    assert bad.returncode == 1
    assert "config/local.yaml differs from the settings' Field descriptions" in bad.stdout
    assert "make config-docs" in bad.stdout


def test_readme_cells_escape_markdown(repo_copy: Path) -> None:
    docs = dict(key_docs())
    odd = docs["server.workers"]
    docs["server.workers"] = KeyDoc(
        odd.key,
        "Counts as <overflow> | a *pipe*. More.",
        odd.allowed,
        odd.default,
        odd.env,
        odd.platform_env,
        odd.is_env_only,
    )
    profiles = {name: repo_copy / "config" / f"{name}.yaml" for name in PROFILES}
    table = render_readme((repo_copy / "README.md").read_text(), docs, profiles)
    assert "| Counts as &lt;overflow> \\| a \\*pipe\\* |" in table
