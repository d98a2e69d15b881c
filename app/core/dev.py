"""`make dev`: uvicorn with reload, watching only app/, memsafe/ and config/*.yaml.

uvicorn's default reloader polls every file under the working directory (4,526 of them with
.venv, 57 % of a core while idle). Here watchfiles (inotify) watches three directories and
wakes only on a change; a YAML edit reloads too. Requests are logged once, by the app
(logging.access_log), in the same one-line format as every other line.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from app.core.config import SettingsError, load_settings
from app.core.logging import log_config

WATCHED_DIRS = ["app", "memsafe", "config"]
WATCHED_PATTERNS = ["*.py", "*.yaml"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="uvicorn --reload on app/, memsafe/, config/")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.stderr.write(f"invalid configuration: {exc}\n")
        return 2
    uvicorn.run(
        "app.main:app",
        host=args.host,
        port=args.port,
        reload=True,
        reload_dirs=WATCHED_DIRS,
        reload_includes=WATCHED_PATTERNS,
        access_log=False,
        log_config=log_config(settings.logging.level, "uvicorn"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
