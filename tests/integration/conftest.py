"""Module-scoped fixtures of the router integration modules (one definition for all of them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from ferry_schemas.runtime.jetstream import declare_streams

from tests.support.router_world import RouterProcess, World


@pytest.fixture(scope="module")
def world(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(nats_url, tmp_path_factory.mktemp("router-it"))
    try:
        yield w
    finally:
        for process in reversed(w.processes):
            process.stop(timeout=5)


@pytest.fixture(scope="module")
async def bus(world: World) -> AsyncIterator[World]:
    world.nc = await nats.connect(world.nats_url)
    world.js = world.nc.jetstream()
    await declare_streams(world.js)
    try:
        yield world
    finally:
        await world.nc.drain()


@pytest.fixture(scope="module")
def router(bus: World) -> RouterProcess:
    return bus.router()
