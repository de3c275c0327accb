"""Gateway mode wiring: the Gateway objects from the bus, InferencePools in the routing table,
listeners per Gateway port, and the listener report for the status service."""

from __future__ import annotations

from ferry_schemas.bus import Resource
from ferry_schemas.gateway.objects import parse_inference_pool, parse_service
from ferry_schemas.gateway.view import GATEWAY_RESOURCES, GatewayWorld
from nats.js import JetStreamContext

from ferry_router.app import Handler, Router
from ferry_router.gateway.handler import GatewayHandler
from ferry_router.gateway.listeners import ListenerManager
from ferry_router.gateway.pools import pool_server, pool_server_key, service_server, service_server_key
from ferry_router.gateway.report import ListenerReporter
from ferry_router.state.feed import Applier


class GatewayMode:
    def __init__(
        self,
        router: Router,
        *,
        controller_name: str,
        host: str,
        main_port: int,
        address: str,
        drain: float,
        reuse_port: bool = False,
    ) -> None:
        self.router = router
        self.world = GatewayWorld(controller_name)
        self.handler = GatewayHandler(router, self.world, main_port)
        self.manager = ListenerManager(
            router,
            self.world,
            self.handler,
            host=host,
            main_port=main_port,
            drain_timeout=drain,
            reuse_port=reuse_port,
        )
        self.address = address
        self.reporter: ListenerReporter | None = None

    def appliers(self) -> dict[str, Applier]:
        """What the bus feed does with each Gateway API resource."""
        out: dict[str, Applier] = {}
        for resource in GATEWAY_RESOURCES:
            out[resource] = self._applier(resource)
        return out

    def _applier(self, resource: str) -> Applier:
        def apply(key: str, obj: dict[str, object] | None) -> None:
            if resource in (Resource.INFERENCE_POOLS, Resource.SERVICES):
                namespace, name = key.split("/", 1)
                pool = resource == Resource.INFERENCE_POOLS
                server = None
                if obj is not None:
                    try:
                        server = (
                            pool_server(parse_inference_pool(obj))
                            if pool
                            else service_server(parse_service(obj))
                        )
                    except (KeyError, TypeError, ValueError):
                        server = None
                group = pool_server_key(namespace, name) if pool else service_server_key(namespace, name)
                self.router.table.set_server(group, server)
            self.world.apply(resource, key, obj)

        return apply

    def main_handler(self) -> Handler:
        """The router's own port: its Gateway listeners, else the plain router."""
        return self.handler.for_port(None, self.router.serve_plain)

    async def start(self, js: JetStreamContext) -> None:
        await self.manager.start()
        self.reporter = ListenerReporter(js, self.manager, self.address)
        await self.reporter.start()

    async def stop(self) -> None:
        if self.reporter is not None:
            await self.reporter.stop()
        await self.manager.stop()
