"""The local node's image catalogue: which images it can "pull" (``deploy/local/images.yaml``).

A kubelet that cannot pull an image leaves the container waiting with ``ErrImagePull`` and, between
retries, ``ImagePullBackOff``; the pod stays Pending and never Ready. The local node does the same
for every image outside its catalogue, so a typo in a manifest shows up here as it would on a cluster.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ferry_local.paths import repo_root

ENV_CATALOGUE = "FERRY_NODE_IMAGES"


def normalise(image: str) -> str:
    """``docker.io/library/nginx`` → ``nginx:latest``; a reference with a digest is kept as it is."""
    ref = image.strip()
    for prefix in ("docker.io/", "index.docker.io/", "library/"):
        ref = ref.removeprefix(prefix)
    if "@" in ref:
        return ref
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


@dataclass(frozen=True)
class ImageCatalogue:
    patterns: tuple[str, ...]

    @classmethod
    def load(cls, path: Path | None = None) -> ImageCatalogue:
        """The catalogue in ``path``, ``$FERRY_NODE_IMAGES`` or ``deploy/local/images.yaml``."""
        path = path or Path(os.environ.get(ENV_CATALOGUE) or repo_root() / "deploy" / "local" / "images.yaml")
        data = yaml.safe_load(path.read_text()) or {}
        images = data.get("images") if isinstance(data, dict) else None
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise ValueError(f"{path}: expected 'images:' with a list of image patterns")
        return cls(tuple(images))

    def has(self, image: str) -> bool:
        ref = normalise(image)
        return bool(image.strip()) and any(fnmatch.fnmatchcase(ref, p) for p in self.patterns)

    def missing(self, containers: Iterable[dict[str, Any]]) -> list[str]:
        """Names of the containers whose image this node cannot pull, in order."""
        return [str(c.get("name", "")) for c in containers if not self.has(str(c.get("image") or ""))]
