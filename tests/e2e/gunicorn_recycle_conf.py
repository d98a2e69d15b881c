"""gunicorn config for the RSS recycling e2e test: two workers, a low cap, memsafe's hooks."""

from __future__ import annotations

import os

from memsafe.recycle import RSSRecycler

bind = os.environ.get("E2E_BIND", "127.0.0.1:8000")
workers = 2
worker_class = os.environ.get("E2E_WORKER_CLASS", "asgi")
graceful_timeout = 10
timeout = 30
keepalive = 2
loglevel = "info"
# gunicorn 27 opens a control socket at one fixed path per user: parallel test servers would
# fight over it.
control_socket_disable = True

_interval = os.environ.get("E2E_CHECK_INTERVAL_SECONDS", "")
recycler = RSSRecycler(
    float(os.environ.get("E2E_MAX_WORKER_RSS_MB", "60")),
    check_interval_seconds=float(_interval) if _interval else None,
    is_wrapping_app=os.environ.get("E2E_WRAP_APP", "1") == "1",
)
# The four hooks by name (globals().update(recycler.hooks()) does the same).
post_fork = recycler.post_fork
post_worker_init = recycler.post_worker_init
pre_request = recycler.pre_request
worker_exit = recycler.worker_exit
