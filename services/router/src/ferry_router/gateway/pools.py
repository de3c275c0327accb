"""InferencePools (and Service backends) as endpoint groups of the routing table.

A pool is compiled to the same :class:`Server` record a ModelServer becomes (selector, port =
``targetPorts[0]``), under the key ``<ns>/inferencepool:<name>`` (``:`` cannot occur in a
ModelServer name), so pool pods are tracked, scraped and scheduled exactly like a ModelServer's:
the same scheduler plugins pick the endpoint inside the pool, no endpoint-picker extension.
Pools whose pods carry Ferry's prefill/decode role labels are served prefill/decode
disaggregated (the groups of ``modelserving.volcano.sh/group-name``).
"""

from __future__ import annotations

from ferry_schemas.gateway.objects import InferencePool, Service
from ferry_schemas.labels import MS_GROUP_NAME, MS_ROLE

from ferry_router.state.resources import PDGroup, Server

POOL_PREFIX = "inferencepool:"
SERVICE_PREFIX = "service:"
POOL_PD = PDGroup(
    group_key=MS_GROUP_NAME, prefill_labels=((MS_ROLE, "prefill"),), decode_labels=((MS_ROLE, "decode"),)
)


def _group(
    namespace: str, name: str, match_labels: tuple[tuple[str, str], ...], port: int, pd: PDGroup | None
) -> Server:
    return Server(
        namespace=namespace,
        name=name,
        model=None,  # Kthena: the body's model is not rewritten for pools
        engine="vllm",
        match_labels=match_labels,
        pd_group=pd,
        port=port,
        scheme="http",
        timeout=None,
        retry_attempts=None,
        retry_interval=0.0,
        kv_connector=None,
        spec={},
    )


def pool_server_key(namespace: str, name: str) -> str:
    return f"{namespace}/{POOL_PREFIX}{name}"


def pool_server(pool: InferencePool) -> Server | None:
    """The endpoint group of ``pool``; ``None`` when it selects nothing usable (no ports)."""
    if not pool.target_ports or not pool.match_labels:
        return None
    name = f"{POOL_PREFIX}{pool.ref.name}"
    return _group(pool.ref.namespace, name, pool.match_labels, pool.target_ports[0], POOL_PD)


def service_server_key(namespace: str, name: str) -> str:
    return f"{namespace}/{SERVICE_PREFIX}{name}"


def service_server(service: Service) -> Server | None:
    """A Service backend's pods as an endpoint group (the port is chosen per backendRef)."""
    if not service.match_labels or not service.target_ports:
        return None
    name = f"{SERVICE_PREFIX}{service.ref.name}"
    return _group(service.ref.namespace, name, service.match_labels, service.target_ports[0][1], None)
