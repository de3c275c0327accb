"""Fixtures for the tests that run containers: the engine (Docker, or podman set up by the project)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.containers import Compose, ContainerEngine, container_engine, find_compose


@pytest.fixture(scope="session")
def engine() -> Iterator[ContainerEngine]:
    with container_engine() as found:
        yield found


@pytest.fixture(scope="session")
def engine_compose(engine: ContainerEngine, tmp_path_factory: pytest.TempPathFactory) -> Compose:
    return find_compose(engine.env, tmp_path_factory.mktemp("docker-config"))
