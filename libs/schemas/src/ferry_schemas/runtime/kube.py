"""How a service reaches the API server: in-cluster config in a pod, else ``$KUBECONFIG``."""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config


async def load_api_client() -> client.ApiClient:
    """In-cluster config when running in a pod, otherwise ``$KUBECONFIG`` / ``~/.kube/config``."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return client.ApiClient()
