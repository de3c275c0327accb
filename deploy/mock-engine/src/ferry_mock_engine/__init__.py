"""A small vLLM-compatible engine for tests and demos (not a product).

Use it in-process (``MockEngine(config_from_argv([...]))``) or as a process
(``ferry-mock-engine vllm serve <model> --port 8000 …``).
"""

from ferry_mock_engine.cli import argv_from_container, config_from_argv, engine_argv
from ferry_mock_engine.config import Connector, EngineConfig, EngineKind, Role
from ferry_mock_engine.server import MockEngine

__all__ = [
    "Connector",
    "EngineConfig",
    "EngineKind",
    "MockEngine",
    "Role",
    "argv_from_container",
    "config_from_argv",
    "engine_argv",
]
