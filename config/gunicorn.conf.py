"""Gunicorn settings read from the same profile as the app ($APP_CONFIG, APP_* env, $PORT)."""

# Ref: https://docs.gunicorn.org/en/stable/settings.html
from __future__ import annotations

import gc
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from app.core.check import settings_warnings_muted  # noqa: E402  (needs sys.path above)
from app.core.config import SettingsError, load_settings  # noqa: E402
from app.core.logging import log_config  # noqa: E402

BOOT_ERROR_EXIT_CODE = 3  # gunicorn's WORKER_BOOT_ERROR: the app cannot start
WORKER_CLASSES = {
    "guarded": "app.server.worker.GuardedASGIWorker",
    "asgi": "asgi",
    "uvicorn": "uvicorn_worker.UvicornWorker",
}
DEFAULT_PORT = 8000
# Render (and the image) must listen on every interface; `make run` sets HOST=127.0.0.1 so a
# laptop does not serve its LAN.
DEFAULT_HOST = "0.0.0.0"


def _fail(message: str) -> NoReturn:
    """Stop gunicorn with one readable line instead of a traceback."""
    sys.stderr.write(f"gunicorn: invalid configuration: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def _port() -> int:
    raw = os.environ.get("PORT", str(DEFAULT_PORT)).strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        _fail(f"env PORT={raw!r} is not a port; allowed: an integer 1-65535")
    return int(raw)


def _host() -> str:
    raw = os.environ.get("HOST", DEFAULT_HOST).strip()
    try:
        ipaddress.IPv4Address(raw)
    except ValueError:
        _fail(f"env HOST={raw!r} is not an IPv4 address; allowed: e.g. 0.0.0.0 or 127.0.0.1")
    return raw


try:
    # Logging is not configured yet (warnings would come out unformatted); the app logs the
    # loader's warnings once when it loads the settings itself (in the master: preload_app).
    with settings_warnings_muted():
        _settings = load_settings()
except SettingsError as exc:
    _fail(str(exc))
_server = _settings.server

# Render routes to $PORT on all interfaces (10000 by default); locally 8000 on $HOST.
bind = [f"{_host()}:{_port()}"]
# WEB_CONCURRENCY (Render) is already folded into server.workers by the settings loader.
workers = _server.workers
worker_class = WORKER_CLASSES[_server.worker_class]
timeout = _server.timeout_seconds
graceful_timeout = _server.graceful_timeout_seconds
keepalive = _server.keepalive_seconds
# gunicorn's own asgi worker ignores worker_connections; the guarded worker applies
# server.max_connections (lowered below RLIMIT_NOFILE) itself. Set here so both agree.
worker_connections = _server.max_connections
max_requests = _server.max_requests
max_requests_jitter = _server.max_requests_jitter
preload_app = _server.preload
forwarded_allow_ips = _server.forwarded_allow_ips
# The heartbeat file is touched every second: on tmpfs it never waits on a disk.
# Ref: https://docs.gunicorn.org/en/stable/faq.html#blocking-os-fchmod
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# The app logs each request itself (with its request id) when logging.access_log is on.
accesslog = None
errorlog = "-"
loglevel = _settings.logging.level.lower()
# gunicorn's own lines in the app's one-line format, on stdout like everything else.
# Ref: https://docs.gunicorn.org/en/stable/settings.html#logconfig-dict
logconfig_dict = log_config(_settings.logging.level, "gunicorn")
proc_name = "memsafe-app"
# gunicorn 27's runtime control socket (gunicornc) is an admin interface and a master thread
# nobody on Render uses; it also lives at one fixed path per user, so two servers clash.
control_socket_disable = True

if preload_app:
    # No gc pass while the master imports the app: objects then stay where a fork can share them.
    gc.disable()

from memsafe import RSSRecycler  # noqa: E402  (needs sys.path above)

# memsafe's recycler, used as any memsafe user would: its DrainMiddleware wraps each worker's
# app (Connection: close before exit, so no keep-alive client sees a failed request), and up
# to server.recycle_overlap_max_workers workers (Render Starter runs WEB_CONCURRENCY=1) the
# replacement serves before the old worker drains. max_worker_rss_mb null still installs it:
# the cleaner's recycle level goes through it.
_recycler = RSSRecycler(
    _server.max_worker_rss_mb,
    check_interval_seconds=_server.rss_check_interval_seconds,
    overlap_max_workers=_server.recycle_overlap_max_workers,
)
# post_worker_init (wrap the app, start the watchdog), worker_exit (log a recycle) and
# child_exit (master: give back the overlap's extra worker slot), as memsafe's docs show.
post_worker_init = _recycler.post_worker_init
worker_exit = _recycler.worker_exit
child_exit = _recycler.child_exit


def on_starting(server: Any) -> None:
    """Create, migrate and seed the store once, in the master, before any worker starts.

    A store that cannot be opened stops gunicorn here with one line and exit code 3
    (gunicorn's boot error), before any worker is forked.
    """
    from app.store import StoreUnavailableError, ensure_seeded

    store = _settings.store
    try:
        if store.database_url is not None:
            from app.store_pg import migrate_and_seed

            migrate_and_seed(
                store.database_url.get_secret_value(),
                schema=store.database_schema,
                seed_users=store.seed_users,
                connect_timeout_seconds=store.connect_timeout_seconds,
            )
        else:
            ensure_seeded(store.path, store.seed_users)
    except StoreUnavailableError as exc:
        sys.stderr.write(f"gunicorn: cannot start: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(BOOT_ERROR_EXIT_CODE) from None


def on_exit(server: Any) -> None:
    """Remove the workers' shared metrics directory (each worker already removed its file)."""
    import shutil

    from app.core.shared_snapshots import shared_snapshot_dir

    shutil.rmtree(shared_snapshot_dir(os.getpid()), ignore_errors=True)
    _recycler.on_exit(server)


def when_ready(server: Any) -> None:
    """Freeze everything the master loaded into gc's permanent generation, then fork."""
    # Ref: https://docs.python.org/3/library/gc.html#gc.freeze
    # Without freeze one gc pass in a forked worker touches every object header and copies
    # the master's pages (measured: 77 MiB copied; 1.5 MiB with freeze).
    gc.collect()
    gc.freeze()
    gc.enable()


def pre_fork(server: Any, worker: Any) -> None:
    """Freeze whatever the master allocated since (respawns fork from it too)."""
    gc.freeze()


def post_fork(server: Any, worker: Any) -> None:
    """Re-enable gc in the worker and reset the recycler's per-worker state."""
    gc.enable()
    _recycler.post_fork(server, worker)
