"""``python -m ferry_local.node``: run the local node against ``$KUBECONFIG`` until SIGTERM.

Settings: ``FERRY_NODE_LOG_DIR`` (engine logs), ``FERRY_NODE_NAME`` (default ``ferry-local``, the
name ``deploy/local/rbac/local-node.yaml`` lets it write: another name needs it there too),
``FERRY_NODE_IMAGES`` (the image catalogue, default ``deploy/local/images.yaml``),
``FERRY_NODE_RESTART_BACKOFF`` (seconds before the
first restart of an exited engine, doubled per restart up to 5 minutes; default 10 as a kubelet),
``FERRY_NODE_ADDRESS_LOCKS`` (the machine-wide directory of pod-address locks), ``FERRY_PROBE_PORT``
(``/readyz`` answers 200 once the node holds its Lease and registered its Node; 0 = a free port).

Exits with status 2 and says why when another live local node of the same name runs against the
cluster (:mod:`ferry_local.node.lease`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from ferry_schemas.runtime.logs import configure_logging
from ferry_schemas.runtime.probes import ProbeServer
from kubernetes_asyncio import client, config

from ferry_local.node.kubelet import LocalNode, NodeSettings
from ferry_local.node.lease import NodeTaken


async def serve(settings: NodeSettings, probe_port: int) -> None:
    await config.load_kube_config()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with client.ApiClient() as api:
        node = LocalNode(api, settings)
        probes = ProbeServer("127.0.0.1", probe_port, ready=lambda: node.ready)
        await probes.start()
        try:
            await node.run(stop)
        finally:
            await probes.stop()


def main() -> None:
    configure_logging(os.environ.get("FERRY_LOG_LEVEL", "INFO"), "ferry-local-node")
    log_dir = Path(os.environ.get("FERRY_NODE_LOG_DIR", "node-logs"))
    node_name = os.environ.get("FERRY_NODE_NAME", "ferry-local")
    backoff = float(os.environ.get("FERRY_NODE_RESTART_BACKOFF", "10"))
    settings = NodeSettings(log_dir=log_dir, node_name=node_name, restart_backoff=backoff)
    try:
        asyncio.run(serve(settings, int(os.environ.get("FERRY_PROBE_PORT", "0"))))
    except NodeTaken as exc:
        logging.getLogger("ferry_local.node").error("refusing to start: %s", exc)
        sys.exit(2)


if __name__ == "__main__":
    main()
