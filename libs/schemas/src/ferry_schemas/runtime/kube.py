"""How a service reaches the API server: in-cluster config in a pod, else ``$KUBECONFIG``."""

from __future__ import annotations

import contextlib
import os

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import client, config
from yarl import URL

READ_BUFFER = 2**21
"""kubernetes_asyncio's read buffer (watch events of large objects exceed aiohttp's default)."""


async def load_api_client() -> client.ApiClient:
    """In-cluster config when running in a pod, otherwise ``$KUBECONFIG`` / ``~/.kube/config``."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return environment_read_once(client.ApiClient())


def environment_read_once(api: client.ApiClient) -> client.ApiClient:
    """Read the proxy environment once, not on every request.

    kubernetes_asyncio's HTTP session trusts the environment, so aiohttp reads ``~/.netrc`` and the
    proxy variables on a worker thread for *every* request: two thread hand-offs per API call, a
    tenth of a status reconcile's CPU. The proxy for the API server's address is resolved here once
    (``HTTPS_PROXY``/``NO_PROXY`` still apply) and the session is replaced by one with the same
    connection pool that does not look again (netrc credentials never applied to an API server,
    which authenticates by token or client certificate).
    """
    rest = api.rest_client
    if not rest.proxy and api.configuration.host:
        with contextlib.suppress(LookupError):
            proxy, proxy_auth = get_env_proxy_for_url(URL(api.configuration.host))
            rest.proxy = str(proxy)
            if proxy_auth is not None:
                rest.proxy_headers = {"Proxy-Authorization": proxy_auth.encode()}
    trusting: aiohttp.ClientSession = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=trusting.connector, trust_env=False, read_bufsize=READ_BUFFER
    )
    trusting.detach()  # the pool now belongs to the new session
    return api
