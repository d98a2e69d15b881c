"""memsafe's version, from one source: the ``memsafe`` distribution's metadata."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

_PYPROJECT = Path(__file__).with_name("pyproject.toml")


def _version() -> str:
    """The installed distribution's version; from a source tree, memsafe/pyproject.toml's."""
    try:
        return metadata.version("memsafe")
    except metadata.PackageNotFoundError:
        pass
    # Not installed (the package imported from a checkout): read the same pyproject.toml the
    # distribution is built from. A regex, not tomllib, keeps this import cheap.
    try:
        match = re.search(r'^version = "([^"]+)"', _PYPROJECT.read_text(), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1) if match else "0+unknown"


__version__ = _version()
