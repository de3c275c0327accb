"""``ferry-converter``: owner events from FERRY_OBJECTS → desired sets on FERRY_DESIRED."""

from __future__ import annotations

import asyncio
import logging

from ferry_schemas.runtime import ProbeServer, setup_tracing
from ferry_schemas.runtime.lifecycle import configure_logging, run_main, settle_heap, stop_on_signals

from ferry_converter.service import ConverterService
from ferry_converter.settings import ConverterSettings

log = logging.getLogger("ferry_converter")


async def amain(settings: ConverterSettings | None = None, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``): probes first, then the consumers once the streams exist."""
    settings = settings or ConverterSettings()
    configure_logging(settings.log_level, "ferry-converter")
    provider = setup_tracing("ferry-converter")
    settle_heap()
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    service = ConverterService(settings)
    probes = ProbeServer(settings.probe_host, settings.probe_port, ready=service.ready)
    port = await probes.start()
    log.info("probes on %s:%s", settings.probe_host, port)
    try:
        if await service.start(stop):
            await stop.wait()
    finally:
        await service.stop()
        await probes.stop()
        provider.shutdown()


def main() -> None:
    run_main(amain())


if __name__ == "__main__":
    main()
