# The Pynchy control-plane image: one image, two commands — `pynchy operator` and `pynchy gateway`.
# (The agent pods use another image: agent-image/Dockerfile.)
#
# Build from the repository root:
#   docker build -t localhost/pynchy:0.1.0 .
# The pyinfra deploy (deploys/install.py) builds it on the target host with buildah, nerdctl or
# docker and imports it into k3s's containerd; see docs/install.md.
#
# The pods run it as uid/gid 10001 with a read-only root filesystem; the gateway's SQLite store is
# a volume at /var/lib/pynchy.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# -- build: the locked dependencies and the project, in /opt/venv -----------------------------------
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
WORKDIR /src
# Dependencies first: this layer changes only with the lock file. The project depends on the
# agent runner package (a workspace member), so its metadata comes along.
COPY pyproject.toml uv.lock README.md ./
COPY agent-image/pyproject.toml agent-image/README.md agent-image/
RUN uv sync --frozen --no-dev --package pynchy --no-install-workspace
COPY agent-image/pynchy_agent agent-image/pynchy_agent
COPY operator/pynchy operator/pynchy
RUN uv sync --frozen --no-dev --package pynchy --no-editable \
 && /opt/venv/bin/pynchy --help >/dev/null \
 && /opt/venv/bin/python -c "import pynchy.operator.run, pynchy.gateway.main"

# -- runtime ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 pynchy \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pynchy \
 && mkdir -p /var/lib/pynchy \
 && chown 10001:10001 /var/lib/pynchy
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
ENTRYPOINT ["pynchy"]
CMD ["--help"]
