"""``python -m ferry_local.node``: run the local node against ``$KUBECONFIG`` until SIGTERM.

Settings: ``FERRY_NODE_LOG_DIR`` (engine logs), ``FERRY_NODE_NAME``, ``FERRY_NODE_IMAGES`` (the image
catalogue, default ``deploy/local/images.yaml``), ``FERRY_NODE_RESTART_BACKOFF`` (seconds before the
first restart of an exited engine, doubled per restart up to 5 minutes; default 10 as a kubelet),
``FERRY_NODE_ADDRESS_LOCKS`` (the machine-wide directory of pod-address locks).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from ferry_schemas.runtime.logs import configure_logging
from kubernetes_asyncio import client, config

from ferry_local.node.kubelet import LocalNode, NodeSettings


async def serve(settings: NodeSettings) -> None:
    await config.load_kube_config()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with client.ApiClient() as api:
        await LocalNode(api, settings).run(stop)


def main() -> None:
    configure_logging(os.environ.get("FERRY_LOG_LEVEL", "INFO"), "ferry-local-node")
    log_dir = Path(os.environ.get("FERRY_NODE_LOG_DIR", "node-logs"))
    node_name = os.environ.get("FERRY_NODE_NAME", "ferry-local")
    backoff = float(os.environ.get("FERRY_NODE_RESTART_BACKOFF", "10"))
    settings = NodeSettings(log_dir=log_dir, node_name=node_name, restart_backoff=backoff)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
