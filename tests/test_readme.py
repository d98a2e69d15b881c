"""Every example and claim a newcomer copies from README.md works as shown."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from memsafe import MemoryMonitor, cache_manager

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
PROFILES = ("local", "starter", "standard")


def test_quickstart_shows_exactly_run_and_test() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    first_block = re.findall(r"```\n(.*?)```", quickstart, flags=re.DOTALL)[0]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["make run", "make test"]


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z_-]+):", makefile, flags=re.MULTILINE))
    named = set(re.findall(r"`make ([a-z-]+)", README)) | set(
        re.findall(r"^make ([a-z-]+)", README, flags=re.MULTILINE)
    )
    named |= {t.strip("`") for t in re.findall(r"`([a-z-]+)`", README) if t in targets}
    assert named, "README names no make target"
    assert named <= targets, named - targets


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_example_runs_as_shown(index: int) -> None:
    cache_manager.remove_cache("readme_users")
    namespace: dict[str, Any] = {"__name__": f"readme_example_{index}"}
    try:
        exec(compile(PYTHON_BLOCKS[index], f"README.md[python {index}]", "exec"), namespace)
        app = namespace.get("app")
        if isinstance(app, FastAPI):
            with TestClient(app) as client:
                response = client.get("/hello")
            assert response.status_code == 200
            assert response.headers["x-memory-rss-mb"]
            monitor = namespace["monitor"]
            assert isinstance(monitor, MemoryMonitor)
            assert monitor.stats()["requests"] == 1
        recycler = namespace.get("recycler")
        if recycler is not None:
            for hook in ("post_fork", "post_worker_init", "worker_exit", "child_exit", "on_exit"):
                assert namespace[hook] == getattr(recycler, hook)
    finally:
        cache_manager.remove_cache("readme_users")


def test_the_leaking_line_the_readme_cites_is_the_leaking_line() -> None:
    cited = re.findall(r"leaky_app\.py:(\d+)", README)
    assert cited, "README cites no loadtests/leaky_app.py:N"
    lines = (ROOT / "loadtests" / "leaky_app.py").read_text().splitlines()
    for number in map(int, cited):
        assert 1 <= number <= len(lines), number
        assert "LEAKED.append(" in lines[number - 1], (number, lines[number - 1])


def _config_rows() -> list[list[str]]:
    table = README.split("<!-- config-table:start -->", 1)[1].split("<!-- config-table:end -->")[0]
    rows = [
        [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        for line in table.strip().splitlines()[2:]
    ]
    assert rows, "the configuration table is empty"
    return rows


def _lookup(profile: dict[str, Any], dotted: str) -> Any:
    node: Any = profile
    for part in dotted.split("."):
        node = node[part]
    return node


def _as_cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@pytest.mark.parametrize("row", _config_rows(), ids=lambda row: row[0])
def test_configuration_table_matches_the_profiles(row: list[str]) -> None:
    key, *defaults, _allowed, env_cell, _meaning = row
    for profile_name, shown in zip(PROFILES, defaults, strict=True):
        profile = yaml.safe_load((ROOT / "config" / f"{profile_name}.yaml").read_text())
        assert _as_cell(_lookup(profile, key)) == shown, (profile_name, key)
    expected_env = "APP_" + key.upper().replace(".", "__")
    assert expected_env in env_cell
