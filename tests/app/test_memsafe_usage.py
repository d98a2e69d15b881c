"""The app uses memsafe as any user would: only names in memsafe.__all__."""

from __future__ import annotations

import ast
from pathlib import Path

import memsafe

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((ROOT / "app").rglob("*.py")), ROOT / "config" / "gunicorn.conf.py"]


def _memsafe_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("memsafe"):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("memsafe."))
    return names


def test_app_and_gunicorn_conf_import_only_public_memsafe_names() -> None:
    used = {path.relative_to(ROOT).as_posix(): _memsafe_imports(path) for path in SOURCES}
    private = {path: sorted(names - set(memsafe.__all__)) for path, names in used.items()}
    assert {path: names for path, names in private.items() if names} == {}
    assert set().union(*used.values())  # the check looked at real imports
