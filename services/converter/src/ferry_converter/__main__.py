"""``ferry-converter``: owner events from FERRY_OBJECTS → desired sets on FERRY_DESIRED."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from ferry_schemas.bus import DESIRED_STREAM, OBJECTS_STREAM
from ferry_schemas.runtime import ProbeServer, setup_tracing
from ferry_schemas.runtime.jetstream import DeadLetterForwarder, connect
from nats.js.errors import NotFoundError

from ferry_converter.latest import stored_generation
from ferry_converter.service import RESOURCES, build_broker, durable_name
from ferry_converter.settings import ConverterSettings

log = logging.getLogger("ferry_converter")


async def amain(settings: ConverterSettings | None = None, stop: asyncio.Event | None = None) -> None:
    settings = settings or ConverterSettings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    provider = setup_tracing("ferry-converter")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    nc = await connect(settings.nats_url, f"ferry-{settings.service}-control")
    js = nc.jetstream()
    broker, _ = build_broker(settings, provider, stored_generation(js))
    started = False

    def ready() -> bool:
        return started and nc.is_connected

    probes = ProbeServer(settings.probe_host, settings.probe_port, ready=ready)
    port = await probes.start()
    log.info("probes on %s:%s", settings.probe_host, port)
    forwarders: list[DeadLetterForwarder] = []
    try:
        while not stop.is_set():  # the watcher declares the streams; wait for them
            try:
                for stream in (OBJECTS_STREAM, DESIRED_STREAM):
                    await js.stream_info(stream)
                break
            except NotFoundError:
                log.info("waiting for %s and %s to be declared", OBJECTS_STREAM, DESIRED_STREAM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        if stop.is_set():
            return
        for resource in RESOURCES:
            forwarder = DeadLetterForwarder(
                nc, js, settings.service, OBJECTS_STREAM, durable_name(settings, resource)
            )
            await forwarder.start()
            forwarders.append(forwarder)
        await broker.start()
        started = True
        log.info("converter consuming %s", ", ".join(RESOURCES))
        await stop.wait()
    finally:
        started = False
        await broker.stop()
        for forwarder in forwarders:
            await forwarder.stop()
        await probes.stop()
        with contextlib.suppress(Exception):
            await nc.drain()
        provider.shutdown()


def main() -> None:
    asyncio.run(amain())


if __name__ == "__main__":
    main()
