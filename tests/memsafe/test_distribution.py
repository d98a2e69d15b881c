"""memsafe installs on its own: one `pip install` into a fresh venv brings memsafe and psutil."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import memsafe

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SMOKE = textwrap.dedent(
    """
    import asyncio, importlib.util, json, memsafe
    from memsafe import LRUCache, cached

    cache = LRUCache(max_size=2, name="smoke")
    cache.set("a", 1)
    cache.set("b", 2)
    cache.set("c", 3)
    calls = []

    @cached(cache)
    def double(x):
        calls.append(x)
        return 2 * x

    assert (double(4), double(4)) == (8, 8) and calls == [4]

    async def lifespan():
        service = await memsafe.start_memory_cleanup(interval_seconds=60)
        await memsafe.stop_memory_cleanup()
        return service.is_running

    print(json.dumps({
        "file": memsafe.__file__,
        "version": memsafe.__version__,
        "has_a": "a" in cache,
        "stats": cache.stats()["evictions"],
        "running_after_stop": asyncio.run(lifespan()),
        "fastapi": importlib.util.find_spec("fastapi") is not None,
        "gunicorn": importlib.util.find_spec("gunicorn") is not None,
        "app": importlib.util.find_spec("app") is not None,
    }))
    """
)


def test_pip_install_into_a_fresh_venv_brings_only_psutil(tmp_path: Path) -> None:
    source = tmp_path / "src" / "memsafe"
    shutil.copytree(
        ROOT / "memsafe",
        source,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    )
    names = {row["name"].lower() for row in json.loads(listed.stdout)}
    assert names - {"pip", "setuptools", "wheel"} == {"memsafe", "psutil"}
    run = subprocess.run(
        [str(python), "-c", SMOKE],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,  # far from the checkout: the installed copy is what imports
    )
    result = json.loads(run.stdout)
    assert result["file"].startswith(str(venv))
    assert result["version"] == memsafe.__version__
    assert result["has_a"] is False
    assert result["stats"] == 2  # "a", then "b" for the cached value
    assert result["running_after_stop"] is False
    assert (result["fastapi"], result["gunicorn"], result["app"]) == (False, False, False)


def test_the_project_venv_imports_memsafe_from_any_directory(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", "import memsafe; print(memsafe.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert Path(run.stdout.strip()) == ROOT / "memsafe" / "__init__.py"
