"""memsafe stays a library: it never imports the app, FastAPI or Starlette."""

from __future__ import annotations

import ast
import inspect
import pathlib
from typing import is_typeddict

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
