# syntax=docker/dockerfile:1
# streamapp image: a Faust worker by default, and every other `streamapp` command.
#
#   docker build -t streamapp .
#   docker run --rm -p 6066:6066 -e STREAMAPP_BROKER=kafka://broker:9092 streamapp
#   docker run --rm -e STREAMAPP_BROKER=kafka://broker:9092 streamapp streamapp generate --rate 200
#
# docker-compose.yml builds it for its `worker` and `generator` services
# (tests/unit/test_docker_compose.py checks that the two files agree).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    STREAMAPP_DATA_DIR=/data

# An unprivileged user that owns the state directory (RocksDB tables live under /data).
RUN groupadd --system --gid 10001 streamapp \
 && useradd --system --uid 10001 --gid streamapp --create-home --home-dir /home/streamapp \
        --shell /usr/sbin/nologin streamapp \
 && mkdir /data \
 && chown streamapp:streamapp /data

# Only what `pip install .` needs: pyproject.toml, README.md (its readme) and the packages it
# lists (streamapp*, agents*, tables*). .dockerignore keeps the rest of the checkout out.
# faust-streaming publishes x86_64 wheels only: on arm64 pip builds it from its sdist and, with
# no C compiler in this image, installs its pure-Python fallback (same behaviour, a bit slower).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamapp ./streamapp
COPY agents ./agents
COPY tables ./tables
RUN pip install .[archive] \
 && rm -rf /src

WORKDIR /home/streamapp
# numeric, so a runtime can tell it is not root (e.g. Kubernetes runAsNonRoot)
USER 10001:10001
VOLUME ["/data"]
# the web API (STREAMAPP_WEB_PORT, default 6066)
EXPOSE 6066
# Python turns SIGINT into a clean shutdown even as PID 1 (faust flushes its tables; the
# generator stops), where SIGTERM with no handler would be ignored until Docker's SIGKILL.
STOPSIGNAL SIGINT

# Each worker advertises its own host name (Faust's canonical URL) so the others can route web
# requests for keys they do not own to it; the container's host name is resolvable on the
# compose network. It is done here, not in CMD, so it also holds when the command is overridden
# (compose's `command:`, `docker run IMAGE streamapp ...`). An explicit STREAMAPP_WEB_HOST wins.
ENTRYPOINT ["/bin/sh", "-c", "export STREAMAPP_WEB_HOST=\"${STREAMAPP_WEB_HOST:-${HOSTNAME:-$(cat /etc/hostname)}}\" && exec \"$@\"", "streamapp-entrypoint"]
CMD ["streamapp", "worker"]
