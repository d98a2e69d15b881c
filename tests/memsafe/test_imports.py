"""memsafe stays a library: it never imports the app, FastAPI or Starlette."""

from __future__ import annotations

import ast
import inspect
import pathlib
from pathlib import Path
from typing import is_typeddict

import pytest

import memsafe

FORBIDDEN_ROOTS = {"app", "fastapi", "starlette", "uvicorn", "pydantic", "prometheus_client"}
PACKAGE_DIR = pathlib.Path(memsafe.__file__).parent


def _imported_roots(path: pathlib.Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_memsafe_never_imports_the_app_or_a_web_framework() -> None:
    modules = sorted(PACKAGE_DIR.glob("*.py"))
    assert modules, "memsafe has no modules"
    offenders = {
        path.name: sorted(_imported_roots(path) & FORBIDDEN_ROOTS)
        for path in modules
        if _imported_roots(path) & FORBIDDEN_ROOTS
    }
    assert offenders == {}


def test_public_api_is_exactly_all() -> None:
    for name in memsafe.__all__:
        assert hasattr(memsafe, name), name
    public = {n for n in vars(memsafe) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if type(getattr(memsafe, n)).__name__ == "module"}
    assert public - modules == set(memsafe.__all__)


def test_every_public_class_states_its_concurrency_contract() -> None:
    # House style: each memsafe class says in one sentence how it behaves across threads.
    # TypedDicts and Protocols are plain data shapes and interfaces, not implementations.
    missing = [
        name
        for name in memsafe.__all__
        if inspect.isclass(cls := getattr(memsafe, name))
        and not is_typeddict(cls)
        and not getattr(cls, "_is_protocol", False)
        and "Thread safety:" not in (cls.__doc__ or "")
    ]
    assert missing == []


def test_version_comes_from_the_distribution_or_its_pyproject(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from importlib import metadata

    from memsafe import _version

    pyproject = (Path(_version.__file__).with_name("pyproject.toml")).read_text()
    assert f'version = "{memsafe.__version__}"' in pyproject

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr("memsafe._version.metadata.version", not_installed)
    assert _version._version() == memsafe.__version__  # read from memsafe/pyproject.toml
    monkeypatch.setattr(_version, "_PYPROJECT", Path("/nonexistent/pyproject.toml"))
    assert _version._version() == "0+unknown"


def test_testing_reset_forgets_process_wide_state() -> None:
    import asyncio

    from memsafe import _default_cleanup, _worker, cache_manager
    from memsafe.testing import reset

    _worker.record_worker(object())
    cache_manager.create_cache("reset_probe", max_size=2)

    async def start() -> None:
        await memsafe.start_memory_cleanup(interval_seconds=60)
        await memsafe.stop_memory_cleanup()
        _default_cleanup._default_service = memsafe.MemoryCleanupService()

    asyncio.run(start())
    reset()
    assert not memsafe.is_gunicorn_worker()
    assert _default_cleanup.default_cleanup_service() is None
    assert "reset_probe" not in cache_manager.get_cache_stats()["caches"]


def test_stats_return_exactly_the_keys_of_their_typed_dicts() -> None:
    from memsafe import CleanupStats, MemoryCleanupService, RecyclerStats, RSSRecycler

    service = MemoryCleanupService(manager=memsafe.CacheManager(), recycle=lambda reason: None)
    assert set(service.stats()) == set(CleanupStats.__annotations__)
    assert set(RSSRecycler(64).stats()) == set(RecyclerStats.__annotations__)
