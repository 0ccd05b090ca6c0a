# syntax=docker/dockerfile:1
# Lookout's image: `docker build -t lookout .`, then `docker run --rm lookout --help`.
#
# builder: builds the project as a wheel (a compiled decoder, when there is one, is built here
#          by `pip wheel`, with the compiler this stage alone has) and gathers wheels of the
#          runtime dependencies at the exact versions of requirements.lock.
# final:   installs only those wheels (no index, no compiler), compiles bytecode once, runs
#          as an unprivileged user under tini so SIGTERM reaches `lookout run` and it flushes.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Debian packages follow the base image's Debian release, which the image tag pins
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# setup.py and third_party/ build the compiled decoder: without them the wheel would quietly
# hold only the pure-Python one
COPY pyproject.toml requirements.lock setup.py MANIFEST.in ./
COPY third_party/ third_party/
COPY schemas/ schemas/
COPY detectors/ detectors/
COPY worker/ worker/
COPY alerts/ alerts/
# the lock pins the test tools too; as constraints it only fixes the versions of what the
# project's wheel needs, so none of them enters the image
RUN pip wheel --wheel-dir /wheels --constraint requirements.lock .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="lookout" \
      org.opencontainers.image.description="Production monitoring and drift detection for LLMs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# PYTHONDONTWRITEBYTECODE stays unset: the bytecode is compiled below, at build time, so a
# read-only root filesystem costs no start-up time
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/lookout/bin:$PATH \
    HOME=/tmp
# tini (PID 1) forwards SIGTERM to lookout and reaps children; Debian's, like gcc above
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 lookout \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin lookout \
    && install -d -o 10001 -g 10001 /var/lib/lookout /etc/lookout
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/lookout \
    && /opt/lookout/bin/pip install --no-index --no-compile --find-links /wheels lookout \
    && /opt/lookout/bin/python -m compileall -q -j 0 /opt/lookout
WORKDIR /var/lib/lookout
USER 10001:10001
# /metrics, /healthz and /readyz (metrics.port)
EXPOSE 9464
ENTRYPOINT ["/usr/bin/tini", "--", "lookout"]
CMD ["run", "--config", "/etc/lookout/lookout.yaml"]
