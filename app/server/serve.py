"""`python -m app.server.serve`: check the settings, then become gunicorn (image CMD, make run).

gunicorn reads int($WEB_CONCURRENCY) when it is imported, before config/gunicorn.conf.py, so a
typo in that variable (set in Render's dashboard) would be a traceback. This checks the
settings first and prints one line naming the variable, the value and what is allowed (exit
2). Then it execs gunicorn in the same process: gunicorn keeps this pid (PID 1 in the image)
and receives SIGTERM directly, as with a plain `CMD ["gunicorn", ...]`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from app.core import check

GUNICORN_CONFIG = "config/gunicorn.conf.py"
APP = "app.main:app"


def gunicorn_argv(extra: Sequence[str] = ()) -> list[str]:
    """The gunicorn command line this module execs: this interpreter, the shared config."""
    return [sys.executable, "-m", "gunicorn", "--config", GUNICORN_CONFIG, *extra, APP]


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 2 with the settings error; otherwise replace this process with gunicorn."""
    code = check.main()
    if code:
        return code
    command = gunicorn_argv(sys.argv[1:] if argv is None else argv)
    sys.stdout.flush()
    os.execv(command[0], command)
    return 0  # pragma: no cover  (execv does not return)


if __name__ == "__main__":
    sys.exit(main())
