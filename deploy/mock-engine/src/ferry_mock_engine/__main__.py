"""``ferry-mock-engine [vllm serve <model> | python -m vllm.entrypoints.openai.api_server] [flags…]``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from ferry_mock_engine.cli import config_from_argv
from ferry_mock_engine.server import MockEngine

log = logging.getLogger("ferry_mock_engine")


async def serve(argv: Sequence[str]) -> None:
    engine = MockEngine(config_from_argv(argv))
    await engine.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await engine.stop()


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(
        level=os.environ.get("FERRY_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(sys.argv[1:] if argv is None else argv))
    except ValueError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
