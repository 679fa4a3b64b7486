# pracsuite-ingest container image.
#
#   docker build -t pracsuite-ingest:0.1.0 .
#
# Stage 1 builds wheels for the worker and every dependency; stage 2 installs only
# those wheels (--no-index) into a venv. No compiler, no source tree, no pip cache and
# no wheels are left in the final image. For reproducible builds, pin the base by
# digest as well: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
#
# Supported base images (PYTHON_IMAGE): a glibc Linux with a CPython 3.11 that was
# installed outside the distribution's package manager, with pip >= 22.3 and venv, as
# in the official python:3.11-slim-bookworm (the default) and python:3.11-bookworm.
# `make container-test` (deploy/container-test.sh) builds and runs this file on such a
# base: the official one when a registry serves it, else one made to match it with
# debootstrap. Not supported: a distribution's own Python (Debian's or Ubuntu's
# python3 package, e.g. FROM debian:bookworm plus apt-get install python3-pip). It is
# marked EXTERNALLY-MANAGED (PEP 668), so its pip refuses to change it
# ("externally-managed-environment"); its pip and setuptools belong to the system's
# package manager, and removing them as this file does would break that. The build
# stops at its first step on such a base, saying so. Alpine (musl) is not tested.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# The base's Python: 3.11 or newer, and not one the distribution manages (see above).
RUN python3 -c "import pathlib, sys, sysconfig; \
sys.version_info >= (3, 11) or sys.exit('Python 3.11 or newer is needed, not ' \
+ sys.version.split()[0]); \
pathlib.Path(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED').exists() and sys.exit( \
'the Python of this base image is managed by the distribution (PEP 668: ' \
'externally-managed-environment); use python:3.11-slim-bookworm or another base ' \
'that the Dockerfile lists as supported')"
# README.md* : the glob keeps the build working whether or not the README exists yet.
COPY pyproject.toml README.md* ./
COPY src ./src

# The worker's own wheel, then wheels for its runtime dependencies (all of them ship
# binary wheels for CPython 3.11 on amd64/arm64, so no compiler is needed here).
# wheels.sha256 names every wheel by content (see the runtime stage for why).
RUN pip wheel --no-deps -w /wheels . \
 && pip wheel -w /wheels /wheels/pracsuite_ingest-*.whl \
 && sha256sum /wheels/*.whl > /wheels.sha256

# -------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

# Keep in step with pracsuite_ingest.__version__ (label only): --build-arg VERSION=...
ARG VERSION=0.1.0
ARG PYTHON_IMAGE
LABEL org.opencontainers.image.title="pracsuite-ingest" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}" \
      org.opencontainers.image.description="Move a medical practice's documents into PracSuite as Patient Attachments, and prove which arrived." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="LicenseRef-Proprietary"

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Install from the build stage's wheels through a bind mount, so they never become a
# layer of this image. The venv is created without pip; the base image's pip installs
# into it (pip >= 22.3 --python) and byte-compiles, so nothing writes .pyc at run time.
# Then the base image's own pip, setuptools and wheel go: nothing is installed or built
# in the final image after this step.
# The wheels' checksums come first, by COPY: its cache is keyed on content, whereas
# Podman/Buildah (buildah issues 4522 and 6609; Debian 12's podman 4.3 among them) reuse
# a cached RUN --mount=...,from=build even when that stage's wheels changed, and so
# would build an image of the old code (seen here: a rebuild after a source change). A
# new wheel changes this file, which makes the RUN after it run again; sha256sum -c
# proves it installs exactly those wheels. The file stays: a record of what it holds.
COPY --from=build /wheels.sha256 /opt/pracsuite-ingest.wheels.sha256
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    sha256sum --quiet -c /opt/pracsuite-ingest.wheels.sha256 \
 && python -m venv --without-pip "$VIRTUAL_ENV" \
 && pip --python "$VIRTUAL_ENV/bin/python" install --no-index --find-links=/wheels \
        /wheels/pracsuite_ingest-*.whl \
 && pip uninstall --yes --quiet pip setuptools wheel \
 && python -c "import pracsuite_ingest.cli"

# Non-root user (uid/gid 10001, matching the Kubernetes securityContext) and the data
# layout. /data/input is meant to be mounted read-only; state and reports are the
# worker's (reports are written owner-only, so keep the directories private too).
RUN groupadd --system --gid 10001 pracsuite \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin pracsuite \
 && mkdir -p /data/input /data/state /data/reports /run/secrets/pracsuite /app \
 && chown 10001:10001 /data/state /data/reports \
 && chmod 0750 /data/state /data/reports

# Defaults for a container; any of them can be overridden with -e / env:.
# Keys are read from files in PRACSUITE_INGEST_SECRETS_DIR (vendor_api_key,
# practice_api_key), so no key needs to be an environment variable. input.root is the
# mounted input: a manifest row naming a file anywhere else is refused, never sent.
# (DL3064: these are paths and formats, not secrets.)
# hadolint ignore=DL3064
ENV PRACSUITE_INGEST_STATE__PATH=/data/state/pracsuite-ingest.db \
    PRACSUITE_INGEST_INPUT__ROOT=/data/input \
    PRACSUITE_INGEST_REPORT__DIR=/data/reports \
    PRACSUITE_INGEST_LOG__FORMAT=json \
    PRACSUITE_INGEST_SECRETS_DIR=/run/secrets/pracsuite

VOLUME ["/data/input", "/data/state", "/data/reports"]

# /app is root's, so `demo` (no flag) writes to /data/reports/demo, beside and never over
# a real run's reports: mount a folder on /data/reports to keep its report. Where that is
# not writable either, it writes to /tmp/pracsuite-ingest-demo and says so.
WORKDIR /app
USER 10001:10001

# The worker finishes in-flight uploads on the first SIGTERM, records the rest as
# pending and exits 130; give it a grace period (docker stop -t 60, Kubernetes
# terminationGracePeriodSeconds: 60).
STOPSIGNAL SIGTERM

ENTRYPOINT ["pracsuite-ingest"]
CMD ["run"]
