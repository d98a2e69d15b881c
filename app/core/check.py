"""`python -m app.core.check`: validate the settings in one line (app.server.serve runs it first).

gunicorn evaluates int($WEB_CONCURRENCY) when it is imported, before it reads
config/gunicorn.conf.py, so a bad value there is a traceback unless something checks first.
It prints nothing when the settings are valid.
"""

from __future__ import annotations

import sys

from app.core.config import SettingsError, load_settings


def main() -> int:
    """0 when the settings load; otherwise the error on stderr and 2 (as gunicorn.conf.py)."""
    try:
        load_settings()
    except SettingsError as exc:
        sys.stderr.write(f"invalid configuration: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
