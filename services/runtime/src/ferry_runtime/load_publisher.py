"""The engine-load publisher: the engine's own ``/metrics`` → ``ferry.load.<ns>.<model>.<pod>``.

Every ``load_interval`` the sidecar reads its engine's Prometheus text on localhost (parsed once
here, :class:`ferry_schemas.load.LoadReader`) and, every ``models_interval``, its ``/v1/models``.
It publishes an :class:`EngineLoad` when what the router schedules on changed, and at least every
``load_heartbeat`` seconds, so an idle engine costs one message per heartbeat and a busy one at
most one per interval. Core NATS publishes (the ``FERRY_LOAD`` stream keeps the last per pod):
losing one is harmless, the next replaces it. An engine that does not answer gets no message;
consumers see its load age and fall back to scraping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import aiohttp
import orjson
from ferry_schemas.load import EngineLoad, LoadReader
from nats.aio.client import Client
from prometheus_client import Counter

from ferry_runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

READS = Counter("ferry_runtime_load_reads_total", "Reads of the engine's metrics.", ["result"])
LOAD_PUBLISHED = Counter("ferry_runtime_load_messages_total", "Engine load messages published.", ["why"])


def served_models(body: bytes) -> tuple[list[str], list[str]]:
    """``/v1/models`` → (every id, the ids that are not LoRA adapters)."""
    data = orjson.loads(body).get("data") or []
    ids = [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    bases = [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m and not m.get("parent")]
    return ids, bases


class LoadPublisher:
    name = "engine-load"

    def __init__(self, settings: RuntimeSettings, nc: Client) -> None:
        self.settings = settings
        self.nc = nc
        self.reader = LoadReader()
        self.epoch = uuid.uuid4().hex[:12]
        self.seq = 0
        self.connected = False
        self.models: tuple[list[str], list[str]] | None = None
        self._models_read = 0.0
        self._last: tuple[object, ...] | None = None
        self._last_sent = 0.0

    def message(self) -> EngineLoad:
        self.seq += 1
        s, r = self.settings, self.reader
        models, bases = self.models if self.models is not None else (None, [])
        return EngineLoad(
            namespace=s.namespace, pod=s.pod, model=s.model, epoch=self.epoch, seq=self.seq,
            sent_at=time.time(), heartbeat=s.load_heartbeat, kv_cache_usage=r.kv_cache_usage,
            waiting=r.waiting, running=r.running, ttft=r.ttft, tpot=r.tpot, series=r.series,
            models=models, base_models=bases,
        )  # fmt: skip

    def due(self, now: float) -> str | None:
        """Why a message is due now (``None``: it is not)."""
        state = (*self.reader.routing(), tuple(self.models[0]) if self.models else None)
        if state != self._last:
            self._last = state
            return "change"
        if now - self._last_sent >= self.settings.load_heartbeat:
            return "heartbeat"
        return None

    async def read(self, session: aiohttp.ClientSession) -> bool:
        base = self.settings.engine_base_url.rstrip("/")
        try:
            async with session.get(base + self.settings.engine_metrics_path) as response:
                response.raise_for_status()
                text = await response.text()
            now = time.monotonic()
            if self.models is None or now - self._models_read >= self.settings.models_interval:
                async with session.get(f"{base}/v1/models") as response:
                    if response.status == 200:
                        self.models = served_models(await response.read())
                        self._models_read = now
        except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError, AttributeError) as exc:
            READS.labels("error").inc()
            log.debug("reading the engine's load failed: %r", exc)
            return False
        self.reader.read(text, series=True)
        READS.labels("ok").inc()
        return True

    async def publish(self, why: str) -> None:
        msg = self.message()
        try:
            await self.nc.publish(msg.subject, msg.to_bytes())
        except Exception as exc:  # NATS away: the next reading goes out when it is back
            log.warning("publishing engine load failed: %r", exc)
            return
        self._last_sent = time.monotonic()
        LOAD_PUBLISHED.labels(why).inc()

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        timeout = aiohttp.ClientTimeout(total=min(s.load_interval, 2.0), connect=0.5)
        log.info(
            "publishing the engine's load every %.1fs (heartbeat %.1fs)", s.load_interval, s.load_heartbeat
        )
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self.connected = True
            while not stop.is_set():
                started = time.monotonic()
                if await self.read(session) and (why := self.due(started)) is not None:
                    await self.publish(why)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), max(s.load_interval - (time.monotonic() - started), 0.0)
                    )
