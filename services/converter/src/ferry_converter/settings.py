"""Converter settings: the shared service settings plus the images it renders into pods."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ferry_schemas.runtime.settings import ServiceSettings, env_int, env_str

from ferry_converter.booster.options import DEFAULT_DOWNLOADER_IMAGE, DEFAULT_RUNTIME_IMAGE, RenderOptions

SERVICE = "converter"


@dataclass(frozen=True)
class ConverterSettings(ServiceSettings):
    """``FERRY_DOWNLOADER_IMAGE`` / ``FERRY_RUNTIME_IMAGE`` override Kthena's default images;
    ``FERRY_RUNTIME_COMMAND`` (e.g. ``ferry-runtime``) gives the runtime container a command, so a
    Ferry image runs Ferry's runtime sidecar with Kthena's flags. ``FERRY_CONVERTER_WORKERS``: owners
    converted at once; ``FERRY_CONVERTER_DURABLE``: the prefix of the durable consumers an earlier
    converter read (deleted at start)."""

    service: str = SERVICE
    downloader_image: str = field(
        default_factory=lambda: env_str("FERRY_DOWNLOADER_IMAGE", DEFAULT_DOWNLOADER_IMAGE)
    )
    runtime_image: str = field(default_factory=lambda: env_str("FERRY_RUNTIME_IMAGE", DEFAULT_RUNTIME_IMAGE))
    runtime_command: tuple[str, ...] = field(
        default_factory=lambda: tuple(shlex.split(env_str("FERRY_RUNTIME_COMMAND", "")))
    )
    durable_prefix: str = field(default_factory=lambda: env_str("FERRY_CONVERTER_DURABLE", "converter"))
    workers: int = field(default_factory=lambda: env_int("FERRY_CONVERTER_WORKERS", 32))
    namespace: str = field(default_factory=lambda: env_str("FERRY_WATCH_NAMESPACE", ""))
    """Only convert owners in this namespace (empty: every namespace)."""

    @property
    def render_options(self) -> RenderOptions:
        return RenderOptions(
            downloader_image=self.downloader_image,
            runtime_image=self.runtime_image,
            runtime_command=self.runtime_command,
        )
