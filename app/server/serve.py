"""`python -m app.server.serve [gunicorn args]`: check the settings, then become gunicorn.

The one start command: the image's CMD, `make run`, and every test, benchmark and load test
(loadtests/launcher.py) start the server through it. gunicorn reads int($WEB_CONCURRENCY)
when it is imported, before config/gunicorn.conf.py, so a typo in that variable (set in
Render's dashboard) would be a traceback. This checks the settings first and prints one line
naming the variable, the value and what is allowed (exit 2). Then it execs gunicorn in the same
process: gunicorn keeps this pid (PID 1 in the image), its process group and resource limits,
and receives SIGTERM directly, as with a plain `CMD ["gunicorn", ...]`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from app.core import check

GUNICORN_CONFIG = "config/gunicorn.conf.py"  # relative to the repository (the image's WORKDIR)
APP = "app.main:app"
DEFAULT_ARGS = ("--config", GUNICORN_CONFIG, APP)


def gunicorn_argv(args: Sequence[str] = ()) -> list[str]:
    """The command this module execs: this interpreter's gunicorn with args (default DEFAULT_ARGS).

    Arguments replace the defaults as a whole: give `--config` and the app with any others.
    """
    return [sys.executable, "-m", "gunicorn", *(args or DEFAULT_ARGS)]


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 2 with the settings error; otherwise replace this process with gunicorn."""
    code = check.main()
    if code:
        return code
    command = gunicorn_argv(sys.argv[1:] if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
    return 0  # pragma: no cover  (execv does not return)


if __name__ == "__main__":
    sys.exit(main())
