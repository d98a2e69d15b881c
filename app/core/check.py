"""`python -m app.core.check`: validate the settings in one line (app.server.serve runs it first).

gunicorn evaluates int($WEB_CONCURRENCY) when it is imported, before it reads
config/gunicorn.conf.py, so a bad value there is a traceback unless something checks first.
It prints nothing when the settings are valid: the loader's warnings (an APP_* variable that
matches no key) are left to the app, which logs them once, formatted, when it loads the
settings itself.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from app.core.config import SettingsError, load_settings

# The logger app.core.config warns through (logging.getLogger(__name__) there).
CONFIG_LOGGER = "app.core.config"


@contextlib.contextmanager
def settings_warnings_muted() -> Iterator[None]:
    """Drop the settings loader's warnings (not its errors) inside the block.

    For the loads that only validate or read a few keys before the app loads the settings
    and logs what they say: the check, config/gunicorn.conf.py and each worker's connection
    guard. Without it one stray APP_* variable is warned about once per load, the first ones
    unformatted (logging's last-resort handler: logging is not configured yet).
    """
    logger = logging.getLogger(CONFIG_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def main() -> int:
    """0 when the settings load; otherwise the error on stderr and 2 (as gunicorn.conf.py)."""
    try:
        with settings_warnings_muted():
            load_settings()
    except SettingsError as exc:
        sys.stderr.write(f"invalid configuration: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
