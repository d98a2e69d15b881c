"""gunicorn config for the RSS recycling e2e test: a low cap and memsafe's hooks, nothing else."""

from __future__ import annotations

import os

from memsafe import RSSRecycler

# HOST and PORT as config/gunicorn.conf.py reads them (loadtests.launcher sets both).
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("E2E_WORKERS", "2"))
worker_class = os.environ.get("E2E_WORKER_CLASS", "asgi")
graceful_timeout = 10
timeout = 30
keepalive = 2
# gunicorn's own request limit (0: off); RSSRecycler takes it over (drain, overlap).
max_requests = int(os.environ.get("E2E_MAX_REQUESTS", "0"))
loglevel = "info"
# gunicorn 27 opens a control socket at one fixed path per user: parallel test servers would
# fight over it.
control_socket_disable = True

_interval = os.environ.get("E2E_CHECK_INTERVAL_SECONDS", "")
recycler = RSSRecycler(
    float(os.environ.get("E2E_MAX_WORKER_RSS_MB", "60")),
    check_interval_seconds=float(_interval) if _interval else None,
)
# memsafe's documented recipe: every hook by name (post_fork, post_worker_init, worker_exit,
# child_exit, on_exit).
globals().update(recycler.hooks())
