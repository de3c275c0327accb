# One image for every Ferry process. Pick it with the command:
#   docker run ferry:dev ferry-watcher | ferry-converter | ferry-applier | ferry-status | ferry-router | ...
#   docker run ferry:dev ferry-runtime --pod <pod>.<ns> --model <name>   (the engine pod sidecar)
#   docker run ferry:dev ferry-mock-engine vllm serve my-model --port 8000
#   docker run ferry:dev python -m ferry_local.node          (the local node of docker-compose.yml)
#
# Offline and reproducible: Python packages are installed from a wheelhouse (`--no-index`) holding the
# workspace's own wheels and the exact third-party versions of uv.lock. `make containers` (or
# deploy/compose/wheelhouse.sh .state/wheelhouse) prepares it on the host; without one (a laptop doing
# `docker compose up --build`), the build prepares it itself with uv from PyPI.
#
# BASE_IMAGE is any Debian bookworm: `debian:bookworm-slim` on a laptop, the locally built
# `localhost/ferry-base:bookworm` (debootstrap, Python and openssl included) where no registry is reachable.
ARG BASE_IMAGE=debian:bookworm-slim
ARG KUBECTL_IMAGE=registry.k8s.io/kubectl:v1.35.4

FROM ${KUBECTL_IMAGE} AS kubectl

# ---------------------------------------------------------------- Debian's Python 3.11 (and openssl for the PKI)
FROM ${BASE_IMAGE} AS python
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null || ! command -v openssl >/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv openssl ca-certificates && rm -rf /var/lib/apt/lists/*; \
    fi

# ---------------------------------------------------------------- build: the venv from the wheelhouse
FROM python AS build
# Third-party wheels first: this layer changes only with uv.lock. (The glob matches nothing when no
# wheelhouse was prepared; the lock files keep the COPY valid and the next step builds one.)
COPY uv.lock .state/wheelhouse/third-party* /wheelhouse/third-party/
RUN python3 -m venv /app/.venv \
 && if [ -f /wheelhouse/third-party/requirements.txt ]; then \
      /app/.venv/bin/pip install --quiet --disable-pip-version-check --no-index \
        --find-links /wheelhouse/third-party -r /wheelhouse/third-party/requirements.txt; \
    fi
WORKDIR /src
COPY . /src
RUN if [ ! -f .state/wheelhouse/ferry/requirements.txt ]; then \
      python3 -m venv /tmp/uv && /tmp/uv/bin/pip install --quiet uv \
      && PATH=/tmp/uv/bin:$PATH PIP_DOWNLOAD="/tmp/uv/bin/python -m pip" sh deploy/compose/wheelhouse.sh .state/wheelhouse; \
    fi \
 && /app/.venv/bin/pip install --quiet --disable-pip-version-check --no-index \
      --find-links .state/wheelhouse/third-party --find-links .state/wheelhouse/ferry \
      -r .state/wheelhouse/third-party/requirements.txt -r .state/wheelhouse/ferry/requirements.txt \
 && /app/.venv/bin/python -c "import ferry_watcher, ferry_converter, ferry_applier, ferry_status, ferry_router, ferry_autoscaler, ferry_runtime, ferry_mock_engine, ferry_local"

# ---------------------------------------------------------------- runtime: the venv, kubectl and nothing else
FROM python AS runtime
LABEL org.opencontainers.image.title="ferry" \
      org.opencontainers.image.description="Ferry's services, the mock engine and the local node"
RUN groupadd --system --gid 10001 ferry \
 && useradd --system --uid 10001 --gid ferry --home-dir /app --no-create-home --shell /usr/sbin/nologin ferry
COPY --from=kubectl /bin/kubectl /usr/local/bin/kubectl
COPY --from=build /app/.venv /app/.venv
COPY deploy/local/images.yaml /app/images.yaml
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FERRY_NODE_IMAGES=/app/images.yaml \
    FERRY_PROBE_HOST=0.0.0.0 \
    FERRY_PROBE_PORT=8081
WORKDIR /app
USER 10001:10001
# 8080 router traffic, 8081 probes+metrics (9090 for the router), 8000 mock engine
EXPOSE 8000 8080 8081 9090
CMD ["ferry-router"]
