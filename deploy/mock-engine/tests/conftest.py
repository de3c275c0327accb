"""A factory for real mock engines on 127.0.0.1 (ephemeral ports), stopped after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from ferry_mock_engine import MockEngine, config_from_argv

EngineFactory = Callable[..., Awaitable[MockEngine]]


@pytest.fixture
async def start_engine() -> AsyncIterator[EngineFactory]:
    engines: list[MockEngine] = []

    async def start(*argv: str, env: dict[str, str] | None = None) -> MockEngine:
        config = config_from_argv([*argv, "--host", "127.0.0.1", "--port", "0"], env=env or {})
        engine = MockEngine(config)
        await engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        await engine.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session
