"""Wiring: NATS feed, scraper, listeners (inference, metrics, debug), graceful stop."""

from __future__ import annotations

import asyncio
import gc
import logging

from aiohttp import web
from ferry_schemas.bus import RATE_LIMIT_BUCKET
from ferry_schemas.runtime import ProbeServer
from ferry_schemas.runtime.jetstream import connect, key_value
from nats.aio.client import Client
from nats.aio.msg import Msg

from ferry_router import table_metrics
from ferry_router.app import Router
from ferry_router.auth import JWTAuthenticator, load_auth
from ferry_router.cold_start import ColdStartHold
from ferry_router.debug import build_debug_app
from ferry_router.fairness import USAGE_SUBJECT, Fairness, FairnessSettings
from ferry_router.gateway.mode import GatewayMode
from ferry_router.metrics_scraper import MetricsScraper
from ferry_router.observability import POOL_IDLE, POOL_IN_USE, AccessLog
from ferry_router.proxy import UpstreamClient, UpstreamSettings
from ferry_router.ratelimit import RateLimiter
from ferry_router.scheduler import build_scheduler, load_config
from ferry_router.scheduler.kvcache_aware import KVCacheAware
from ferry_router.session_boost import COMPLETED_SUBJECT, SessionBoost, SessionBoostSettings
from ferry_router.settings import RouterSettings
from ferry_router.state.feed import BusFeed
from ferry_router.state.kv_index import KvFeed
from ferry_router.state.load_reader import LoadFeed
from ferry_router.state.pushed_load import PushedLoad
from ferry_router.state.table import EndpointMetrics, RoutingTable

log = logging.getLogger(__name__)


class RouterService:
    def __init__(self, settings: RouterSettings, nats_url: str) -> None:
        self.settings = settings
        self.nats_url = nats_url
        self.table = RoutingTable()
        self.scheduler = build_scheduler(load_config(settings.config_path))
        self.fairness: Fairness | None = None
        self.session_boost: SessionBoost | None = None
        self.boost_settings = SessionBoostSettings.from_env()
        if self.boost_settings.enabled and FairnessSettings.from_env().enabled:
            raise ValueError("ENABLE_FAIRNESS_SCHEDULING and ENABLE_SESSION_BOOST cannot both be true")
        auth = load_auth(settings.config_path)
        self.authenticator = JWTAuthenticator(auth) if auth.enabled else None
        self.client = UpstreamClient(
            UpstreamSettings(
                connect_timeout=settings.connect_timeout,
                header_timeout=settings.upstream_timeout,
                idle_timeout=settings.idle_timeout,
                max_connections=settings.max_connections,
                max_per_host=settings.max_connections_per_host,
            )
        )
        self.pushed_load: PushedLoad | None = None
        self._scrape_task: asyncio.Task[None] | None = None
        self.scraper = MetricsScraper(
            self.table,
            interval=settings.scrape_interval,
            timeout=settings.scrape_timeout,
            concurrency=settings.scrape_concurrency,
            max_backoff=settings.scrape_max_backoff,
            skip=self._load_pushed,
        )
        self.nc: Client | None = None
        self.feed: BusFeed | None = None
        self.kv_feeds: list[KvFeed] = []
        self.router: Router | None = None
        self.gateway: GatewayMode | None = None
        self._runners: list[web.BaseRunner] = []
        self.probes: ProbeServer | None = None
        self.port = settings.port
        self.draining = False
        table_metrics.expose(self.table, settings.metrics_max_endpoints)
        POOL_IN_USE.set_function(lambda: self.client.pool()[0])
        POOL_IDLE.set_function(lambda: self.client.pool()[1])

    async def _follow_load(self) -> None:
        """On the scraper's loop: the load reader process and the pushed-load board."""
        self.pushed_load = PushedLoad(
            self.table, LoadFeed(self.nats_url, stale_after=self.settings.load_stale)
        )
        await self.pushed_load.start()

    async def _unfollow_load(self) -> None:
        if self.pushed_load is not None:
            await self.pushed_load.stop()

    def _load_pushed(self, metrics: EndpointMetrics) -> float:
        return 0.0 if self.pushed_load is None else self.pushed_load.fresh_for(metrics)

    async def _scrape_once_synced(self) -> None:
        """Engines are scraped once the snapshot is read (not while it is: /readyz first)."""
        assert self.feed is not None
        await self.feed.wait_synced()
        await self.scraper.begin()

    def ready(self) -> bool:
        return not self.draining and self.feed is not None and self.feed.synced

    async def drain(self) -> None:
        """Graceful stop: unready at once, keep serving for the drain period, then close the
        listeners and give in-flight requests (streams included) until the drain timeout."""
        s = self.settings
        self.draining = True
        log.info("draining: /readyz unready, still serving for %.1fs", s.drain_period)
        await asyncio.sleep(s.drain_period)
        log.info("draining: listeners closed; in-flight requests have up to %.0fs", s.drain_timeout)
        await self.stop()

    async def start(self) -> None:
        s = self.settings
        self.nc = await connect(self.nats_url, "ferry-router")
        js = self.nc.jetstream()
        fairness_settings = FairnessSettings.from_env()
        if fairness_settings.enabled:
            self.fairness = Fairness(fairness_settings, publish=self.nc.publish)
        elif self.boost_settings.enabled:
            self.session_boost = SessionBoost(self.boost_settings, publish=self.nc.publish)
        kv = await key_value(js, RATE_LIMIT_BUCKET)
        limiter = RateLimiter(kv)
        cold_start = ColdStartHold(
            self.table, self.nc.publish, max_waiting=s.hold_queue, timeout=s.hold_timeout
        )
        self.router = Router(
            self.table,
            self.scheduler,
            limiter,
            self.client,
            AccessLog.from_env(),
            max_body_bytes=s.max_body_bytes,
            ready=self.ready,
            cold_start=cold_start,
            authenticator=self.authenticator,
            fairness=self.fairness,
            session_boost=self.session_boost,
            native_apis=s.native_apis,
        )
        extra = None
        if s.gateway_mode:
            address = s.advertise_address or ("127.0.0.1" if s.host in ("0.0.0.0", "", "::") else s.host)
            self.gateway = GatewayMode(
                self.router, controller_name=s.gateway_controller, host=s.host, main_port=s.port,
                address=address, drain=min(s.drain_timeout, 5.0), reuse_port=s.workers > 1,
            )  # fmt: skip
            extra = self.gateway.appliers()
        self.feed = BusFeed(js, self.table, stream=s.objects_stream, extra=extra)
        if self.fairness is not None:
            fairness = self.fairness

            async def on_usage(msg: Msg) -> None:
                fairness.on_usage_message(msg.data)

            await self.nc.subscribe(USAGE_SUBJECT, cb=on_usage)
        if self.session_boost is not None:
            boost = self.session_boost

            async def on_completed(msg: Msg) -> None:
                boost.on_completed_message(msg.data)

            await self.nc.subscribe(COMPLETED_SUBJECT, cb=on_completed)
        if self.authenticator is not None:
            await self.authenticator.start()
        await self.client.start()
        await self.scraper.start(scrape=False)
        await self.scraper.call(self._follow_load())
        await self.feed.start()
        self._scrape_task = asyncio.create_task(self._scrape_once_synced(), name="router-scrape-start")
        for plugin in self.scheduler.plugins:  # only when kvcache-aware is configured
            if isinstance(plugin, KVCacheAware):
                kv_feed = KvFeed(js, plugin.index)
                await kv_feed.start()
                self.kv_feeds.append(kv_feed)
        self.probes = ProbeServer(s.metrics_host, s.metrics_port, ready=self.ready, render_in_thread=True)
        await self.probes.start()
        main = (
            self.router.build_server(catch_all=self.gateway.main_handler())
            if self.gateway is not None
            else self.router.build_server()
        )
        self.port = await self._serve(
            web.ServerRunner(main, shutdown_timeout=s.drain_timeout), s.host, s.port
        )
        if self.gateway is not None:
            self.gateway.manager.main_port = self.gateway.handler.main_port = self.port
            await self.gateway.start(js)
        if s.debug_port >= 0:
            try:
                debug = web.AppRunner(build_debug_app(self.table), access_log=None)
                await self._serve(debug, "127.0.0.1", s.debug_port)
            except OSError as exc:  # optional: a second replica on the same host must still start
                log.warning("debug listener on 127.0.0.1:%s not started: %s", s.debug_port, exc)
        log.info("router listening on %s:%s (metrics :%s)", s.host, self.port, self.probes.port)

    async def _serve(self, runner: web.BaseRunner, host: str, port: int) -> int:
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(
            runner, host, port, backlog=4096, reuse_address=True, reuse_port=self.settings.workers > 1
        )
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self._scrape_task is not None:
            self._scrape_task.cancel()
        if self.feed is not None:
            await self.feed.stop()
        for kv_feed in self.kv_feeds:
            await kv_feed.stop()
        await self.scheduler.close()
        if self.pushed_load is not None:
            await self.scraper.call(self._unfollow_load())
        await self.scraper.stop()
        for queues in (self.fairness, self.session_boost):
            if queues is not None:
                queues.close()
        if self.authenticator is not None:
            await self.authenticator.stop()
        await self.client.close()
        if self.router is not None:
            await self.router.external.close()
        if self.probes is not None:
            await self.probes.stop()
        if self.nc is not None:
            await self.nc.drain()


async def run(settings: RouterSettings, nats_url: str) -> None:
    import signal

    service = RouterService(settings, nats_url)
    await service.start()
    # what startup built (modules, models, the table) lives as long as the process: out of the
    # collector's way, so an old-generation collection no longer walks it on the request path
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.drain()
    log.info("stopped")
