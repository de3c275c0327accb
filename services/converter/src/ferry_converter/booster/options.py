"""Deployment-wide knobs of the conversion (Kthena reads them from a ConfigMap once at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DOWNLOADER_IMAGE = "kthena/downloader:latest"
DEFAULT_RUNTIME_IMAGE = "kthena/runtime:latest"


@dataclass(frozen=True)
class RenderOptions:
    downloader_image: str = DEFAULT_DOWNLOADER_IMAGE
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
