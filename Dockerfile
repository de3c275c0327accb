# syntax=docker/dockerfile:1.7
# One image for every Ferry process. Pick it with the command:
#   docker run ferry:dev ferry-watcher | ferry-converter | ferry-applier | ferry-status | ferry-router
#   docker run ferry:dev ferry-runtime --pod <pod>.<ns> --model <name>   (the engine pod sidecar)
#   docker run ferry:dev ferry-mock-engine vllm serve my-model --port 8000
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------- build: resolve and install the workspace
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# Third-party dependencies first (a layer that changes only with uv.lock).
COPY pyproject.toml uv.lock ./
COPY libs/schemas/pyproject.toml libs/schemas/
COPY services/watcher/pyproject.toml services/watcher/
COPY services/converter/pyproject.toml services/converter/
COPY services/applier/pyproject.toml services/applier/
COPY services/status/pyproject.toml services/status/
COPY services/router/pyproject.toml services/router/
COPY services/autoscaler/pyproject.toml services/autoscaler/
COPY services/runtime/pyproject.toml services/runtime/
COPY deploy/mock-engine/pyproject.toml deploy/mock-engine/
COPY deploy/local/pyproject.toml deploy/local/
COPY cli/pyproject.toml cli/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace

# Then Ferry's own packages, installed as wheels (not editable) so /src is not needed at run time.
COPY libs/schemas libs/schemas
COPY services services
COPY deploy/mock-engine deploy/mock-engine
COPY deploy/local deploy/local
COPY cli cli
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-package ferry-local \
 && /app/.venv/bin/python -c "import ferry_watcher, ferry_converter, ferry_applier, ferry_status, ferry_router, ferry_autoscaler, ferry_runtime, ferry_mock_engine"

# ---------------------------------------------------------------- runtime: the venv and nothing else
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ferry" \
      org.opencontainers.image.description="Ferry services (watcher, converter, applier, status, router) and the mock engine"
RUN groupadd --system --gid 10001 ferry \
 && useradd --system --uid 10001 --gid ferry --home-dir /app --no-create-home --shell /usr/sbin/nologin ferry
COPY --from=build --chown=root:root /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FERRY_PROBE_HOST=0.0.0.0 \
    FERRY_PROBE_PORT=8081
WORKDIR /app
USER 10001:10001
# 8080 router traffic, 8081 probes+metrics (9090 for the router), 8000 mock engine
EXPOSE 8000 8080 8081 9090
CMD ["ferry-router"]
