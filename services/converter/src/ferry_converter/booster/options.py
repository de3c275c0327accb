"""Deployment-wide knobs of the conversion (Kthena reads them from a ConfigMap once at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DOWNLOADER_IMAGE = "kthena/downloader:latest"
DEFAULT_RUNTIME_IMAGE = "kthena/runtime:latest"


@dataclass(frozen=True)
class RenderOptions:
    """``runtime_command`` empty keeps Kthena's runtime container byte for byte (golden parity);
    set (with a Ferry ``runtime_image``) it runs Ferry's sidecar, which takes the same flags."""

    downloader_image: str = DEFAULT_DOWNLOADER_IMAGE
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    runtime_command: tuple[str, ...] = ()
