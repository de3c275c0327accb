"""The image catalogue decides what the local node can pull."""

from __future__ import annotations

from pathlib import Path

import pytest
from ferry_local.node.images import ImageCatalogue, normalise


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("nginx", "nginx:latest"),
        ("docker.io/library/nginx:1.27", "nginx:1.27"),
        ("localhost:5000/engine", "localhost:5000/engine:latest"),
        ("ghcr.io/x/y@sha256:abc", "ghcr.io/x/y@sha256:abc"),
    ],
)
def test_normalise(image: str, expected: str) -> None:
    assert normalise(image) == expected


def test_the_shipped_catalogue_pulls_engines_and_helpers_but_not_unknown_images() -> None:
    catalogue = ImageCatalogue.load()
    for image in (
        "vllm/vllm-openai:latest",
        "docker.io/vllm/vllm-openai",
        "ghcr.io/llm-d/llm-d-inference-sim:v0.5",
        "ghcr.io/volcano-sh/kthena-engine:vllm-ascend_v0.10.1rc1_mooncake_v0.3.5",
        "ghcr.io/volcano-sh/runtime:latest",
        "lmsysorg/sglang:latest",
    ):
        assert catalogue.has(image), image
    for image in ("vllm/vllm-openai-typo:latest", "registry.invalid/nothing:1", "", "  "):
        assert not catalogue.has(image), image


def test_a_catalogue_file_replaces_the_default(tmp_path: Path) -> None:
    path = tmp_path / "images.yaml"
    path.write_text("images:\n  - mine/*:*\n")
    catalogue = ImageCatalogue.load(path)
    containers = [{"name": "a", "image": "mine/engine:2"}, {"name": "b", "image": "nginx"}]
    assert catalogue.missing(containers) == ["b"]
    path.write_text("images: nginx\n")
    with pytest.raises(ValueError, match="list of image patterns"):
        ImageCatalogue.load(path)
